package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// aloneEnv is the HTTP layer by itself: httpapi served by httptest, its interfaces
// satisfied by real parts without a keyreg node (cmd/keyreg/server) or a NATS server: the
// command handler and the views on an in-memory log, Pebble on an in-memory file system.
type aloneEnv struct {
	t    *testing.T
	log  *events.MemLog
	cmds *commands.Handler
	proj *projections.Projector
	api  *httpapi.API
	url  string
	root string // a keyreg.admin secret
}

func newAloneEnv(t *testing.T) *aloneEnv {
	t.Helper()
	log := events.NewMemLog()
	store, proj := runViews(t, log)
	ctx := context.Background()
	env := &aloneEnv{t: t, log: log, cmds: &commands.Handler{Log: log}, proj: proj}
	env.api = httpapi.New(httpapi.Deps{
		Commands: env.cmds, Views: store, Waiter: proj, Log: log,
		Audit:  httpapi.AuditDeps{Exporter: replay.Exporter{Log: log, Store: store}},
		Logger: slog.New(slog.DiscardHandler),
	})
	srv := httptest.NewServer(env.api)
	t.Cleanup(srv.Close)
	t.Cleanup(env.api.Close)
	env.url = srv.URL
	for _, ws := range []string{"system", "acme"} {
		env.must(env.cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}))
	}
	env.root = env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "system", Name: "root",
		Permissions: []string{string(httpapi.PermAdmin)}})).Secret
	return env
}

