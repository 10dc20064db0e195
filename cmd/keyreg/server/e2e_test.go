package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// fixture is a workspace with a writer key, made through the API by the root key.
type fixture struct {
	*node
	ws     string
	writer string // secret of a key with every workspace permission
}

var allWorkspacePerms = []string{"keyreg.keys.read", "keyreg.keys.write", "keyreg.identifiers.read", "keyreg.identifiers.write", "keyreg.audit.read", "keyreg.verify"}

func newFixture(t testing.TB, n *node, ws string) fixture {
	t.Helper()
	n.json("POST", "/v1/workspaces", n.root, map[string]any{"id": ws, "name": "Workspace " + ws}, 201, nil)
	var k wire.KeyWithSecret
	n.json("POST", "/v1/workspaces/"+ws+"/keys", n.root, map[string]any{"name": "writer", "permissions": allWorkspacePerms}, 201, &k)
	return fixture{node: n, ws: ws, writer: k.Secret}
}

func (f fixture) createKey(body map[string]any) wire.KeyWithSecret {
	f.t.Helper()
	var k wire.KeyWithSecret
	f.json("POST", "/v1/workspaces/"+f.ws+"/keys", f.writer, body, 201, &k)
	return k
}

// verify verifies secret with the fixture's writer key, which holds keyreg.verify.
func (f fixture) verify(secret, ip, perm string) wire.VerifyResponse {
	f.t.Helper()
	var v wire.VerifyResponse
	f.json("POST", "/v1/verify", f.writer, map[string]any{"key": secret, "ip": ip, "permission": perm}, 200, &v)
	return v
}

func TestBootstrap(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	if !strings.HasPrefix(n.root, "kr_") {
		t.Fatalf("bootstrap key file holds %q", n.root)
	}
	if !strings.Contains(n.stderr.String(), n.root) {
		t.Fatal("the first start did not print the root secret")
	}
	var ws struct{ Workspaces []wire.Workspace }
	n.json("GET", "/v1/workspaces", n.root, nil, 200, &ws)
	if len(ws.Workspaces) != 1 || ws.Workspaces[0].ID != "system" {
		t.Fatalf("workspaces after bootstrap: %+v", ws.Workspaces)
	}
	n.stop()
	again := startNode(t, data)
	if again.root != "" || strings.Contains(again.stderr.String(), "kr_") {
		t.Fatalf("a later start printed or wrote a secret: %q", again.stderr.String())
	}
	again.json("GET", "/v1/workspaces", n.root, nil, 200, nil)
}

