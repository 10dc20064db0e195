package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/projections"
)

// sseEnv is an API on a real embedded JetStream log and real views, served over HTTP, with
// workspaces acme and beta, a root key, an acme key with keyreg.events.read ("reader") and
// one without ("keys").
type sseEnv struct {
	t      *testing.T
	log    *natslog.Log
	cmds   *commands.Handler
	proj   *projections.Projector
	api    *httpapi.API
	srv    *httptest.Server
	root   string
	reader string
	keys   string
}

func newSSEEnv(t *testing.T, heartbeat time.Duration) *sseEnv {
	t.Helper()
	e := eventstest.StartEmbedded(t, t.TempDir())
	store, proj := runViews(t, e.Log)
	ctx := context.Background()
	env := &sseEnv{t: t, log: e.Log, cmds: &commands.Handler{Log: e.Log}, proj: proj}
	env.api = httpapi.New(httpapi.Deps{
		Commands: env.cmds, Views: store, Waiter: proj, Log: e.Log,
		Logger: slog.New(slog.DiscardHandler), SSEHeartbeat: heartbeat,
	})
	env.srv = httptest.NewServer(env.api)
	t.Cleanup(env.srv.Close)
	t.Cleanup(env.api.Close) // runs first: open streams end, so srv.Close does not wait

	for _, ws := range []string{"system", "acme", "beta"} {
		env.must(env.cmds.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}))
	}
	env.root = env.key("system", string(httpapi.PermAdmin))
	env.reader = env.key("acme", string(httpapi.PermEventsRead))
	env.keys = env.key("acme", string(httpapi.PermKeysRead))
	return env
}

func (env *sseEnv) must(res commands.Result, err error) commands.Result {
	env.t.Helper()
	if err != nil {
		env.t.Fatal(err)
	}
	if err := env.proj.WaitFor(waitCtx(env.t), res.Seq); err != nil {
		env.t.Fatal(err)
	}
	return res
}

// key creates a key in ws with permissions and returns its secret.
func (env *sseEnv) key(ws string, perms ...string) string {
	env.t.Helper()
	return env.must(env.cmds.CreateKey(context.Background(), commands.CreateKey{Workspace: ws, Name: "k", Permissions: perms})).Secret
}

func (env *sseEnv) client(token string) *client.Client {
	return client.New(env.srv.URL, token, &http.Client{})
}

// workspaceSeqs returns the sequences of ws's events in the log after `after`.
func (env *sseEnv) workspaceSeqs(ws string, after uint64) []uint64 {
	env.t.Helper()
	var seqs []uint64
	if err := env.log.Read(context.Background(), events.WorkspaceFilter(events.Workspace(ws)), after+1, func(r events.Record) error {
		seqs = append(seqs, r.Seq)
		return nil
	}); err != nil {
		env.t.Fatal(err)
	}
	return seqs
}

var errEnough = errors.New("enough")

