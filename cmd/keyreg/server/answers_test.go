package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

const unknownID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"

// answerProblem is a problem answer with the fields these tests look at.
type answerProblem struct {
	problemBody
	Holder         string `json:"holder"`
	CurrentVersion uint64 `json:"current_version"`
	Limit          int    `json:"limit"`
}

func (n *node) problem(method, path, token string, body any, want int, headers ...string) (answerProblem, map[string][]string) {
	n.t.Helper()
	st, h, b := n.do(method, path, token, body, headers...)
	if st != want {
		n.t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, b)
	}
	var p answerProblem
	if err := json.Unmarshal(b, &p); err != nil {
		n.t.Fatalf("%s %s: not a problem: %s", method, path, b)
	}
	return p, h
}

// TestNotFoundSaysWhat: a 404 names the workspace, key or identifier that was not found,
// for reads, writes and reads of the past alike.
func TestNotFoundSaysWhat(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	keys, ids := "/v1/workspaces/acme/keys/", "/v1/workspaces/acme/identifiers/"
	wantKey := `key "` + unknownID + `" not found in workspace "acme"`
	wantIdent := `identifier "` + unknownID + `" not found in workspace "acme"`
	for _, c := range []struct {
		method, path, token string
		body                any
		want                string
	}{
		{"GET", "/v1/workspaces/nope/keys", n.root, nil, `workspace "nope" not found`},
		{"GET", "/v1/workspaces/nope/identifiers", n.root, nil, `workspace "nope" not found`},
		{"POST", "/v1/workspaces/nope/keys", n.root, map[string]any{"name": "x"}, `workspace "nope" not found`},
		{"GET", "/v1/workspaces/nope/keys", f.writer, nil, `workspace "nope" not found`},
		{"GET", keys + unknownID, f.writer, nil, wantKey},
		{"GET", keys + unknownID + "?as_of=1", f.writer, nil, wantKey},
		{"GET", keys + unknownID + "/history", f.writer, nil, wantKey},
		{"PATCH", keys + unknownID, f.writer, map[string]any{"name": "x"}, wantKey},
		{"PUT", keys + unknownID + "/allowlist", n.root, map[string]any{"allowlist": []string{}}, wantKey},
		{"DELETE", keys + unknownID, f.writer, nil, wantKey},
		{"GET", ids + unknownID, f.writer, nil, wantIdent},
		{"GET", ids + unknownID + "?as_of=1", f.writer, nil, wantIdent},
		{"PATCH", ids + unknownID, f.writer, map[string]any{"name": "x"}, wantIdent},
		{"DELETE", ids + unknownID, f.writer, nil, wantIdent},
	} {
		before := n.lastSeq()
		p, _ := n.problem(c.method, c.path, c.token, c.body, 404)
		if p.Code != "not_found" || p.Detail != c.want {
			t.Errorf("%s %s: %q %q, want detail %q", c.method, c.path, p.Code, p.Detail, c.want)
		}
		if n.lastSeq() != before {
			t.Errorf("%s %s appended events", c.method, c.path)
		}
	}
}

// TestUnknownWorkspaceEveryRoute walks every workspace route of the OpenAPI document and
// calls it, with the root key, for a workspace that does not exist: each answers 404
// naming the workspace (before looking at anything else), and nothing is appended.
func TestUnknownWorkspaceEveryRoute(t *testing.T) {
	n := startNode(t, "")
	st, _, b := n.do("GET", "/openapi.json", "", nil)
	if st != 200 {
		t.Fatalf("GET /openapi.json: %d", st)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	schemas, _ := dig(doc, "components", "schemas").(map[string]any)
	paths, _ := doc["paths"].(map[string]any)
	before := n.lastSeq()
	routes := 0
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		if !strings.Contains(path, "{ws}") {
			continue
		}
		ops := paths[path].(map[string]any)
		for _, method := range slices.Sorted(maps.Keys(ops)) {
			op, ok := ops[method].(map[string]any)
			if !ok || method == "parameters" {
				continue
			}
			routes++
			url := strings.NewReplacer("{ws}", "nope", "{id}", unknownID, "{name}", "nope").Replace(path)
			var body any
			if s, ok := dig(op, "requestBody", "content", "application/json", "schema").(map[string]any); ok {
				body = example(s, schemas)
			}
			st, b := doWithin(t, 10*time.Second, strings.ToUpper(method), n.url+url, n.root, body)
			var p problemBody
			json.Unmarshal(b, &p)
			if st != 404 || p.Detail != `workspace "nope" not found` {
				t.Errorf("%s %s (body %v): %d %s, want 404 workspace \"nope\" not found", strings.ToUpper(method), url, body, st, b)
			}
		}
	}
	if routes < 15 {
		t.Fatalf("only %d workspace routes in the OpenAPI document", routes)
	}
	if after := n.lastSeq(); after != before {
		t.Fatalf("calls for an unknown workspace appended %d events", after-before)
	}
}

