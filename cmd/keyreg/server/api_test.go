package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
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
// serves, stops cleanly on SIGTERM (exit 0), and keeps its state for the next start.
func TestServeBinary(t *testing.T) {
	bin := keyregBinary(t)
	data := t.TempDir()
	start := func() (*exec.Cmd, *syncBuffer, string) {
		t.Helper()
		var stderr syncBuffer
		cmd := exec.Command(bin, "serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, after, ok := strings.Cut(stderr.String(), "http="); ok {
				addr, _, _ := strings.Cut(after, " ")
				return cmd, &stderr, "http://" + addr
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("the server did not start: %s", stderr.String())
		return nil, nil, ""
	}
	cmd, stderr, url := start()
	out := stderr.String()
	i := strings.Index(out, "kr_")
	if i < 0 {
		t.Fatalf("first start printed no root secret: %s", out)
	}
	root := out[i : i+len("kr_")+49]
	waitReadyURL(t, url)
	req, _ := http.NewRequest("POST", url+"/v1/workspaces", strings.NewReader(`{"id":"acme","name":"Acme"}`))
	req.Header.Set("Authorization", "Bearer "+root)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create workspace over the binary: %v %v", resp, err)
	}
	resp.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "shutting down") {
		t.Fatalf("no clean shutdown logged: %s", stderr.String())
	}

	cmd2, stderr2, url2 := start()
	waitReadyURL(t, url2)
	if strings.Contains(stderr2.String(), "kr_") {
		t.Fatal("a later start printed a secret")
	}
	req, _ = http.NewRequest("GET", url2+"/v1/workspaces", nil)
	req.Header.Set("Authorization", "Bearer "+root)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ws struct{ Workspaces []httpapi.Workspace }
	json.NewDecoder(resp.Body).Decode(&ws)
	resp.Body.Close()
	if len(ws.Workspaces) != 2 {
		t.Fatalf("after restart: %+v", ws.Workspaces)
	}
	cmd2.Process.Signal(os.Interrupt)
	if err := cmd2.Wait(); err != nil {
		t.Fatalf("after SIGINT: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitReadyURL waits until a server's /readyz answers 200: its views have caught up.
func waitReadyURL(t *testing.T, url string) {
	t.Helper()
	for range 1000 {
		if resp, err := http.Get(url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s not ready after 10s", url)
}