func TestKeysEndToEnd(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	base := "/v1/workspaces/acme/keys"

	k := f.createKey(map[string]any{"name": "Prod server", "permissions": []string{"users.track", "messages.send"},
		"allowlist": []string{"203.0.113.0/24", "2001:db8::1", "::ffff:198.51.100.7"}})
	if !strings.HasPrefix(k.Secret, "kr_") || k.Key.Status != "active" || k.Key.Name != "Prod server" {
		t.Fatalf("created %+v", k)
	}
	if want := []string{"198.51.100.7/32", "203.0.113.0/24", "2001:db8::1/128"}; !slices.Equal(k.Key.Allowlist, want) {
		t.Fatalf("allowlist %v, want normalized %v", k.Key.Allowlist, want)
	}
	if want := []string{"messages.send", "users.track"}; !slices.Equal(k.Key.Permissions, want) {
		t.Fatalf("permissions %v, want %v", k.Key.Permissions, want)
	}
	id := k.Key.ID

	// Show and list.
	var got wire.Key
	h := f.json("GET", base+"/"+id, f.writer, nil, 200, &got)
	if got.ID != id || h.Get("ETag") != fmt.Sprintf(`"%d"`, got.Version) {
		t.Fatalf("show: %+v etag %s", got, h.Get("ETag"))
	}
	var list struct{ Keys []wire.Key }
	f.json("GET", base, f.writer, nil, 200, &list)
	if len(list.Keys) != 2 { // writer and Prod server
		t.Fatalf("list: %d keys, want 2", len(list.Keys))
	}

	// Verify: every code.
	for _, c := range []struct{ secret, ip, perm, code string }{
		{k.Secret, "203.0.113.9", "users.track", "VALID"},
		{k.Secret, "::ffff:203.0.113.9", "", "VALID"},
		{k.Secret, "2001:db8::1", "messages.send", "VALID"},
		{k.Secret, "192.0.2.1", "users.track", "IP_NOT_ALLOWED"},
		{k.Secret, "203.0.113.9", "users.delete", "PERMISSION_DENIED"},
		{"kr_not-a-key", "203.0.113.9", "", "MALFORMED"},
		{flipLast(k.Secret), "203.0.113.9", "", "MALFORMED"},
	} {
		if v := f.verify(c.secret, c.ip, c.perm); v.Code != c.code || v.Valid != (c.code == "VALID") {
			t.Errorf("verify from %s for %q: %+v, want %s", c.ip, c.perm, v, c.code)
		}
	}

	// Update name and permissions in one PATCH, then clear permissions' effect.
	f.json("PATCH", base+"/"+id, f.writer, map[string]any{"name": "Prod server 2", "permissions": []string{"users.track"}}, 200, &got)
	if got.Name != "Prod server 2" || !slices.Equal(got.Permissions, []string{"users.track"}) {
		t.Fatalf("after patch: %+v", got)
	}
	if v := f.verify(k.Secret, "203.0.113.9", "messages.send"); v.Code != "PERMISSION_DENIED" {
		t.Fatalf("verify after removing messages.send: %s", v.Code)
	}

	// Allowlist: replace, then empty (any address).
	f.json("PUT", base+"/"+id+"/allowlist", f.writer, map[string]any{"allowlist": []string{"192.0.2.0/24"}}, 200, &got)
	if v := f.verify(k.Secret, "192.0.2.1", ""); v.Code != "VALID" {
		t.Fatalf("verify from the new allowlist: %s", v.Code)
	}
	if v := f.verify(k.Secret, "203.0.113.9", ""); v.Code != "IP_NOT_ALLOWED" {
		t.Fatalf("verify from the old allowlist: %s", v.Code)
	}
	f.json("PUT", base+"/"+id+"/allowlist", f.writer, map[string]any{"allowlist": []string{}}, 200, &got)
	if v := f.verify(k.Secret, "8.8.8.8", ""); v.Code != "VALID" || len(got.Allowlist) != 0 {
		t.Fatalf("an empty allowlist must allow any address: %s %v", v.Code, got.Allowlist)
	}

	// Rotate with grace: both secrets work until the grace ends.
	var rot wire.KeyWithSecret
	f.json("POST", base+"/"+id+"/rotate", f.writer, map[string]any{"grace_seconds": 3600}, 200, &rot)
	if rot.Secret == "" || rot.Secret == k.Secret || rot.Key.PreviousSecretValidUntil == nil {
		t.Fatalf("rotate: %+v", rot)
	}
	if v := f.verify(k.Secret, "8.8.8.8", ""); v.Code != "VALID" {
		t.Fatalf("old secret during grace: %s", v.Code)
	}
	if v := f.verify(rot.Secret, "8.8.8.8", ""); v.Code != "VALID" {
		t.Fatalf("new secret: %s", v.Code)
	}
	// Rotate without grace: the previous secret stops at once.
	var rot2 wire.KeyWithSecret
	f.json("POST", base+"/"+id+"/rotate", f.writer, nil, 200, &rot2)
	if v := f.verify(rot.Secret, "8.8.8.8", ""); v.Code != "NOT_FOUND" {
		t.Fatalf("secret rotated out without grace: %s", v.Code)
	}

	// Expiry: set it a moment ahead, then EXPIRED; PATCH null clears it.
	exp := time.Now().Add(1500 * time.Millisecond).UTC()
	f.json("PATCH", base+"/"+id, f.writer, map[string]any{"expires_at": exp}, 200, &got)
	if got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) {
		t.Fatalf("expires_at %v, want %v", got.ExpiresAt, exp)
	}
	time.Sleep(time.Until(exp) + 50*time.Millisecond)
	if v := f.verify(rot2.Secret, "8.8.8.8", ""); v.Code != "EXPIRED" {
		t.Fatalf("verify after expiry: %s", v.Code)
	}
	f.json("GET", base+"?status=expired", f.writer, nil, 200, &list)
	if len(list.Keys) != 1 || list.Keys[0].ID != id {
		t.Fatalf("status=expired lists %+v", list.Keys)
	}
	got = wire.Key{}
	f.json("PATCH", base+"/"+id, f.writer, map[string]any{"expires_at": nil}, 200, &got)
	if got.ExpiresAt != nil || got.Status != "active" {
		t.Fatalf("after clearing the expiry: %+v", got)
	}

	// Revoke: REVOKED, listed as revoked, history kept.
	f.json("DELETE", base+"/"+id, f.writer, nil, 200, &got)
	if got.Status != "revoked" {
		t.Fatalf("after revoke: %s", got.Status)
	}
	if v := f.verify(rot2.Secret, "8.8.8.8", ""); v.Code != "REVOKED" {
		t.Fatalf("verify after revoke: %s", v.Code)
	}
	if v := f.verify("kr_"+strings.Repeat("0", 49), "8.8.8.8", ""); v.Code != "MALFORMED" {
		t.Fatalf("zeros: %s", v.Code)
	}
	f.json("GET", base+"?status=revoked", f.writer, nil, 200, &list)
	if len(list.Keys) != 1 {
		t.Fatalf("status=revoked lists %d keys", len(list.Keys))
	}
	var hist struct {
		Events []wire.HistoryEntry
	}
	f.json("GET", base+"/"+id+"/history", f.writer, nil, 200, &hist)
	var types []string
	for _, e := range hist.Events {
		var ce struct {
			Type  string `json:"type"`
			Actor string `json:"actor"`
		}
		json.Unmarshal(e.Event, &ce)
		types = append(types, strings.TrimSuffix(strings.TrimPrefix(ce.Type, "keyreg.key."), ".v1"))
		if ce.Actor == "" {
			t.Errorf("event %d has no actor", e.Sequence)
		}
	}
	want := []string{"created", "renamed", "permissions_updated", "allowlist_updated", "allowlist_updated",
		"secret_rotated", "secret_rotated", "expiry_changed", "expiry_changed", "revoked"}
	if !slices.Equal(types, want) {
		t.Fatalf("history %v, want %v", types, want)
	}
	// Paging.
	var page struct {
		Events []wire.HistoryEntry
		Next   uint64
	}
	f.json("GET", base+"/"+id+"/history?limit=4", f.writer, nil, 200, &page)
	if len(page.Events) != 4 || page.Next != page.Events[3].Sequence {
		t.Fatalf("page 1: %d events, next %d", len(page.Events), page.Next)
	}
	after := page.Next
	page.Events, page.Next = nil, 0
	f.json("GET", fmt.Sprintf("%s/%s/history?limit=100&after=%d", base, id, after), f.writer, nil, 200, &page)
	if len(page.Events) != 6 || page.Next != 0 {
		t.Fatalf("page 2: %d events, next %d", len(page.Events), page.Next)
	}

	// A revoked key takes no change.
	st, _, b := f.do("PUT", base+"/"+id+"/allowlist", f.writer, map[string]any{"allowlist": []string{}})
	if st != 409 || !strings.Contains(string(b), "key_revoked") {
		t.Fatalf("allowlist of a revoked key: %d %s", st, b)
	}
}