// runViews opens views in memory and runs their projector on log until the test ends.
func runViews(t *testing.T, log events.Reader) (*projections.Store, *projections.Projector) {
	t.Helper()
	store, err := projections.Open("views", projections.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	proj := projections.NewProjector(store, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { proj.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	return store, proj
}

// must waits until the views have applied a command's result.
func (env *aloneEnv) must(res commands.Result, err error) commands.Result {
	env.t.Helper()
	if err != nil {
		env.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.proj.WaitFor(ctx, res.Seq); err != nil {
		env.t.Fatal(err)
	}
	return res
}

// do sends a request with the root key and returns the status, the headers and the body.
func (env *aloneEnv) do(method, path string, body any) (int, http.Header, []byte) {
	env.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			env.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, env.url+path, r)
	if err != nil {
		env.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.root)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		env.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		env.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// get sends a GET and decodes a 200 answer into v.
func (env *aloneEnv) get(path string, v any) http.Header {
	env.t.Helper()
	status, h, body := env.do(http.MethodGet, path, nil)
	if status != http.StatusOK {
		env.t.Fatalf("GET %s: %d %s", path, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		env.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
	return h
}

// TestAloneKeyAsOf drives a key through the HTTP layer alone: created and changed over
// HTTP, then read now and as it was, through the one read path for both.
func TestAloneKeyAsOf(t *testing.T) {
	env := newAloneEnv(t)
	status, h, body := env.do(http.MethodPost, "/v1/workspaces/acme/keys", map[string]any{"name": "shop", "permissions": []string{"users.track"}})
	if status != http.StatusCreated {
		t.Fatalf("create: %d %s", status, body)
	}
	var created wire.KeyWithSecret
	if err := json.Unmarshal(body, &created); err != nil {
		t.Fatal(err)
	}
	id, createdAt := created.Key.ID, created.Key.Version
	if created.Secret == "" || h.Get("ETag") != `"`+strconv.FormatUint(createdAt, 10)+`"` {
		t.Fatalf("create answered secret %q, ETag %q; want a secret and ETag \"%d\"", created.Secret, h.Get("ETag"), createdAt)
	}
	keyPath := "/v1/workspaces/acme/keys/" + id
	if status, _, body := env.do(http.MethodPut, keyPath+"/allowlist", map[string]any{"allowlist": []string{"10.0.0.0/8"}}); status != http.StatusOK {
		t.Fatalf("allowlist: %d %s", status, body)
	}

	var now, then wire.Key
	if h := env.get(keyPath, &now); h.Get("ETag") == "" {
		t.Errorf("GET of the current key has no ETag")
	}
	if len(now.Allowlist) != 1 || now.Allowlist[0] != "10.0.0.0/8" || now.Version <= createdAt {
		t.Errorf("current key: allowlist %v, version %d; want [10.0.0.0/8] after version %d", now.Allowlist, now.Version, createdAt)
	}
	if h := env.get(keyPath+"?as_of="+strconv.FormatUint(createdAt, 10), &then); h.Get("ETag") != "" {
		t.Errorf("GET as_of answered ETag %q: a past version is not the resource's", h.Get("ETag"))
	}
	if len(then.Allowlist) != 0 || then.Version != createdAt || then.Name != "shop" {
		t.Errorf("key as of %d: allowlist %v, version %d, name %q; want no allowlist, version %d, shop", createdAt, then.Allowlist, then.Version, then.Name, createdAt)
	}

	// What does not exist answers 404 not_found, now and as of a moment before it existed:
	// one ErrNotFound from the views and from the log.
	for _, path := range []string{
		"/v1/workspaces/acme/keys/01JDX3NNNNNNNNNNNNNNNNNNNN",
		keyPath + "?as_of=" + strconv.FormatUint(createdAt-1, 10),
		"/v1/workspaces/acme/identifiers/01JDX3NNNNNNNNNNNNNNNNNNNN?as_of=1",
	} {
		status, _, body := env.do(http.MethodGet, path, nil)
		var p wire.Problem
		json.Unmarshal(body, &p)
		if status != http.StatusNotFound || p.Code != httpapi.CodeNotFound {
			t.Errorf("GET %s: %d %s; want 404 not_found", path, status, body)
		}
	}
}

// TestAloneAsOfListsMatchCurrent: listed as of the last stream sequence, keys and
// identifiers answer exactly what the current views answer, page by page and filter by
// filter: the as-of view (the log folded) and the current one (Pebble) answer through one
// interface with the same filters, order and cursors.
func TestAloneAsOfListsMatchCurrent(t *testing.T) {
	env := newAloneEnv(t)
	ctx := context.Background()
	var keyIDs []string
	for i := range 7 {
		res := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: fmt.Sprintf("k%d", i)}))
		keyIDs = append(keyIDs, res.ID)
	}
	for _, id := range []string{keyIDs[1], keyIDs[4], keyIDs[5]} {
		env.must(env.cmds.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: id}))
	}
	for i, name := range []string{"Alpha", "alpine", "Beta", "gamma", "ALPS", "delta", "al"} {
		kind := []string{"segment", "campaign"}[i%2]
		res := env.must(env.cmds.RegisterIdentifier(ctx, commands.RegisterIdentifier{Workspace: "acme", Kind: kind, Name: name}))
		if i == 3 {
			env.must(env.cmds.RetireIdentifier(ctx, commands.RetireIdentifier{Workspace: "acme", IdentifierID: res.ID}))
		}
	}
	last, err := env.log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asOf := strconv.FormatUint(last, 10)

	type page struct {
		Keys        []wire.Key        `json:"keys"`
		Identifiers []wire.Identifier `json:"identifiers"`
		Next        string            `json:"next"`
	}
	// walk lists every page of path with query q, 2 items a page.
	walk := func(path string, q url.Values) (items []string, pages int) {
		t.Helper()
		after := ""
		for pages = 1; ; pages++ {
			q.Set("limit", "2")
			q.Set("after", after)
			var p page
			env.get(path+"?"+q.Encode(), &p)
			for _, k := range p.Keys {
				items = append(items, fmt.Sprintf("%s %s %s v%d", k.ID, k.Name, k.Status, k.Version))
			}
			for _, s := range p.Identifiers {
				items = append(items, fmt.Sprintf("%s %s %s %s v%d", s.ID, s.Kind, s.Name, s.Status, s.Version))
			}
			if after = p.Next; after == "" || pages > 20 {
				return items, pages
			}
		}
	}
	for _, c := range []struct {
		name, path string
		q          url.Values
		want       int
	}{
		{"AllKeys", "/v1/workspaces/acme/keys", url.Values{}, 7},
		{"ActiveKeys", "/v1/workspaces/acme/keys", url.Values{"status": {"active"}}, 4},
		{"RevokedKeys", "/v1/workspaces/acme/keys", url.Values{"status": {"revoked"}}, 3},
		{"AllIdentifiers", "/v1/workspaces/acme/identifiers", url.Values{}, 6},
		{"Segments", "/v1/workspaces/acme/identifiers", url.Values{"kind": {"segment"}}, 4},
		{"PrefixAl", "/v1/workspaces/acme/identifiers", url.Values{"q": {"al"}}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			now, nowPages := walk(c.path, c.q)
			q := url.Values{"as_of": {asOf}}
			for k, v := range c.q {
				q[k] = v
			}
			then, thenPages := walk(c.path, q)
			if len(now) != c.want {
				t.Fatalf("current list has %d items, want %d: %q", len(now), c.want, now)
			}
			if fmt.Sprint(then) != fmt.Sprint(now) || thenPages != nowPages {
				t.Errorf("as of %s, %d pages:\n%q\ncurrent, %d pages:\n%q", asOf, thenPages, then, nowPages, now)
			}
		})
	}
}

// TestAloneStreamsMarked: the operations whose answers stream (event streams, audit
// exports) are marked where they are registered, and only they.
func TestAloneStreamsMarked(t *testing.T) {
	env := newAloneEnv(t)
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{http.MethodGet, "/v1/workspaces/acme/events", true},
		{http.MethodGet, "/v1/workspaces/acme/audit/export", true},
		{http.MethodGet, "/v1/workspaces/acme/audit", false},
		{http.MethodGet, "/v1/workspaces/acme/keys", false},
		{http.MethodGet, "/v1/workspaces/acme/keys/events", false}, // a key named "events"
		{http.MethodPost, "/v1/workspaces/acme/events", false},     // no such operation
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		if got := env.api.IsStream(r); got != c.want {
			t.Errorf("IsStream(%s %s) = %t, want %t", c.method, c.path, got, c.want)
		}
	}
}
