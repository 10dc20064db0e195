package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/usage"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// handlerEnv is an API with metrics on a real embedded JetStream log and real views, a
// registry key holding keyreg.verify in acme and a key of acme to verify.
type handlerEnv struct {
	api            *httpapi.API
	caller, secret string
}

func newHandlerEnv(tb testing.TB) handlerEnv {
	tb.Helper()
	e := eventstest.StartEmbedded(tb, tb.TempDir())
	store, err := projections.Open("views", projections.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		tb.Fatal(err)
	}
	proj := projections.NewProjector(store, e.Log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { proj.Run(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done; store.Close() })
	cmds := &commands.Handler{Log: e.Log}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	// Verify records each use, as on a node (the flush, once a minute, is left out).
	js, err := jetstream.New(e.Conn)
	if err != nil {
		tb.Fatal(err)
	}
	tracker, err := usage.Open(wctx, js, usage.Options{Node: "bench"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tracker.Close)
	api := httpapi.New(httpapi.Deps{Commands: cmds, Views: store, Waiter: proj, Log: e.Log, Usage: tracker,
		Metrics: httpapi.NewMetrics(func() float64 { return 0 }), Logger: slog.New(slog.DiscardHandler)})
	if _, err := cmds.CreateWorkspace(wctx, commands.CreateWorkspace{Workspace: "acme", Name: "acme"}); err != nil {
		tb.Fatal(err)
	}
	var last uint64
	key := func(perms ...string) string {
		res, err := cmds.CreateKey(wctx, commands.CreateKey{Workspace: "acme", Name: "k", Permissions: perms, Allowlist: []string{"10.0.0.0/8"}})
		if err != nil {
			tb.Fatal(err)
		}
		last = res.Seq
		return res.Secret
	}
	env := handlerEnv{api: api, caller: key(string(httpapi.PermVerify)), secret: key("users.track")}
	if err := proj.WaitFor(wctx, last); err != nil {
		tb.Fatal(err)
	}
	return env
}

// serve sends one request straight to the API's handler and checks it answers 200.
func (env handlerEnv) serve(tb testing.TB, method, path string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.RemoteAddr = "10.9.9.9:1234"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+env.caller)
	rec := httptest.NewRecorder()
	env.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		tb.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body)
	}
	return rec
}

// BenchmarkHandler serves POST /v1/verify of a valid key and GET /healthz straight from
// the API's handler (no network): the CPU time and allocations each costs the server
// above net/http.
func BenchmarkHandler(b *testing.B) {
	env := newHandlerEnv(b)
	body, _ := json.Marshal(map[string]any{"key": env.secret, "ip": "10.1.2.3", "permission": "users.track"})
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			env.serve(b, http.MethodPost, "/v1/verify", body)
		}
	})
	b.Run("healthz", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			env.serve(b, http.MethodGet, "/healthz", nil)
		}
	})
	// One of each by turns, each timed: both see the same load on a shared machine.
	b.Run("ratio", func(b *testing.B) {
		var tv, th time.Duration
		for i := 0; b.Loop(); i++ {
			t0 := time.Now()
			if i%2 == 0 {
				env.serve(b, http.MethodPost, "/v1/verify", body)
				t1 := time.Now()
				env.serve(b, http.MethodGet, "/healthz", nil)
				tv, th = tv+t1.Sub(t0), th+time.Since(t1)
			} else {
				env.serve(b, http.MethodGet, "/healthz", nil)
				t1 := time.Now()
				env.serve(b, http.MethodPost, "/v1/verify", body)
				th, tv = th+t1.Sub(t0), tv+time.Since(t1)
			}
		}
		b.ReportMetric(float64(tv.Nanoseconds())/float64(b.N), "ns/verify")
		b.ReportMetric(float64(th.Nanoseconds())/float64(b.N), "ns/healthz")
		b.ReportMetric(float64(tv)/float64(th), "verify/healthz")
	})
}
