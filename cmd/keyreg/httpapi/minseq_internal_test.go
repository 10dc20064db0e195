package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
	"github.com/keyreg/keyreg/projections"
)

// twoNodes are two API nodes on one JetStream stream (an embedded NATS server, a
// connection each), each with its own command handler and its own Pebble views. Node A's
// projector runs; node B's applied the bootstrap and then stopped, so B lags behind every
// later write until the test starts bProj.
type twoNodes struct {
	t      *testing.T
	logA   events.Log
	logB   events.Log
	storeB *projections.Store
	bProj  *projections.Projector // B's waiter, not running until runB
	a      *API
	aURL   string
	root   string
	cancel []func()
}

// newTwoNodes starts the stream, both nodes and an API on each; bWait is the min_seq
// bound of B's API.
func newTwoNodes(t *testing.T, bWait time.Duration) (*twoNodes, *API, string) {
	t.Helper()
	emb := eventstest.StartEmbedded(t, t.TempDir())
	ncB, err := natsserver.ConnectInProcess(emb.Server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncB.Close)
	logB, err := natslog.Open(context.Background(), ncB, natslog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &twoNodes{t: t, logA: emb.Log, logB: logB}
	ctx := context.Background()
	cmdsA := &commands.Handler{Log: n.logA}
	for _, ws := range []string{"system", "acme"} {
		if _, err := cmdsA.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: ws}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cmdsA.CreateKey(ctx, commands.CreateKey{Workspace: "system", Name: "root", Permissions: []string{string(PermAdmin)}})
	if err != nil {
		t.Fatal(err)
	}
	n.root = res.Secret

	storeA, projA := n.views(n.logA)
	n.run(projA)
	n.storeB, _ = n.views(n.logB)
	first := projections.NewProjector(n.storeB, n.logB)
	stop := n.run(first)
	for _, p := range []*projections.Projector{projA, first} {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := p.WaitFor(wctx, res.Seq); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	stop() // B applied the bootstrap, and stops
	n.bProj = projections.NewProjector(n.storeB, n.logB)

	n.a = New(Deps{Commands: cmdsA, Views: storeA, Waiter: projA, Log: n.logA, Logger: slog.New(slog.DiscardHandler)})
	n.aURL = n.serve(n.a)
	b := New(Deps{Commands: &commands.Handler{Log: n.logB}, Views: n.storeB, Waiter: n.bProj, Log: n.logB,
		Logger: slog.New(slog.DiscardHandler), MinSeqWait: bWait})
	return n, b, n.serve(b)
}

func (n *twoNodes) views(log events.Reader) (*projections.Store, *projections.Projector) {
	n.t.Helper()
	store, err := projections.Open("views", projections.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { store.Close() })
	return store, projections.NewProjector(store, log)
}

// run runs p until the test ends or the returned stop.
func (n *twoNodes) run(p *projections.Projector) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	n.t.Cleanup(stop)
	return stop
}

func (n *twoNodes) serve(a *API) string {
	srv := httptest.NewServer(a)
	n.t.Cleanup(srv.Close)
	n.t.Cleanup(a.Close)
	return srv.URL
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request as root; headers come in name, value pairs.
func (n *twoNodes) do(method, url, body string, headers ...string) answer {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		n.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+n.root)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func (n *twoNodes) lastSeq() uint64 {
	n.t.Helper()
	s, err := n.logA.LastSeq(context.Background())
	if err != nil {
		n.t.Fatal(err)
	}
	return s
}

// sequence returns an answer's Keyreg-Sequence, which must be there.
func sequence(t *testing.T, a answer) uint64 {
	t.Helper()
	s, err := strconv.ParseUint(a.header.Get(wire.SequenceHeader), 10, 64)
	if err != nil || s == 0 {
		t.Fatalf("answer %d without %s: %v %s", a.status, wire.SequenceHeader, a.header, a.body)
	}
	return s
}

// TestReadYourWritesAcrossNodes: a write on node A answers with the sequence it reached;
// node B, lagging, answers a read without it from its stale views (404), refuses a read
// with it once the bound passes (503, Retry-After, the problem naming min_seq and the
// applied sequence), and holds a read with it until its views apply the write, which the
// read then sees.
func TestReadYourWritesAcrossNodes(t *testing.T) {
	n, _, bShortURL := newTwoNodes(t, 50*time.Millisecond)
	bLong := New(Deps{Commands: &commands.Handler{Log: n.logB}, Views: n.storeB, Waiter: n.bProj, Log: n.logB,
		Logger: slog.New(slog.DiscardHandler), MinSeqWait: time.Minute})
	bLongURL := n.serve(bLong)

	created := n.do("POST", n.aURL+"/v1/workspaces/acme/keys", `{"name":"ci"}`)
	if created.status != 201 {
		t.Fatalf("create on A: %d %s", created.status, created.body)
	}
	seq := sequence(t, created)
	if last := n.lastSeq(); seq != last {
		t.Fatalf("%s %d, but the write is at %d", wire.SequenceHeader, seq, last)
	}
	var k wire.KeyWithSecret
	json.Unmarshal(created.body, &k)
	path := "/v1/workspaces/acme/keys/" + k.Key.ID

	if r := n.do("GET", bShortURL+path, ""); r.status != 404 {
		t.Fatalf("B lags behind A, yet a read without min_seq found the key: %d %s", r.status, r.body)
	}
	r := n.do("GET", bShortURL+path, "", wire.MinSequenceHeader, uitoa(seq))
	var p wire.Problem
	json.Unmarshal(r.body, &p)
	applied := n.storeB.Checkpoint()
	if r.status != 503 || r.header.Get("Retry-After") == "" || p.Field != wire.MinSequenceHeader || p.Value != uitoa(seq) ||
		p.AppliedSeq != applied || applied >= seq || !strings.Contains(p.Detail, uitoa(applied)) {
		t.Fatalf("a read with min_seq past the bound: %d %v %s (applied %d)", r.status, r.header, r.body, applied)
	}

	got := make(chan answer, 1)
	go func() { got <- n.do("GET", bLongURL+path+"?min_seq="+uitoa(seq), "") }()
	deadline := time.Now().Add(30 * time.Second)
	for bLong.minSeqWaiting.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the read with min_seq never waited")
		}
		time.Sleep(time.Millisecond)
	}
	if n.storeB.Checkpoint() >= seq {
		t.Fatal("B applied the write before the read waited")
	}
	n.run(n.bProj)
	r = <-got
	var read wire.Key
	json.Unmarshal(r.body, &read)
	if r.status != 200 || read.ID != k.Key.ID || read.Version != k.Key.Version {
		t.Fatalf("the read that waited: %d %s, want the key %s at version %d", r.status, r.body, k.Key.ID, k.Key.Version)
	}
}