func TestIdentifiersEndToEnd(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	base := "/v1/workspaces/acme/identifiers"
	reg := func(kind, name, platform string) wire.Identifier {
		t.Helper()
		var id wire.Identifier
		f.json("POST", base, f.writer, map[string]any{"kind": kind, "name": name, "platform": platform}, 201, &id)
		return id
	}
	app := reg("app", "iOS app", "ios")
	reg("segment", "Summer Sale buyers", "")
	reg("segment", "Summer newsletter", "")
	winter := reg("segment", "Winter buyers", "")
	reg("campaign", "Summer Sale", "")
	reg("content_card", "Ünïcode card", "")
	if app.Platform != "ios" || app.Kind != "app" || app.Status != "active" {
		t.Fatalf("app %+v", app)
	}

	search := func(query string) []string {
		t.Helper()
		var out struct{ Identifiers []wire.Identifier }
		f.json("GET", base+query, f.writer, nil, 200, &out)
		var names []string
		for _, i := range out.Identifiers {
			names = append(names, i.Kind+":"+i.Name)
		}
		return names
	}
	if got := search("?kind=segment&q=SUMMER"); !slices.Equal(got, []string{"segment:Summer newsletter", "segment:Summer Sale buyers"}) {
		t.Fatalf("segments named summer*: %v", got)
	}
	if got := search("?q=summer%20sale"); len(got) != 2 {
		t.Fatalf("all kinds named summer sale*: %v", got)
	}
	if got := search("?q=%C3%BCn"); !slices.Equal(got, []string{"content_card:Ünïcode card"}) {
		t.Fatalf("unicode prefix: %v", got)
	}
	if got := search(""); len(got) != 6 {
		t.Fatalf("all identifiers: %v", got)
	}

	// Names are unique per kind, ignoring case; the same name in another kind is fine.
	st, _, b := f.do("POST", base, f.writer, map[string]any{"kind": "segment", "name": "WINTER BUYERS"})
	if st != 409 || !strings.Contains(string(b), "name_taken") {
		t.Fatalf("duplicate name: %d %s", st, b)
	}
	reg("campaign", "Winter buyers", "")

	var got wire.Identifier
	f.json("GET", base+"/"+winter.ID, f.writer, nil, 200, &got)
	if got.Name != "Winter buyers" {
		t.Fatalf("show: %+v", got)
	}
	f.json("PATCH", base+"/"+winter.ID, f.writer, map[string]any{"name": "Winter 2026 buyers"}, 200, &got)
	if got.Name != "Winter 2026 buyers" {
		t.Fatalf("rename: %+v", got)
	}
	reg("segment", "Winter buyers", "") // the old name is free again
	f.json("DELETE", base+"/"+winter.ID, f.writer, nil, 200, &got)
	if got.Status != "retired" {
		t.Fatalf("retire: %+v", got)
	}
	if names := search("?kind=segment&q=winter%202026"); len(names) != 0 {
		t.Fatalf("a retired identifier is still listed: %v", names)
	}
	reg("segment", "Winter 2026 buyers", "")
}