// doWithin sends a request that must be answered within d (an event stream that should
// have been refused would otherwise never end).
func doWithin(t *testing.T, d time.Duration, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: d}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, b
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// example returns a small value valid for schema s: its required properties only.
func example(s map[string]any, schemas map[string]any) any {
	if ref, ok := s["$ref"].(string); ok {
		s, _ = schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
	}
	if enum, ok := s["enum"].([]any); ok && len(enum) > 0 {
		return enum[0]
	}
	typ := s["type"]
	if types, ok := typ.([]any); ok && len(types) > 0 {
		typ = types[0]
	}
	switch typ {
	case "object":
		out := map[string]any{}
		props, _ := s["properties"].(map[string]any)
		req, _ := s["required"].([]any)
		for _, r := range req {
			p, _ := props[r.(string)].(map[string]any)
			out[r.(string)] = example(p, schemas)
		}
		return out
	case "array":
		return []any{}
	case "integer", "number":
		if m, ok := s["minimum"].(float64); ok {
			return m
		}
		return 0
	case "boolean":
		return false
	case "string":
		if s["format"] == "date-time" {
			return time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		}
		return "x"
	}
	return nil
}

// TestConflictAnswersSayWhat: name_taken names the identifier holding the name, and 412
// gives the current version (field and ETag), with which the write then succeeds.
func TestConflictAnswersSayWhat(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	ids := "/v1/workspaces/acme/identifiers"
	var holder, other wire.Identifier
	f.json("POST", ids, f.writer, map[string]any{"kind": "segment", "name": "Summer Sale"}, 201, &holder)
	f.json("POST", ids, f.writer, map[string]any{"kind": "segment", "name": "Winter"}, 201, &other)
	before := n.lastSeq()
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", ids, map[string]any{"kind": "segment", "name": "SUMMER sale"}},
		{"PATCH", ids + "/" + other.ID, map[string]any{"name": "summer SALE"}},
	} {
		p, _ := n.problem(c.method, c.path, f.writer, c.body, 409)
		if p.Code != "name_taken" || p.Holder != holder.ID || !strings.Contains(p.Detail, holder.ID) {
			t.Errorf("%s %s: %+v, want name_taken held by %s", c.method, c.path, p, holder.ID)
		}
	}
	if n.lastSeq() != before {
		t.Fatal("refused name changes appended events")
	}

	k := f.createKey(map[string]any{"name": "k"})
	path := "/v1/workspaces/acme/keys/" + k.Key.ID
	var renamed wire.Key
	f.json("PATCH", path, f.writer, map[string]any{"name": "k2"}, 200, &renamed)
	before = n.lastSeq()
	stale := fmt.Sprintf(`"%d"`, k.Key.Version)
	p, h := n.problem("PATCH", path, f.writer, map[string]any{"name": "k3"}, 412, "If-Match", stale)
	current := fmt.Sprintf(`"%d"`, renamed.Version)
	if p.Code != "precondition_failed" || p.CurrentVersion != renamed.Version || h["Etag"][0] != current ||
		!strings.Contains(p.Detail, fmt.Sprint(renamed.Version)) {
		t.Fatalf("stale If-Match: %+v, ETag %v; want current version %d", p, h["Etag"], renamed.Version)
	}
	if n.lastSeq() != before {
		t.Fatal("a refused write appended events")
	}
	f.json("PATCH", path, f.writer, map[string]any{"name": "k3"}, 200, nil, "If-Match", current)

	// The OpenAPI document describes these fields.
	var doc map[string]any
	n.json("GET", "/openapi.json", "", nil, 200, &doc)
	props, _ := dig(doc, "components", "schemas", "Problem", "properties").(map[string]any)
	for _, field := range []string{"holder", "current_version", "limit"} {
		if d, _ := dig(props, field, "description").(string); d == "" {
			t.Errorf("the OpenAPI Problem schema does not describe %q", field)
		}
	}
}

