package server_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// FuzzWriteBodies sends arbitrary bodies to every write endpoint of a real node (embedded
// JetStream, Pebble) as the root key. Whatever the body, the answer is never a 5xx; a
// refused body (4xx) is a problem+json and leaves the stream unchanged.
func FuzzWriteBodies(f *testing.F) {
	n := startNode(f, "")
	fx := newFixture(f, n, "acme")
	key := fx.createKey(map[string]any{"name": "fuzzed", "permissions": []string{"users.track"}})
	var ident wire.Identifier
	n.json("POST", "/v1/workspaces/acme/identifiers", n.root, map[string]any{"kind": "segment", "name": "Fuzzed"}, 201, &ident)
	k := "/v1/workspaces/acme/keys/" + key.Key.ID
	routes := []struct{ method, path string }{
		{"POST", "/v1/workspaces"},
		{"POST", "/v1/workspaces/acme/keys"},
		{"PATCH", k},
		{"PUT", k + "/allowlist"},
		{"POST", k + "/rotate"},
		{"POST", "/v1/workspaces/acme/identifiers"},
		{"PATCH", "/v1/workspaces/acme/identifiers/" + ident.ID},
	}
	for i, body := range []string{
		`{"id":"fuzz","name":"Fuzz"}`,
		`{"name":"k2","permissions":["users.track"],"allowlist":["10.0.0.0/8"]}`,
		`{"name":"renamed","expires_at":"2030-01-01T00:00:00Z"}`,
		`{"allowlist":["10.0.0.1","2001:db8::/32"]}`,
		`{"grace_seconds":60}`,
		`{"kind":"app","name":"iOS","platform":"ios"}`,
		`{"name":"Fuzzed 2"}`,
		`{"allowlist":null}`, `{"name":"a","name":"b"}`, `[]`, `null`, `{"name":"\u202e"}`, "{\"name\":\"\xff\"}",
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := routes[int(route)%len(routes)]
		before, err := n.Log.LastSeq(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(r.method, n.url+r.path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+n.root)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %s %q: %d %s", r.method, r.path, body, resp.StatusCode, out)
		}
		if resp.StatusCode < 400 {
			return
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			t.Fatalf("%s %s %q: %d with Content-Type %q", r.method, r.path, body, resp.StatusCode, ct)
		}
		after, err := n.Log.LastSeq(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Fatalf("%s %s %q: refused with %d but the stream moved from %d to %d", r.method, r.path, body, resp.StatusCode, before, after)
		}
	})
}