// waitCtx returns a context that ends after 30 s or with the test, for waits that must
// not hang the test.
func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestEventsResume: a reader that drops the connection every few events and resumes with
// Last-Event-ID, while keys are created and changed in two workspaces, receives every event
// of its workspace exactly once, in order, and none of the other's.
func TestEventsResume(t *testing.T) {
	env := newSSEEnv(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const changes = 60
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range changes {
			ws := []string{"acme", "beta"}[i%2]
			res, err := env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: ws, Name: fmt.Sprint("k", i)})
			if err == nil {
				_, err = env.cmds.UpdateAllowlist(ctx, commands.UpdateAllowlist{Workspace: ws, KeyID: res.ID, Allowlist: []string{"10.0.0.0/8"}})
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()

	c := env.client(env.reader)
	const total = changes + 3 // the writer's 60 events of acme and the 3 before
	var got []uint64
	last := uint64(0)
	for connections := 1; len(got) < total; connections++ {
		n := 0
		err := c.FollowEvents(ctx, "acme", client.EventsOptions{After: &last}, func(ev client.StreamEvent) error {
			e, err := events.Decode(ev.Data)
			if err != nil || e.Workspace() != "acme" || string(e.Type) != ev.Type {
				return fmt.Errorf("event %d: %s %v", ev.Seq, ev.Data, err)
			}
			got = append(got, ev.Seq)
			last = ev.Seq
			if n++; n == 7 || len(got) == total {
				return errEnough // drop the connection
			}
			return nil
		})
		if !errors.Is(err, errEnough) {
			t.Fatalf("connection %d: %v", connections, err)
		}
	}
	wg.Wait()
	want := env.workspaceSeqs("acme", 0)
	if !slices.Equal(got, want) {
		t.Fatalf("received %v\nwant     %v", got, want)
	}
}

func TestEventsFilters(t *testing.T) {
	env := newSSEEnv(t, 0)
	ctx := context.Background()
	start, _ := env.log.LastSeq(ctx)
	k1 := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "one"}))
	k2 := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "two"}))
	env.must(env.cmds.UpdateAllowlist(ctx, commands.UpdateAllowlist{Workspace: "acme", KeyID: k1.ID, Allowlist: []string{"192.0.2.0/24"}}))
	env.must(env.cmds.UpdateAllowlist(ctx, commands.UpdateAllowlist{Workspace: "acme", KeyID: k2.ID, Allowlist: []string{"192.0.2.0/24"}}))
	env.must(env.cmds.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: k1.ID}))
	env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "beta", Name: "three"}))
	end, _ := env.log.LastSeq(ctx)

	collect := func(o client.EventsOptions, n int) []string {
		t.Helper()
		var got []string
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := env.client(env.reader).FollowEvents(c, "acme", o, func(ev client.StreamEvent) error {
			got = append(got, fmt.Sprintf("%d %s", ev.Seq-start, strings.TrimPrefix(ev.Type, "keyreg.key.")))
			if len(got) == n {
				return errEnough
			}
			return nil
		})
		if !errors.Is(err, errEnough) {
			t.Fatalf("%+v: %v after %v", o, err, got)
		}
		return got
	}
	// A last event of acme, after the others.
	env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "last"}))
	for name, c := range map[string]struct {
		o    client.EventsOptions
		want []string
	}{
		"All":       {client.EventsOptions{After: &start}, []string{"1 created.v1", "2 created.v1", "3 allowlist_updated.v1", "4 allowlist_updated.v1", "5 revoked.v1", "7 created.v1"}},
		"Key":       {client.EventsOptions{After: &start, Key: k1.ID}, []string{"1 created.v1", "3 allowlist_updated.v1", "5 revoked.v1"}},
		"Type":      {client.EventsOptions{After: &start, Types: []string{"keyreg.key.allowlist_updated.v1"}}, []string{"3 allowlist_updated.v1", "4 allowlist_updated.v1"}},
		"Types":     {client.EventsOptions{After: &start, Types: []string{"keyreg.key.revoked.v1,keyreg.key.allowlist_updated.v1"}}, []string{"3 allowlist_updated.v1", "4 allowlist_updated.v1", "5 revoked.v1"}},
		"KeyType":   {client.EventsOptions{After: &start, Key: k2.ID, Types: []string{"keyreg.key.allowlist_updated.v1"}}, []string{"4 allowlist_updated.v1"}},
		"AfterSome": {client.EventsOptions{After: &end}, []string{"7 created.v1"}},
	} {
		t.Run(name, func(t *testing.T) {
			if got := collect(c.o, len(c.want)); !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	t.Run("Since", func(t *testing.T) {
		r, err := env.log.Get(ctx, start+4)
		if err != nil {
			t.Fatal(err)
		}
		got := collect(client.EventsOptions{Since: r.Time}, 3)
		if want := []string{"4 allowlist_updated.v1", "5 revoked.v1", "7 created.v1"}; !slices.Equal(got, want) {
			t.Fatalf("since the time of event 4: %v, want %v", got, want)
		}
	})
	t.Run("FromNow", func(t *testing.T) {
		got := make(chan uint64, 1)
		opened := make(chan uint64, 1)
		ended := make(chan error, 1)
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		last, err := env.log.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			ended <- env.client(env.reader).FollowEvents(c, "acme", client.EventsOptions{OnOpen: func(start uint64) { opened <- start }}, func(ev client.StreamEvent) error {
				got <- ev.Seq
				return errEnough
			})
		}()
		start := waitFor(t, c, opened, ended, "the stream to open")
		if start != last+1 {
			t.Fatalf("%s %d from now, want %d (the next sequence)", wire.StartSequenceHeader, start, last+1)
		}
		res := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "later"}))
		if g := waitFor(t, c, got, ended, "the first event"); g != res.Seq {
			t.Fatalf("first event from now: %d, want %d", g, res.Seq)
		}
	})
}