// TestMinSeqBadValues: min_seq that is not a positive integer is 400 naming the field and
// the value; one beyond the stream's last sequence is 400 at once (it cannot be of this
// stream); verify takes min_seq too, and answers on its fast path when applied.
func TestMinSeqBadValues(t *testing.T) {
	n, _, bURL := newTwoNodes(t, time.Minute)
	path := "/v1/workspaces/acme/keys"
	for name, c := range map[string]struct{ query, header, field, value string }{
		"Zero":         {query: "0", field: wire.MinSequenceQuery, value: "0"},
		"Negative":     {query: "-3", field: wire.MinSequenceQuery, value: "-3"},
		"Word":         {query: "abc", field: wire.MinSequenceQuery, value: "abc"},
		"Empty":        {query: "", field: wire.MinSequenceQuery, value: ""},
		"HeaderWord":   {header: "soon", field: wire.MinSequenceHeader, value: "soon"},
		"HeaderFloat":  {header: "1.5", field: wire.MinSequenceHeader, value: "1.5"},
		"HeaderHuge":   {header: "99999999999999999999999", field: wire.MinSequenceHeader, value: "99999999999999999999999"},
		"BeyondStream": {header: uitoa(n.lastSeq() + 1000), field: wire.MinSequenceHeader, value: uitoa(n.lastSeq() + 1000)},
	} {
		t.Run(name, func(t *testing.T) {
			url := bURL + path
			var h []string
			if c.header != "" {
				h = []string{wire.MinSequenceHeader, c.header}
			} else {
				url += "?min_seq=" + c.query
			}
			r := n.do("GET", url, "", h...)
			var p wire.Problem
			json.Unmarshal(r.body, &p)
			if r.status != 400 || p.Code != CodeInvalid || p.Field != c.field || p.Value != c.value {
				t.Fatalf("%d %s, want 400 naming %s %q", r.status, r.body, c.field, c.value)
			}
		})
	}
	t.Run("Verify", func(t *testing.T) {
		body := `{"key":"kr_nope","ip":"10.0.0.1"}`
		applied := uitoa(n.lastSeq())
		if r := n.do("POST", bURL+"/v1/verify", body, wire.MinSequenceHeader, applied); r.status != 200 {
			t.Fatalf("verify with an applied min_seq: %d %s", r.status, r.body)
		}
		r := n.do("POST", bURL+"/v1/verify?min_seq=x", body)
		var p wire.Problem
		json.Unmarshal(r.body, &p)
		if r.status != 400 || p.Field != wire.MinSequenceQuery {
			t.Fatalf("verify with a bad min_seq: %d %s", r.status, r.body)
		}
	})
}

