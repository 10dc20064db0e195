package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// dumpStore lists every key and value of a view store.
func dumpStore(t testing.TB, s *projections.Store) []string {
	t.Helper()
	var out []string
	if err := s.Each(func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitCtx returns a context that ends after 30 s or with the test, for waits that must
// not hang the test.
func waitCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// doNoFatal sends a request with a JSON body (none if empty) and returns the status and
// the answer, or an error: for goroutines other than the test's, which must not call
// t.Fatal (node.do does).
func doNoFatal(n *node, method, path, token, body string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.url+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// TestOnlineRebuild rebuilds the views while 8 clients write and read continuously: no
// request fails, no acknowledged write is lost, every read sees the client's own last
// write, and after the swap the views equal a rebuild from the log.
func TestOnlineRebuild(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	// Some history, so that the rebuild takes a while.
	for i := range 30 {
		f.createKey(map[string]any{"name": fmt.Sprintf("old %d", i), "allowlist": []string{"10.0.0.0/8"}})
	}
	genBefore := currentGen(t, n)

	const clients = 8
	stop := make(chan struct{})
	var failures, writes atomic.Int64
	acked := make([]atomic.Int64, clients) // per client: writes acknowledged
	var wg sync.WaitGroup
	written := make([][]string, clients) // per client: allowlists acknowledged, in order
	keys := make([]wire.KeyWithSecret, clients)
	for c := range clients {
		keys[c] = f.createKey(map[string]any{"name": fmt.Sprintf("client %d", c)})
	}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/v1/workspaces/acme/keys/" + keys[c].Key.ID
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cidr := fmt.Sprintf("10.%d.%d.0/24", c, i%256)
				st, b, err := doNoFatal(n, "PUT", path+"/allowlist", f.writer, `{"allowlist":["`+cidr+`"]}`)
				if err != nil || st != 200 {
					failures.Add(1)
					t.Errorf("client %d write %d: %d %s %v", c, i, st, b, err)
					return
				}
				writes.Add(1)
				written[c] = append(written[c], cidr)
				acked[c].Add(1)
				var k wire.Key
				st, b, err = doNoFatal(n, "GET", path, f.writer, "")
				if err != nil || st != 200 || json.Unmarshal(b, &k) != nil || len(k.Allowlist) != 1 || k.Allowlist[0] != cidr {
					failures.Add(1)
					t.Errorf("client %d read after write %d: %d %s, want allowlist [%s]", c, i, st, b, cidr)
					return
				}
			}
		}()
	}
	// allWrote waits until every client has had a write acknowledged beyond from[c].
	allWrote := func(what string, from []int64) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			done := 0
			for c := range clients {
				if acked[c].Load() > from[c] {
					done++
				}
			}
			if done == clients {
				return
			}
			if failures.Load() != 0 || time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: %d of %d clients wrote (%d failed requests)", what, done, clients, failures.Load())
			}
		}
	}
	allWrote("before the rebuild", make([]int64, clients))
	var st httpapi.ReplayStatus
	n.json("POST", "/v1/admin/replay", n.root, nil, 202, &st)
	if st.State != "building" {
		t.Fatalf("replay started in state %q", st.State)
	}
	if code, _, _ := n.do("POST", "/v1/admin/replay", n.root, nil); code != 409 && code != 202 {
		t.Fatalf("a second replay while one runs: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n.json("GET", "/v1/admin/replay", n.root, nil, 200, &st)
		if st.State == "done" || st.State == "failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	atSwap := make([]int64, clients)
	for c := range clients {
		atSwap[c] = acked[c].Load()
	}
	allWrote("after the swap", atSwap) // writes continue after the swap
	close(stop)
	wg.Wait()
	if st.State != "done" || st.Error != "" {
		t.Fatalf("replay ended %+v", st)
	}
	if failures.Load() != 0 || writes.Load() < clients {
		t.Fatalf("%d failed requests, %d writes", failures.Load(), writes.Load())
	}
	if gen := currentGen(t, n); gen == genBefore || gen != st.Generation {
		t.Fatalf("serving generation %s (before %s, rebuilt %s)", gen, genBefore, st.Generation)
	}
	// No acknowledged write lost: each key's history holds every acknowledged allowlist.
	for c := range clients {
		var h struct{ Events []wire.HistoryEntry }
		n.json("GET", "/v1/workspaces/acme/keys/"+keys[c].Key.ID+"/history?limit=1000", f.writer, nil, 200, &h)
		var seen []string
		for _, e := range h.Events {
			var ce struct {
				Data struct{ Allowlist []string } `json:"data"`
				Type string
			}
			json.Unmarshal(e.Event, &ce)
			if ce.Type == string(events.TypeAllowlistUpdated) {
				seen = append(seen, ce.Data.Allowlist[0])
			}
		}
		if !slices.Equal(seen, written[c]) {
			t.Fatalf("client %d: history has %d allowlist changes, %d were acknowledged", c, len(seen), len(written[c]))
		}
	}
	// The swapped-in views equal a rebuild from the log.
	last := n.lastSeq()
	if err := n.Projector().WaitFor(waitCtx(t), last); err != nil {
		t.Fatal(err)
	}
	diffs, err := replay.Verify(context.Background(), n.Log, n.Store(), t.TempDir(), 10)
	if err != nil || len(diffs) != 0 {
		t.Fatalf("views after the swap differ from the log: %v %v", diffs, err)
	}
	t.Logf("%d writes and as many reads during an online rebuild of %d events", writes.Load(), st.Applied)
}

func currentGen(t *testing.T, n *node) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.dataDir, "projections", "CURRENT"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestOfflineReplayAndPointInTime: an offline rebuild equals the live views; copies at
// several sequences and times hold the state then, and serve read-only.
func TestOfflineReplayAndPointInTime(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	type moment struct {
		seq   uint64
		at    time.Time
		allow []string
	}
	var moments []moment
	for _, cidr := range []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"} {
		var got wire.Key
		f.json("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{cidr}}, 200, &got)
		r, err := n.Log.Get(context.Background(), got.Version)
		if err != nil {
			t.Fatal(err)
		}
		moments = append(moments, moment{got.Version, r.Time, []string{cidr}})
		time.Sleep(5 * time.Millisecond)
	}
	f.json("DELETE", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, nil)
	liveDump := dumpStore(t, n.Store())
	n.stop()

	cfg := server.Config{DataDir: data}
	gen, stats, err := server.RebuildViews(context.Background(), cfg, replay.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := projections.Open(filepath.Join(data, "projections", gen), projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := dumpStore(t, s); !slices.Equal(got, liveDump) || stats.Applied != s.Checkpoint() {
		t.Fatalf("offline rebuild (%d events) differs from the live views", stats.Applied)
	}
	s.Close()
	if diffs, _, err := server.VerifyViews(context.Background(), cfg, 0); err != nil || len(diffs) != 0 {
		t.Fatalf("verify after rebuild: %v %v", diffs, err)
	}

	for i, m := range moments {
		for _, by := range []string{"seq", "time"} {
			opts := replay.Options{UntilSeq: m.seq}
			if by == "time" {
				opts = replay.Options{UntilTime: m.at}
			}
			dir := filepath.Join(t.TempDir(), "pit")
			if _, err := server.RebuildInto(context.Background(), cfg, dir, opts); err != nil {
				t.Fatal(err)
			}
			ro := startReadOnly(t, dir)
			var got wire.Key
			ro.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, &got)
			if !slices.Equal(got.Allowlist, m.allow) || got.Status != "active" {
				t.Fatalf("moment %d by %s: allowlist %v status %s, want %v active", i, by, got.Allowlist, got.Status, m.allow)
			}
			st, _, b := ro.do("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{}})
			if st != 405 || !strings.Contains(string(b), "read_only") {
				t.Fatalf("a write to a read-only server: %d %s", st, b)
			}
			// Without a stream, event bodies are unavailable, not an internal error.
			st, _, b = ro.do("GET", "/v1/workspaces/acme/keys/"+k.Key.ID+"/history", f.writer, nil)
			if st != 503 || !strings.Contains(string(b), "no event stream") {
				t.Fatalf("history on a read-only server without a stream: %d %s", st, b)
			}
			ro.stop()
		}
	}
}

// startReadOnly serves a views directory read-only, with no stream.
func startReadOnly(t *testing.T, views string) *node {
	t.Helper()
	return startNode(t, "", func(c *server.Config) {
		*c = server.Config{ReadOnly: true, ViewsDir: views, HTTPAddr: c.HTTPAddr, Logger: c.Logger, Stderr: c.Stderr}
	})
}

// TestVerifyFindsPlantedDifference: replay --verify reports nothing on healthy views and
// each planted difference otherwise.
func TestVerifyFindsPlantedDifference(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k"})
	n.stop()
	cfg := server.Config{DataDir: data}
	if diffs, _, err := server.VerifyViews(context.Background(), cfg, 0); err != nil || len(diffs) != 0 {
		t.Fatalf("healthy views: %v %v", diffs, err)
	}
	plant(t, filepath.Join(data, "projections", currentGenDir(t, data)), "key/acme/"+k.Key.ID)
	diffs, _, err := server.VerifyViews(context.Background(), cfg, 0)
	if err != nil || len(diffs) != 1 || diffs[0].Key != "key/acme/"+k.Key.ID {
		t.Fatalf("planted difference: %v %v", diffs, err)
	}
}

func currentGenDir(t *testing.T, data string) string {
	b, err := os.ReadFile(filepath.Join(data, "projections", "CURRENT"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestAheadOfLog: views restored from later than the stream refuse to serve and say what
// to do.
func TestAheadOfLog(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	n.stop()
	early := filepath.Join(t.TempDir(), "early")
	if _, err := server.Backup(data, early); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, data)
	n2.root = n.root
	fx := fixture{node: n2, ws: "acme", writer: f.writer}
	fx.createKey(map[string]any{"name": "after the backup"})
	n2.stop()
	// The stream goes back to the backup; the views stay ahead.
	if err := os.RemoveAll(filepath.Join(data, "nats")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(early, "nats"), filepath.Join(data, "nats")); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: data, HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	nd, err := server.Open(context.Background(), cfg)
	if err == nil {
		err = nd.Serve(context.Background(), cfg)
		nd.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "keyreg replay") || !strings.Contains(err.Error(), "ahead") {
		t.Fatalf("serve with views ahead of the stream: %v", err)
	}
	if _, _, err := server.RebuildViews(context.Background(), server.Config{DataDir: data}, replay.Options{}); err != nil {
		t.Fatal(err)
	}
	n3 := startNode(t, data)
	var list struct{ Keys []wire.Key }
	n3.json("GET", "/v1/workspaces/acme/keys", f.writer, nil, 200, &list)
	if len(list.Keys) != 1 {
		t.Fatalf("after the rebuild: %d keys, want the 1 in the restored stream", len(list.Keys))
	}
}

// TestBackupRestore backs up a registry of 10,000 keys, restores it into an empty data
// dir, and finds identical views and audit history.
func TestBackupRestore(t *testing.T) {
	data := t.TempDir()
	// 10,001 keys in acme: past the default quota of keys.
	n := startNode(t, data, func(c *server.Config) { c.MaxKeysPerWorkspace = -1 })
	f := newFixture(t, n, "acme")
	var wg sync.WaitGroup
	ids := make([]string, 10_000)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(ids); i += 8 {
				r, err := n.Commands.CreateKey(context.Background(), commandsCreateKey(i))
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = r.ID
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	f.json("PUT", "/v1/workspaces/acme/keys/"+ids[42]+"/allowlist", f.writer, map[string]any{"allowlist": []string{"192.0.2.0/24"}}, 200, nil)
	if err := n.Projector().WaitFor(waitCtx(t), n.lastSeq()); err != nil {
		t.Fatal(err)
	}
	want := dumpStore(t, n.Store())
	_, _, wantHist := n.do("GET", "/v1/workspaces/acme/keys/"+ids[42]+"/history", f.writer, nil)
	n.stop()

	bak := filepath.Join(t.TempDir(), "backup")
	m, err := server.Backup(data, bak)
	if err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := server.Restore(bak, restored); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Restore(bak, restored); err == nil {
		t.Fatal("restore into a non-empty data dir succeeded")
	}
	n2 := startNode(t, restored)
	if got := dumpStore(t, n2.Store()); !slices.Equal(got, want) {
		t.Fatalf("restored views differ (%d vs %d entries)", len(got), len(want))
	}
	if _, _, hist := n2.do("GET", "/v1/workspaces/acme/keys/"+ids[42]+"/history", f.writer, nil); string(hist) != string(wantHist) {
		t.Fatalf("restored history differs:\n%s\n%s", hist, wantHist)
	}
	listed := 0
	for after, pages := "", 0; pages == 0 || after != ""; pages++ {
		var list struct {
			Keys []wire.Key
			Next string
		}
		n2.json("GET", "/v1/workspaces/acme/keys?limit=1000&after="+after, f.writer, nil, 200, &list)
		listed, after = listed+len(list.Keys), list.Next
	}
	if listed != 10_001 {
		t.Fatalf("restored registry lists %d keys", listed)
	}
	// A damaged backup is refused.
	var victim string
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, "nats/") && f.Size > 0 {
			victim = filepath.Join(bak, f.Path)
			break
		}
	}
	b, _ := os.ReadFile(victim)
	b[len(b)/2] ^= 1
	os.WriteFile(victim, b, 0o600)
	if _, err := server.Restore(bak, filepath.Join(t.TempDir(), "again")); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("restore of a damaged backup: %v", err)
	}
}

func commandsCreateKey(i int) commands.CreateKey {
	return commands.CreateKey{Workspace: "acme", Name: fmt.Sprintf("key %d", i), Permissions: []string{"users.track"},
		Allowlist: []string{fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)}}
}

// plant changes one value of a closed view store behind keyreg's back.
func plant(t *testing.T, dir, key string) {
	t.Helper()
	db, err := pebble.Open(dir, &pebble.Options{Logger: quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	// Another key's state: a value that decodes, as the views' values must.
	it, _ := db.NewIter(&pebble.IterOptions{LowerBound: []byte("key/"), UpperBound: []byte("key0")})
	var other []byte
	for ok := it.First(); ok && other == nil; ok = it.Next() {
		if string(it.Key()) != key {
			other = slices.Clone(it.Value())
		}
	}
	it.Close()
	if other == nil {
		t.Fatal("plant: no other key to copy")
	}
	if err := db.Set([]byte(key), other, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
}

type quiet struct{}

func (quiet) Infof(string, ...any)  {}
func (quiet) Errorf(string, ...any) {}
func (quiet) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