// waitFor returns the value received on ch, failing the test if the stream ends first
// (its error on ended; what the stream's goroutine sent on ch before ending still counts)
// or ctx is done.
func waitFor[T any](t *testing.T, ctx context.Context, ch <-chan T, ended <-chan error, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case err := <-ended:
		select {
		case v := <-ch:
			return v
		default:
		}
		t.Fatalf("waiting for %s: the stream ended: %v", what, err)
	case <-ctx.Done():
		t.Fatalf("waiting for %s: %v", what, ctx.Err())
	}
	panic("unreachable")
}

// TestEventsAfterQuery: `after=N` (the query parameter, not the Last-Event-ID the Go
// client sends) starts with sequence N+1, which Keyreg-Start-Sequence announces; after=0
// starts with the first event; Last-Event-ID overrides after.
func TestEventsAfterQuery(t *testing.T) {
	env := newSSEEnv(t, 0)
	ctx := context.Background()
	a := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "a"})).Seq
	b := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "b"})).Seq
	c := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "c"})).Seq
	if b != a+1 || c != b+1 {
		t.Fatalf("the three keys are not consecutive: %d %d %d", a, b, c)
	}
	first := env.workspaceSeqs("acme", 0)[0]
	for name, tc := range map[string]struct {
		query, lastEventID string
		start, event       uint64
	}{
		"After":            {"?after=" + fmt.Sprint(a), "", b, b},
		"AfterLastButOne":  {"?after=" + fmt.Sprint(b), "", c, c},
		"AfterZero":        {"?after=0", "", 1, first},
		"LastEventIDWins":  {"?after=0", fmt.Sprint(a), b, b},
		"LastEventIDAlone": {"", fmt.Sprint(b), c, c},
	} {
		t.Run(name, func(t *testing.T) {
			start, event := firstStreamEvent(t, env, "/v1/workspaces/acme/events"+tc.query, tc.lastEventID)
			if start != tc.start || event != tc.event {
				t.Fatalf("%s: %s %d, first event %d; want %d, %d", tc.query, wire.StartSequenceHeader, start, event, tc.start, tc.event)
			}
		})
	}
}

// firstStreamEvent opens the event stream at path as the reader and returns its
// Keyreg-Start-Sequence header and the id of the first event it sends (within 10 s).
func firstStreamEvent(t *testing.T, env *sseEnv, path, lastEventID string) (start, event uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+env.reader)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	start, err = strconv.ParseUint(resp.Header.Get(wire.StartSequenceHeader), 10, 64)
	if err != nil {
		t.Fatalf("%s %q: %v", wire.StartSequenceHeader, resp.Header.Get(wire.StartSequenceHeader), err)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n') // ends with ctx at the latest
		if err != nil {
			t.Fatalf("no event: %v", err)
		}
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			event, err = strconv.ParseUint(strings.TrimSpace(id), 10, 64)
			if err != nil {
				t.Fatalf("event id %q: %v", id, err)
			}
			return start, event
		}
	}
}

