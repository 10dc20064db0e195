package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestOpenAPI checks the generated document is valid OpenAPI 3.1, and, for every route
// in it (read from the document the server serves, so a new route is checked without
// being listed here): the server serves it (not the 404/405 of an unknown endpoint); it
// refuses a caller without a token (401) unless it is one of the few public routes, which
// answer 200; and at least one real answer of it validates against the document.
func TestOpenAPI(t *testing.T) {
	leakKeys := keysFile(t, newScanner(t, "gh-1"))
	n := startNode(t, "", func(c *server.Config) { c.LeakReportKeysFile = leakKeys })
	st, _, doc := n.do("GET", "/openapi.json", "", nil)
	if st != 200 {
		t.Fatalf("GET /openapi.json: %d", st)
	}
	d, err := libopenapi.NewDocument(doc)
	if err != nil {
		t.Fatal(err)
	}
	if v := d.GetVersion(); v != "3.1.0" {
		t.Fatalf("OpenAPI version %s, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("invalid document: %s: %s", e.Message, e.Reason)
		}
	}

	routes := documentRoutes(t, doc)
	if len(routes) < 30 {
		t.Fatalf("the document has %d routes: %v", len(routes), routes)
	}
	// The routes that answer without a token; every other answers 401 without one.
	public := []string{"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/audit/pubkey"}
	for _, r := range public {
		if !slices.Contains(routes, r) {
			t.Errorf("public route %s is not in the document", r)
		}
	}
	// Responses of real requests validate against the document; every route has one,
	// whose path and body serve as its sample below.
	type sample struct {
		path string
		body any
	}
	samples := map[string]sample{}
	f := newFixture(t, n, "acme")
	check := func(method, path, token string, body any) {
		t.Helper()
		var rd *bytes.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		} else {
			rd = bytes.NewReader(nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, n.url+path, rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if body != nil {
			b, _ := json.Marshal(body)
			req.Body = ioNopCloser(b)
		}
		if ok, errs := v.ValidateHttpRequestResponse(req, resp); !ok {
			for _, e := range errs {
				t.Errorf("%s %s: %s: %s", method, path, e.Message, e.Reason)
			}
		}
		if r := routeOf(routes, method, path); r == "" {
			t.Errorf("%s %s matches no route of the document", method, path)
		} else if _, ok := samples[r]; !ok {
			samples[r] = sample{path, body}
		}
	}
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	other := f.createKey(map[string]any{"name": "other"})
	var id wire.Identifier
	f.json("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "app", "name": "iOS app", "platform": "ios"}, 201, &id)
	check("GET", "/healthz", "", nil)
	check("GET", "/readyz", "", nil)
	check("GET", "/metrics", "", nil)
	check("POST", "/v1/workspaces", n.root, map[string]any{"id": "beta", "name": "Beta"})
	check("GET", "/v1/workspaces", n.root, nil)
	check("GET", "/v1/workspaces/acme/keys", f.writer, nil)
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil)
	check("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{"192.0.2.1"}})
	check("PATCH", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, map[string]any{"name": "renamed"})
	check("POST", "/v1/workspaces/acme/keys/"+k.Key.ID+"/rotate", f.writer, map[string]any{"grace_seconds": 60})
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"/history", f.writer, nil)
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"/usage?days=3", f.writer, nil)
	check("DELETE", "/v1/workspaces/acme/keys/"+other.Key.ID, f.writer, nil)
	check("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "segment", "name": "s"})
	check("GET", "/v1/workspaces/acme/identifiers", f.writer, nil)
	check("GET", "/v1/workspaces/acme/identifiers/"+id.ID, f.writer, nil)
	check("PATCH", "/v1/workspaces/acme/identifiers/"+id.ID, f.writer, map[string]any{"name": "iOS app 2"})
	check("DELETE", "/v1/workspaces/acme/identifiers/"+id.ID, f.writer, nil)
	check("POST", "/v1/verify", f.writer, map[string]any{"key": k.Secret, "ip": "10.1.2.3"})
	check("GET", "/v1/workspaces/acme/keys/01ARZ3NDEKTSV4RRFFQ69G5FAV", f.writer, nil)
	check("GET", "/v1/workspaces/acme/audit?type=created&limit=1", f.writer, nil)
	check("GET", "/v1/workspaces/acme/audit/export?format=csv", f.writer, nil)
	check("GET", "/v1/workspaces/acme/events", f.writer, nil) // 403: the writer may not read events (a stream never ends)
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+fmt.Sprint(k.Key.Version), f.writer, nil)
	check("GET", "/v1/workspaces/acme/keys?as_of=1", f.writer, nil)
	check("GET", "/v1/audit/pubkey", "", nil)
	check("GET", "/v1/audit/checkpoint", f.writer, nil)
	check("DELETE", "/v1/audit/signers/"+strings.Repeat("0", 32), n.root, nil) // 404: no such signer
	check("POST", "/v1/workspaces/acme/permissions", f.writer, map[string]any{"name": "reports.weekly", "description": "Weekly reports"})
	check("GET", "/v1/permissions?workspace=acme", f.writer, nil)
	check("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "x", "permissions": []string{"users.trak"}})
	check("GET", "/v1/admin/replay", n.root, nil)
	check("POST", "/v1/admin/replay", f.writer, nil) // 403: a rebuild is the admin's
	check("GET", "/v1/admin/backup", f.writer, nil)  // 403: a backup is the admin's
	check("POST", "/v1/subscribers", n.root, map[string]any{"name": "billing"})
	check("GET", "/v1/subscribers", n.root, nil)
	check("DELETE", "/v1/subscribers/billing", n.root, nil)
	check("PUT", "/v1/workspaces/acme/leak-response", f.writer, map[string]any{"mode": "report_only"})
	check("GET", "/v1/workspaces/acme/leak-response", f.writer, nil)
	check("POST", "/v1/leaked-keys", "", []any{}) // 401: not signed
	var hook wire.NewWebhook
	f.json("POST", "/v1/workspaces/acme/webhooks", n.root, map[string]any{"url": "https://203.0.113.7/a", "types": []string{"keyreg.identifier.*"}}, 201, &hook)
	check("POST", "/v1/workspaces/acme/webhooks", n.root, map[string]any{"url": "https://203.0.113.7/b", "types": []string{"keyreg.identifier.*"}})
	check("GET", "/v1/workspaces/acme/webhooks", n.root, nil)
	check("GET", "/v1/workspaces/acme/webhooks/"+hook.Webhook.ID, n.root, nil)
	check("GET", "/v1/workspaces/acme/webhooks/"+hook.Webhook.ID+"/deliveries", n.root, nil)
	check("DELETE", "/v1/workspaces/acme/webhooks/"+hook.Webhook.ID, n.root, nil)
	// Each route, sent its sample without a token: served, and 401 unless public.
	for _, r := range routes {
		smp, ok := samples[r]
		if !ok {
			t.Errorf("no real answer of %s is validated against the document: add a check", r)
			continue
		}
		method, _, _ := strings.Cut(r, " ")
		st, _, b := n.do(method, smp.path, "", smp.body)
		var p problemBody
		json.Unmarshal(b, &p)
		switch {
		case st == 405 || (st == 404 && strings.Contains(p.Detail, "no such endpoint")):
			t.Errorf("%s is in the document but not served: %d %s", r, st, b)
		case slices.Contains(public, r):
			if st != 200 {
				t.Errorf("public %s: %d %s", r, st, b)
			}
		case st != 401 || p.Code != "unauthorized":
			t.Errorf("%s without a token: %d %s, want 401 unauthorized (or list it as public)", r, st, b)
		}
	}
}

// documentRoutes returns the routes of an OpenAPI document, "METHOD /path/{param}", sorted.
func documentRoutes(t *testing.T, doc []byte) []string {
	t.Helper()
	var spec struct {
		Paths map[string]map[string]json.RawMessage
	}
	if err := json.Unmarshal(doc, &spec); err != nil {
		t.Fatal(err)
	}
	var routes []string
	for path, ops := range spec.Paths {
		for m := range ops {
			switch m {
			case "get", "put", "post", "delete", "options", "head", "patch", "trace":
				routes = append(routes, strings.ToUpper(m)+" "+path)
			}
		}
	}
	sort.Strings(routes)
	return routes
}

// routeOf returns the route of routes that a request for method and path (its query
// ignored) matches: the one with the most literal segments, or "" if none does.
func routeOf(routes []string, method, path string) string {
	path, _, _ = strings.Cut(path, "?")
	segs := strings.Split(path, "/")
	best, bestLiterals := "", -1
	for _, r := range routes {
		m, tmpl, _ := strings.Cut(r, " ")
		tsegs := strings.Split(tmpl, "/")
		if m != method || len(tsegs) != len(segs) {
			continue
		}
		literals := 0
		for i, ts := range tsegs {
			if strings.HasPrefix(ts, "{") {
				continue
			}
			if ts != segs[i] {
				literals = -1
				break
			}
			literals++
		}
		if literals > bestLiterals {
			best, bestLiterals = r, literals
		}
	}
	return best
}

// TestMetrics: the Prometheus endpoint reports commands, verifies, lag and append
// latency.
func TestMetrics(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k"})
	f.verify(k.Secret, "10.0.0.1", "")
	f.do("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "\x01"})
	_, _, b := n.do("GET", "/metrics", "", nil)
	for _, want := range []string{
		`keyreg_commands_total{command="create_key",outcome="ok"} 2`,
		`keyreg_commands_total{command="create_key",outcome="invalid"} 1`,
		`keyreg_verifies_total{code="VALID"} 1`,
		`keyreg_projector_lag_events 0`,
		`keyreg_append_seconds_count`,
		`keyreg_http_requests_total{method="POST",route="/v1/workspaces/{ws}/keys",status="201"}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestServeBinary builds and runs the real binary: it prints the root secret once,
// serves, stops cleanly on SIGTERM (exit 0), and keeps its state for the next start,
// which stops cleanly on SIGINT.
func TestServeBinary(t *testing.T) {
	data := t.TempDir()
	args := []string{"--nats-listen", "127.0.0.1:0"}
	b := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: data, Seal: true, Args: args})
	out := b.Output.String()
	i := strings.Index(out, "kr_")
	if i < 0 {
		t.Fatalf("first start printed no root secret: %s", out)
	}
	root := out[i : i+len("kr_")+49]
	if root != b.Root {
		t.Fatalf("printed root secret %q, bootstrap key file %q", root, b.Root)
	}
	b.JSON("POST", "/v1/workspaces", root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	if err := b.Stop(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, b.Output.String())
	}
	if !strings.Contains(b.Output.String(), "shutting down") {
		t.Fatalf("no clean shutdown logged: %s", b.Output.String())
	}

	b2 := nodetest.StartBinaryWith(t, nodetest.BinaryOptions{DataDir: data, Root: root, Seal: true, Args: args})
	if strings.Contains(b2.Output.String(), "kr_") {
		t.Fatal("a later start printed a secret")
	}
	var ws struct{ Workspaces []wire.Workspace }
	b2.JSON("GET", "/v1/workspaces", root, nil, 200, &ws)
	if len(ws.Workspaces) != 2 {
		t.Fatalf("after restart: %+v", ws.Workspaces)
	}
	if err := b2.StopWith(os.Interrupt); err != nil {
		t.Fatalf("after SIGINT: %v", err)
	}
}