func TestWorkspaceIsolation(t *testing.T) {
	n := startNode(t, "")
	a := newFixture(t, n, "alpha")
	b := newFixture(t, n, "beta")
	bk := b.createKey(map[string]any{"name": "beta key"})
	var bid wire.Identifier
	b.json("POST", "/v1/workspaces/beta/identifiers", b.writer, map[string]any{"kind": "segment", "name": "s"}, 201, &bid)
	before := n.lastSeq()
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/workspaces/beta/keys", nil},
		{"GET", "/v1/workspaces/beta/keys/" + bk.Key.ID, nil},
		{"PATCH", "/v1/workspaces/beta/keys/" + bk.Key.ID, map[string]any{"name": "x"}},
		{"PUT", "/v1/workspaces/beta/keys/" + bk.Key.ID + "/allowlist", map[string]any{"allowlist": []string{}}},
		{"POST", "/v1/workspaces/beta/keys/" + bk.Key.ID + "/rotate", nil},
		{"DELETE", "/v1/workspaces/beta/keys/" + bk.Key.ID, nil},
		{"GET", "/v1/workspaces/beta/keys/" + bk.Key.ID + "/history", nil},
		{"POST", "/v1/workspaces/beta/keys", map[string]any{"name": "x"}},
		{"GET", "/v1/workspaces/beta/identifiers", nil},
		{"GET", "/v1/workspaces/beta/identifiers/" + bid.ID, nil},
		{"PATCH", "/v1/workspaces/beta/identifiers/" + bid.ID, map[string]any{"name": "y"}},
		{"DELETE", "/v1/workspaces/beta/identifiers/" + bid.ID, nil},
		{"POST", "/v1/workspaces/beta/identifiers", map[string]any{"kind": "segment", "name": "t"}},
		{"GET", "/v1/workspaces/nonexistent/keys", nil},
		{"GET", "/v1/workspaces/beta/keys/01ARZ3NDEKTSV4RRFFQ69G5FAV", nil},
	} {
		st, _, resp := n.do(c.method, c.path, a.writer, c.body)
		if st != 404 {
			t.Errorf("alpha's key: %s %s = %d %s, want 404", c.method, c.path, st, resp)
		}
		if strings.Contains(string(resp), bk.Key.ID) || strings.Contains(string(resp), "beta key") {
			t.Errorf("%s %s leaked beta's data: %s", c.method, c.path, resp)
		}
	}
	if after := n.lastSeq(); after != before {
		t.Fatalf("refused requests appended %d events", after-before)
	}
	var ws struct{ Workspaces []wire.Workspace }
	n.json("GET", "/v1/workspaces", a.writer, nil, 200, &ws)
	if len(ws.Workspaces) != 1 || ws.Workspaces[0].ID != "alpha" {
		t.Fatalf("alpha's key lists workspaces %+v", ws.Workspaces)
	}
	// A read-only key of alpha may read but not write.
	var ro wire.KeyWithSecret
	a.json("POST", "/v1/workspaces/alpha/keys", a.writer, map[string]any{"name": "ro", "permissions": []string{"keyreg.keys.read"}}, 201, &ro)
	a.json("GET", "/v1/workspaces/alpha/keys", ro.Secret, nil, 200, nil)
	if st, _, _ := a.do("POST", "/v1/workspaces/alpha/keys", ro.Secret, map[string]any{"name": "x"}); st != 403 {
		t.Fatalf("read-only key created a key: %d", st)
	}
	if st, _, _ := a.do("GET", "/v1/workspaces/alpha/identifiers", ro.Secret, nil); st != 403 {
		t.Fatalf("keys-only key listed identifiers: %d", st)
	}
}

