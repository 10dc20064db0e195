package httpapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
)

// TestWithKeyDigest: a request whose context carries a key's digest (what the web console
// keeps instead of the secret) acts as that key without an Authorization header, with the
// key's permissions, and stops working when the key is revoked; a presented bearer token
// wins over it; without either the API answers 401.
func TestWithKeyDigest(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	store, proj := runViews(t, e.Log)
	api := httpapi.New(httpapi.Deps{Commands: &commands.Handler{Log: e.Log}, Views: store, Waiter: proj, Log: e.Log,
		Logger: slog.New(slog.DiscardHandler)})
	cmds := &commands.Handler{Log: e.Log}
	ctx := context.Background()
	for _, ws := range []string{"acme", "beta"} {
		if _, err := cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}); err != nil {
			t.Fatal(err)
		}
	}
	key, err := cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "reader", Permissions: []string{"keyreg.keys.read"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := cmds.CreateKey(ctx, commands.CreateKey{Workspace: "beta", Name: "reader", Permissions: []string{"keyreg.keys.read"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := proj.WaitFor(waitCtx(t), other.Seq); err != nil {
		t.Fatal(err)
	}
	get := func(path, bearer string, digest *[32]byte) int {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if digest != nil {
			req = req.WithContext(httpapi.WithKeyDigest(req.Context(), *digest))
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec.Code
	}
	d := events.SecretDigest(key.Secret)
	for _, c := range []struct {
		what, path, bearer string
		digest             *[32]byte
		want               int
	}{
		{"the digest reads its workspace's keys", "/v1/workspaces/acme/keys", "", &d, 200},
		{"the digest does not reach another workspace", "/v1/workspaces/beta/keys", "", &d, 404},
		{"a bearer token wins over the digest", "/v1/workspaces/beta/keys", other.Secret, &d, 200},
		{"neither: 401", "/v1/workspaces/acme/keys", "", nil, 401},
	} {
		if got := get(c.path, c.bearer, c.digest); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	rev, err := cmds.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: key.ID, Meta: events.Meta{Reason: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := proj.WaitFor(wctx, rev.Seq); err != nil {
		t.Fatal(err)
	}
	if got := get("/v1/workspaces/acme/keys", "", &d); got != 401 {
		t.Errorf("the digest of a revoked key: %d, want 401", got)
	}
}
