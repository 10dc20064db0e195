package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

// TestOpenAPI checks the generated document is valid OpenAPI 3.1, that every route the
// server serves is in it, and that real responses validate against it.
func TestOpenAPI(t *testing.T) {
	n := startNode(t, "")
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

	var spec struct {
		Paths map[string]map[string]json.RawMessage
	}
	json.Unmarshal(doc, &spec)
	var have []string
	for path, ops := range spec.Paths {
		for m := range ops {
			have = append(have, strings.ToUpper(m)+" "+path)
		}
	}
	sort.Strings(have)
	served := []string{
		"GET /healthz", "GET /readyz", "GET /metrics",
		"POST /v1/workspaces", "GET /v1/workspaces",
		"POST /v1/workspaces/{ws}/keys", "GET /v1/workspaces/{ws}/keys",
		"GET /v1/workspaces/{ws}/keys/{id}", "PATCH /v1/workspaces/{ws}/keys/{id}", "DELETE /v1/workspaces/{ws}/keys/{id}",
		"PUT /v1/workspaces/{ws}/keys/{id}/allowlist", "POST /v1/workspaces/{ws}/keys/{id}/rotate",
		"GET /v1/workspaces/{ws}/keys/{id}/history",
		"POST /v1/workspaces/{ws}/identifiers", "GET /v1/workspaces/{ws}/identifiers",
		"GET /v1/workspaces/{ws}/identifiers/{id}", "PATCH /v1/workspaces/{ws}/identifiers/{id}",
		"DELETE /v1/workspaces/{ws}/identifiers/{id}",
		"POST /v1/verify",
		"GET /v1/workspaces/{ws}/events",
		"POST /v1/admin/replay", "GET /v1/admin/replay",
		"GET /v1/workspaces/{ws}/audit", "GET /v1/workspaces/{ws}/audit/export", "GET /v1/audit/pubkey",
		"GET /v1/permissions", "POST /v1/workspaces/{ws}/permissions",
		"POST /v1/subscribers", "GET /v1/subscribers", "DELETE /v1/subscribers/{name}",
	}
	for _, r := range served {
		if !slices.Contains(have, r) {
			t.Errorf("%s is served but not in the OpenAPI document", r)
		}
	}
	// Nothing else is served: a path outside the document is a 404 problem.
	for _, r := range have {
		if !slices.Contains(served, r) {
			t.Errorf("%s is in the document but not in this test's list: add it", r)
		}
	}

	// Responses of real requests validate against the document.
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
		req, _ := http.NewRequest(method, n.url+path, rd)
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
	}
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	check("GET", "/v1/workspaces/acme/keys", f.writer, nil)
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil)
	check("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{"192.0.2.1"}})
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"/history", f.writer, nil)
	check("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "segment", "name": "s"})
	check("POST", "/v1/verify", f.writer, map[string]any{"key": k.Secret, "ip": "10.1.2.3"})
	check("GET", "/v1/workspaces/acme/keys/01ARZ3NDEKTSV4RRFFQ69G5FAV", f.writer, nil)
	check("GET", "/v1/workspaces/acme/audit?type=created&limit=1", f.writer, nil)
	check("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"?as_of="+fmt.Sprint(k.Key.Version), f.writer, nil)
	check("GET", "/v1/workspaces/acme/keys?as_of=1", f.writer, nil)
	check("GET", "/v1/audit/pubkey", "", nil)
	check("POST", "/v1/workspaces/acme/permissions", f.writer, map[string]any{"name": "reports.weekly", "description": "Weekly reports"})
	check("GET", "/v1/permissions?workspace=acme", f.writer, nil)
	check("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "x", "permissions": []string{"users.trak"}})
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
	var ws struct{ Workspaces []httpapi.Workspace }
	b2.JSON("GET", "/v1/workspaces", root, nil, 200, &ws)
	if len(ws.Workspaces) != 2 {
		t.Fatalf("after restart: %+v", ws.Workspaces)
	}
	if err := b2.StopWith(os.Interrupt); err != nil {
		t.Fatalf("after SIGINT: %v", err)
	}
}