func TestIdempotencyKey(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	body := map[string]any{"name": "once", "permissions": []string{"users.track"}}
	st1, h1, b1 := n.do("POST", "/v1/workspaces/acme/keys", f.writer, body, "Idempotency-Key", "create-once-1")
	before := n.lastSeq()
	st2, h2, b2 := n.do("POST", "/v1/workspaces/acme/keys", f.writer, body, "Idempotency-Key", "create-once-1")
	if st1 != 201 || st2 != 201 || string(b1) != string(b2) || h2.Get("Idempotent-Replayed") != "true" || h1.Get("ETag") != h2.Get("ETag") {
		t.Fatalf("replay: %d %s / %d %s", st1, b1, st2, b2)
	}
	if n.lastSeq() != before {
		t.Fatal("a replayed request appended an event")
	}
	st3, _, b3 := n.do("POST", "/v1/workspaces/acme/keys", f.writer, map[string]any{"name": "other"}, "Idempotency-Key", "create-once-1")
	if st3 != 409 || !strings.Contains(string(b3), "idempotency_key_reused") || n.lastSeq() != before {
		t.Fatalf("same key, other body: %d %s", st3, b3)
	}
	concurrentRetries(t, n, f.writer, "/v1/workspaces/acme/keys/"+keyID(t, b1)+"/allowlist", before)
	// After a restart the replay cache is gone; the log still dedupes.
	n.stop()
	n2 := startNode(t, data)
	n2.root = n.root
	before = n2.lastSeq()
	st4, _, b4 := n2.do("POST", "/v1/workspaces/acme/keys", f.writer, body, "Idempotency-Key", "create-once-1")
	if st4 != 201 || n2.lastSeq() != before || keyID(t, b4) != keyID(t, b1) {
		t.Fatalf("retry after restart: %d %s; %d new events", st4, b4, n2.lastSeq()-before)
	}
	if strings.Contains(string(b4), `"secret"`) {
		t.Fatalf("a replay after restart cannot know the secret, yet answered %s", b4)
	}
}