// TestQuotaExceeded runs a server with quotas of 3 keys and 2 identifiers per workspace:
// the creation past each is 409 quota_exceeded naming the limit, and appends nothing;
// revoked keys and retired identifiers still count; another workspace has its own count.
func TestQuotaExceeded(t *testing.T) {
	n := startNode(t, "", func(c *server.Config) { c.MaxKeysPerWorkspace, c.MaxIdentifiersPerWorkspace = 3, 2 })
	f := newFixture(t, n, "acme") // its writer key is the first
	second := f.createKey(map[string]any{"name": "second"})
	f.json("DELETE", "/v1/workspaces/acme/keys/"+second.Key.ID, f.writer, nil, 200, nil)
	f.createKey(map[string]any{"name": "third"})
	ids := "/v1/workspaces/acme/identifiers"
	var first wire.Identifier
	f.json("POST", ids, f.writer, map[string]any{"kind": "segment", "name": "one"}, 201, &first)
	f.json("DELETE", ids+"/"+first.ID, f.writer, nil, 200, nil)
	f.json("POST", ids, f.writer, map[string]any{"kind": "campaign", "name": "two"}, 201, nil)

	for _, c := range []struct {
		path, token string
		body        map[string]any
		limit       int
		what        string
	}{
		{"/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "fourth"}, 3, "3 keys"},
		{"/v1/workspaces/acme/keys", n.root, map[string]any{"name": "fourth"}, 3, "3 keys"},
		{ids, f.writer, map[string]any{"kind": "segment", "name": "three"}, 2, "2 identifiers"},
	} {
		before := n.lastSeq()
		p, _ := n.problem("POST", c.path, c.token, c.body, 409)
		if p.Code != "quota_exceeded" || p.Limit != c.limit || !strings.Contains(p.Detail, `workspace "acme" holds `+c.what) {
			t.Errorf("POST %s past the quota: %+v", c.path, p)
		}
		if after := n.lastSeq(); after != before {
			t.Errorf("POST %s past the quota appended %d events", c.path, after-before)
		}
	}
	// Other workspaces count their own.
	g := newFixture(t, n, "beta")
	g.createKey(map[string]any{"name": "second"})
}

// TestPagesListEveryItemOnce pages through the keys, identifiers (live and as of a
// sequence) and workspaces with small pages: every item comes exactly once, in the
// order of the whole list, and the last page has no next.
func TestPagesListEveryItemOnce(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	for i := range 12 {
		f.createKey(map[string]any{"name": fmt.Sprint("key ", i)})
	}
	kinds := []string{"segment", "campaign", "template"}
	names := []string{"Summer", "summer sale", "Straße", "STRASSE 2", "alpha", "Zeta", "émile", "Émile 2", "b", "B 2", "c"}
	for i, name := range names {
		f.json("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": kinds[i%3], "name": name}, 201, nil)
	}
	for i := range 6 {
		n.json("POST", "/v1/workspaces", n.root, map[string]any{"id": fmt.Sprint("ws-", i), "name": "w"}, 201, nil)
	}
	seq := n.lastSeq()

	type page struct {
		Keys        []wire.Key
		Identifiers []wire.Identifier
		Workspaces  []wire.Workspace
		Next        string
	}
	ids := func(p page) []string {
		var out []string
		for _, k := range p.Keys {
			out = append(out, k.ID)
		}
		for _, s := range p.Identifiers {
			out = append(out, s.ID)
		}
		for _, w := range p.Workspaces {
			out = append(out, w.ID)
		}
		return out
	}
	for _, c := range []struct {
		path  string
		count int
	}{
		{"/v1/workspaces/acme/keys?", 13},
		{"/v1/workspaces/acme/keys?status=active&", 13},
		{fmt.Sprintf("/v1/workspaces/acme/keys?as_of=%d&", seq), 13},
		{"/v1/workspaces/acme/identifiers?", len(names)},
		{"/v1/workspaces/acme/identifiers?kind=segment&", 4},
		{"/v1/workspaces/acme/identifiers?q=s&", 4},
		{fmt.Sprintf("/v1/workspaces/acme/identifiers?as_of=%d&", seq), len(names)},
		{"/v1/workspaces?", 8},
	} {
		var whole page
		n.json("GET", c.path+"limit=1000", n.root, nil, 200, &whole)
		want := ids(whole)
		if len(want) != c.count || whole.Next != "" {
			t.Fatalf("%s: one page of %d items (next %q), want %d", c.path, len(want), whole.Next, c.count)
		}
		for _, size := range []int{1, 3, 5} {
			var got []string
			after, pages := "", 0
			for {
				var p page
				n.json("GET", fmt.Sprintf("%slimit=%d&after=%s", c.path, size, after), n.root, nil, 200, &p)
				pages++
				if len(p.Keys)+len(p.Identifiers)+len(p.Workspaces) > size {
					t.Fatalf("%s: a page of %d items, limit %d", c.path, len(ids(p)), size)
				}
				got = append(got, ids(p)...)
				if p.Next == "" || pages > 100 {
					break
				}
				after = p.Next
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s limit=%d: pages gave %v, want %v", c.path, size, got, want)
			}
		}
	}
	// A key that is not admin sees its own workspace, in pages too.
	var own page
	n.json("GET", "/v1/workspaces?limit=1", f.writer, nil, 200, &own)
	if len(own.Workspaces) != 1 || own.Workspaces[0].ID != "acme" || own.Next != "" {
		t.Fatalf("a workspace key lists %+v", own)
	}
	n.json("GET", "/v1/workspaces?after=acme", f.writer, nil, 200, &own)
	if len(own.Workspaces) != 0 {
		t.Fatalf("after its own workspace, a workspace key lists %+v", own)
	}
}