// TestIdempotentRetryOnAnotherNode: a write retried with the same Idempotency-Key on
// another node (which has no kept answer) changes nothing and answers as the first try
// did: the same status, body (a new key's secret aside: never stored, so absent), ETag
// and Keyreg-Sequence, with Idempotent-Replayed, even after the resource changed since.
func TestIdempotentRetryOnAnotherNode(t *testing.T) {
	n, _, bURL := newTwoNodes(t, time.Minute)
	n.run(n.bProj)
	keys := "/v1/workspaces/acme/keys"
	create := `{"name":"once","permissions":["users.track"]}`
	first := n.do("POST", n.aURL+keys, create, "Idempotency-Key", "k1")
	if first.status != 201 {
		t.Fatalf("create: %d %s", first.status, first.body)
	}
	var k wire.KeyWithSecret
	json.Unmarshal(first.body, &k)
	allow := `{"allowlist":["10.0.0.0/8"]}`
	firstAllow := n.do("PUT", n.aURL+keys+"/"+k.Key.ID+"/allowlist", allow, "Idempotency-Key", "a1")
	ws := `{"id":"beta","name":"Beta"}`
	firstWS := n.do("POST", n.aURL+"/v1/workspaces", ws, "Idempotency-Key", "w1")
	// Changes after the first tries: a retry must not answer with them.
	if r := n.do("PATCH", n.aURL+keys+"/"+k.Key.ID, `{"name":"renamed"}`); r.status != 200 {
		t.Fatalf("rename: %d %s", r.status, r.body)
	}
	if r := n.do("POST", n.aURL+"/v1/workspaces/beta/permissions", `{"name":"reports.weekly","description":"weekly"}`); r.status != 201 {
		t.Fatalf("define permission: %d %s", r.status, r.body)
	}
	before := n.lastSeq()

	for _, c := range []struct {
		name, method, path, body, key string
		first                         answer
	}{
		{"CreateKey", "POST", keys, create, "k1", first},
		{"PutAllowlist", "PUT", keys + "/" + k.Key.ID + "/allowlist", allow, "a1", firstAllow},
		{"CreateWorkspace", "POST", "/v1/workspaces", ws, "w1", firstWS},
	} {
		t.Run(c.name, func(t *testing.T) {
			again := n.do(c.method, bURL+c.path, c.body, "Idempotency-Key", c.key)
			want := c.first.body
			if c.name == "CreateKey" {
				var first wire.KeyWithSecret
				json.Unmarshal(c.first.body, &first)
				first.Secret = ""
				want, _ = json.Marshal(first)
				want = append(want, '\n')
			}
			if again.status != c.first.status || !bytes.Equal(again.body, want) || again.header.Get("Idempotent-Replayed") != "true" ||
				again.header.Get("ETag") != c.first.header.Get("ETag") || sequence(t, again) != sequence(t, c.first) {
				t.Fatalf("the retry on B: %d %v %s\nthe first on A: %d %v %s", again.status, again.header, again.body,
					c.first.status, c.first.header, c.first.body)
			}
			if bytes.Contains(again.body, []byte(k.Secret)) || bytes.Contains(again.body, []byte(`"secret"`)) {
				t.Fatalf("a retry answered from the log shows a secret: %s", again.body)
			}
		})
	}
	if after := n.lastSeq(); after != before {
		t.Fatalf("the retries appended %d events", after-before)
	}
}

// TestOpenAPIDeclaresSequences: the document declares Keyreg-Sequence on the answers of
// writes, and Keyreg-Min-Sequence and min_seq on every GET of /v1 and on verify, not on
// writes.
func TestOpenAPIDeclaresSequences(t *testing.T) {
	doc := New(Deps{}).OpenAPI()
	for path, item := range doc.Paths {
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put, "PATCH": item.Patch, "DELETE": item.Delete} {
			if op == nil {
				continue
			}
			params := map[string]bool{}
			for _, p := range op.Parameters {
				params[p.In+" "+p.Name] = true
			}
			takes := params["header "+wire.MinSequenceHeader] && params["query "+wire.MinSequenceQuery]
			want := method == "GET" && strings.HasPrefix(path, "/v1/") || op.OperationID == "verify"
			if takes != want {
				t.Errorf("%s %s declares min_seq: %t, want %t", method, path, takes, want)
			}
		}
	}
	for _, c := range []struct{ path, method, status string }{
		{"/v1/workspaces/{ws}/keys", "POST", "201"}, {"/v1/workspaces/{ws}/keys/{id}", "PATCH", "200"},
		{"/v1/workspaces/{ws}/keys/{id}", "DELETE", "200"}, {"/v1/workspaces/{ws}/keys/{id}/rotate", "POST", "200"},
		{"/v1/workspaces/{ws}/keys/{id}/allowlist", "PUT", "200"}, {"/v1/workspaces/{ws}/identifiers", "POST", "201"},
		{"/v1/workspaces/{ws}/identifiers/{id}", "PATCH", "200"}, {"/v1/workspaces/{ws}/identifiers/{id}", "DELETE", "200"},
		{"/v1/workspaces", "POST", "201"}, {"/v1/workspaces/{ws}/permissions", "POST", "201"},
	} {
		item := doc.Paths[c.path]
		op := map[string]*huma.Operation{"POST": item.Post, "PUT": item.Put, "PATCH": item.Patch, "DELETE": item.Delete}[c.method]
		if op == nil || op.Responses[c.status] == nil || op.Responses[c.status].Headers[wire.SequenceHeader] == nil {
			t.Errorf("%s %s: %s lacks %s", c.method, c.path, c.status, wire.SequenceHeader)
		}
	}
	if h := doc.Paths["/v1/workspaces/{ws}/keys/{id}"].Get.Responses["200"].Headers; h[wire.SequenceHeader] != nil {
		t.Errorf("GET key declares %s, which only writes send", wire.SequenceHeader)
	}
}