// concurrentRetries sends one PUT with an Idempotency-Key from 8 goroutines at once: one
// event is appended; exactly one request runs it (200, not replayed); each other gets
// either that same answer replayed (200, Idempotent-Replayed: true, the same ETag and
// body) or, while the first still runs, 409 idempotency_key_in_use. A retry after they
// all finish gets the answer replayed. before is the last sequence before the requests.
func concurrentRetries(t *testing.T, n *node, token, path string, before uint64) {
	t.Helper()
	type answer struct {
		status int
		header http.Header
		body   []byte
		err    error
	}
	send := func() answer {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "PUT", n.url+path, strings.NewReader(`{"allowlist":["10.0.0.0/8"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Idempotency-Key", "allow-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return answer{err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header, b, err}
	}
	answers := make([]answer, 8)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = send() })
	}
	wg.Wait()
	if n.lastSeq() != before+1 {
		t.Fatalf("8 concurrent retries appended %d events, want 1", n.lastSeq()-before)
	}
	var first *answer
	busy := 0
	for i, a := range answers {
		switch {
		case a.err != nil:
			t.Fatalf("request %d: %v", i, a.err)
		case a.status == 200 && a.header.Get("Idempotent-Replayed") == "":
			if first != nil {
				t.Fatalf("requests ran twice: %s / %s", first.body, a.body)
			}
			first = &answers[i]
		case a.status == 409:
			if !strings.Contains(string(a.body), `"code":"`+httpapi.CodeIdempotencyBusy+`"`) {
				t.Fatalf("request %d: 409 %s, want %s", i, a.body, httpapi.CodeIdempotencyBusy)
			}
			busy++
		case a.status != 200 || a.header.Get("Idempotent-Replayed") != "true":
			t.Fatalf("request %d: %d %v %s", i, a.status, a.header, a.body)
		}
	}
	if first == nil {
		t.Fatal("no request ran (every 200 says it is replayed)")
	}
	again := send()
	for i, a := range append(answers, again) {
		if a.status == 200 && (string(a.body) != string(first.body) || a.header.Get("ETag") != first.header.Get("ETag")) {
			t.Errorf("answer %d: %s %s, the request's was %s %s", i, a.header.Get("ETag"), a.body, first.header.Get("ETag"), first.body)
		}
	}
	if again.status != 200 || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("a retry after they finished: %d %v %s", again.status, again.header, again.body)
	}
	t.Logf("%d of 8 concurrent retries found the request still running (409)", busy)
}

// flipLast changes a secret's last character, which breaks its checksum.
func flipLast(s string) string {
	last := s[len(s)-1]
	if last == 'a' {
		return s[:len(s)-1] + "b"
	}
	return s[:len(s)-1] + "a"
}

func keyID(t *testing.T, body []byte) string {
	t.Helper()
	var k wire.KeyWithSecret
	if err := json.Unmarshal(body, &k); err != nil || k.Key.ID == "" {
		t.Fatalf("no key in %s", body)
	}
	return k.Key.ID
}

func TestIfMatch(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k"})
	path := "/v1/workspaces/acme/keys/" + k.Key.ID
	etag := fmt.Sprintf(`"%d"`, k.Key.Version)
	var got wire.Key
	h := f.json("PATCH", path, f.writer, map[string]any{"name": "k2"}, 200, &got, "If-Match", etag)
	before := n.lastSeq()
	st, _, b := f.do("PATCH", path, f.writer, map[string]any{"name": "k3"}, "If-Match", etag)
	if st != 412 || !strings.Contains(string(b), "precondition_failed") || n.lastSeq() != before {
		t.Fatalf("stale If-Match: %d %s", st, b)
	}
	for _, m := range []struct {
		method, path string
		body         any
	}{{"PUT", path + "/allowlist", map[string]any{"allowlist": []string{}}}, {"POST", path + "/rotate", nil}, {"DELETE", path, nil}} {
		if st, _, _ := f.do(m.method, m.path, f.writer, m.body, "If-Match", etag); st != 412 {
			t.Errorf("%s with a stale If-Match: %d", m.method, st)
		}
	}
	f.json("DELETE", path, f.writer, nil, 200, &got, "If-Match", h.Get("ETag"))
	if got.Status != "revoked" {
		t.Fatalf("revoke with the current ETag: %+v", got)
	}
}

func TestReadYourWrites(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k"})
	for i := range 50 {
		cidr := fmt.Sprintf("10.%d.0.0/16", i)
		f.json("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{cidr}}, 200, nil)
		var got wire.Key
		f.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, &got)
		if len(got.Allowlist) != 1 || got.Allowlist[0] != cidr {
			t.Fatalf("write %d: GET right after saw %v, want [%s]", i, got.Allowlist, cidr)
		}
		if v := f.verify(k.Secret, fmt.Sprintf("10.%d.1.1", i), ""); v.Code != "VALID" {
			t.Fatalf("write %d: verify right after: %s", i, v.Code)
		}
	}
}

func TestRestartKeepsState(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	var id wire.Identifier
	f.json("POST", "/v1/workspaces/acme/identifiers", f.writer, map[string]any{"kind": "canvas", "name": "Onboarding"}, 201, &id)
	_, _, keysBefore := f.do("GET", "/v1/workspaces/acme/keys", f.writer, nil)
	_, _, idsBefore := f.do("GET", "/v1/workspaces/acme/identifiers", f.writer, nil)
	seq := n.lastSeq()
	n.stop()

	n2 := startNode(t, data)
	if n2.lastSeq() != seq || n2.Store().Checkpoint() != seq {
		t.Fatalf("after restart: stream at %d, views at %d, want %d", n2.lastSeq(), n2.Store().Checkpoint(), seq)
	}
	_, _, keysAfter := n2.do("GET", "/v1/workspaces/acme/keys", f.writer, nil)
	_, _, idsAfter := n2.do("GET", "/v1/workspaces/acme/identifiers", f.writer, nil)
	if string(keysAfter) != string(keysBefore) || string(idsAfter) != string(idsBefore) {
		t.Fatalf("state changed across a restart:\n%s\n%s", keysBefore, keysAfter)
	}
	f2 := fixture{node: n2, ws: "acme", writer: f.writer}
	if v := f2.verify(k.Secret, "10.1.1.1", ""); v.Code != "VALID" {
		t.Fatalf("verify after restart: %s", v.Code)
	}
}

// TestSecretsNeverStored runs a scenario, stops the server, and searches every file
// under the data dir for every secret issued: none may be there.
func TestSecretsNeverStored(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	secrets := []string{n.root, f.writer}
	for i := range 20 {
		k := f.createKey(map[string]any{"name": fmt.Sprintf("k%d", i), "permissions": []string{"users.track"}})
		secrets = append(secrets, k.Secret)
		var rot wire.KeyWithSecret
		f.json("POST", "/v1/workspaces/acme/keys/"+k.Key.ID+"/rotate", f.writer, map[string]any{"grace_seconds": 60}, 200, &rot)
		secrets = append(secrets, rot.Secret)
		f.verify(rot.Secret, "10.0.0.1", "users.track")
	}
	n.stop()
	scanned := 0
	err := filepath.Walk(data, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned += len(b)
		for _, s := range secrets {
			if strings.Contains(string(b), s) || strings.Contains(string(b), s[3:]) {
				t.Errorf("%s holds an issued secret", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned < 10_000 {
		t.Fatalf("scanned only %d bytes: is the data dir right?", scanned)
	}
}