func TestEventsAccess(t *testing.T) {
	env := newSSEEnv(t, 0)
	get := func(token, path string, header ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", env.srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == 200 {
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			return 200, ""
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for name, c := range map[string]struct {
		token, path string
		header      []string
		status      int
		code        string
	}{
		"NoToken":           {"", "/v1/workspaces/acme/events", nil, 401, "unauthorized"},
		"NoPermission":      {env.keys, "/v1/workspaces/acme/events", nil, 403, "forbidden"},
		"OtherWorkspace":    {env.reader, "/v1/workspaces/beta/events", nil, 404, "not_found"},
		"NoSuchWorkspace":   {env.root, "/v1/workspaces/nope/events", nil, 404, "not_found"},
		"UnknownType":       {env.reader, "/v1/workspaces/acme/events?type=keyreg.key.deleted.v1", nil, 400, "invalid_input"},
		"BadKey":            {env.reader, "/v1/workspaces/acme/events?key=a.>", nil, 400, "invalid_input"},
		"BadAfter":          {env.reader, "/v1/workspaces/acme/events?after=-1", nil, 400, "invalid_input"},
		"BadLastEventID":    {env.reader, "/v1/workspaces/acme/events", []string{"Last-Event-ID", "x"}, 400, "invalid_input"},
		"Reader":            {env.reader, "/v1/workspaces/acme/events", nil, 200, ""},
		"AdminAnyWorkspace": {env.root, "/v1/workspaces/beta/events", nil, 200, ""},
	} {
		t.Run(name, func(t *testing.T) {
			st, body := get(c.token, c.path, c.header...)
			if st != c.status || (c.code != "" && !strings.Contains(body, `"code":"`+c.code+`"`)) {
				t.Fatalf("%d %s, want %d %s", st, body, c.status, c.code)
			}
		})
	}
}

// TestEventsHeartbeatAndClose: an idle stream gets comment lines, and Close ends open
// streams at once, cleanly, as the server does when it shuts down; a stream opened after
// Close ends at once.
func TestEventsHeartbeatAndClose(t *testing.T) {
	env := newSSEEnv(t, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.srv.URL+"/v1/workspaces/acme/events", nil)
	req.Header.Set("Authorization", "Bearer "+env.reader)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	heartbeats := 0
	for heartbeats < 3 {
		line, err := br.ReadString('\n') // ends with ctx at the latest
		if err != nil {
			t.Fatal(err)
		}
		if line == ":\n" {
			heartbeats++
		}
	}

	ended := make(chan error, 1)
	opened := make(chan uint64, 1)
	go func() {
		ended <- env.client(env.reader).FollowEvents(ctx, "acme", client.EventsOptions{OnOpen: func(s uint64) { opened <- s }}, func(client.StreamEvent) error { return nil })
	}()
	waitFor(t, ctx, opened, ended, "the second stream to open")
	env.api.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, client.ErrStreamEnded) {
			t.Fatalf("after Close: %v, want ErrStreamEnded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the stream")
	}
	rest, err := io.ReadAll(br) // ends with ctx at the latest
	if err != nil {
		t.Fatalf("the first stream did not end cleanly: %v", err)
	}
	if !strings.Contains(string(rest), "shutting down") {
		t.Errorf("no shutdown notice at the end: %q", rest)
	}
	if err := env.client(env.reader).FollowEvents(ctx, "acme", client.EventsOptions{}, func(client.StreamEvent) error { return nil }); !errors.Is(err, client.ErrStreamEnded) {
		t.Fatalf("a stream opened after Close: %v", err)
	}
}

// TestEventsKeyRevoked: a stream ends once the key that opened it is revoked.
func TestEventsKeyRevoked(t *testing.T) {
	env := newSSEEnv(t, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	k := env.must(env.cmds.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: "soon revoked", Permissions: []string{string(httpapi.PermEventsRead)}}))
	ended := make(chan error, 1)
	opened := make(chan struct{})
	go func() {
		ended <- env.client(k.Secret).FollowEvents(ctx, "acme", client.EventsOptions{OnOpen: func(uint64) { close(opened) }}, func(client.StreamEvent) error { return nil })
	}()
	select {
	case <-opened:
	case err := <-ended:
		t.Fatalf("the stream ended before it opened: %v", err)
	case <-ctx.Done():
		t.Fatal("the stream did not open")
	}
	env.must(env.cmds.RevokeKey(ctx, commands.RevokeKey{Workspace: "acme", KeyID: k.ID}))
	select {
	case err := <-ended:
		if !errors.Is(err, client.ErrStreamEnded) {
			t.Fatalf("after the revocation: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a revoked key goes on")
	}
}
