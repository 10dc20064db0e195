package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// The views commit without fsync (projections.Options.LazySync): a change is durable once
// the stream has fsynced it, and a crash may take the views' latest batches, which the
// projector applies again. These tests hold that no acknowledged change is lost that way
// and that no read goes back: a node restarted after a crash answers nothing before its
// views hold every change of the stream.

// crashWorkspace is the workspace the crash test writes in.
const crashWorkspace = "crash"

// ack is a write answered 2xx: the key it changed, the version (stream sequence) the
// answer gave, and what it wrote.
type ack struct {
	id        string
	version   uint64
	created   bool     // a key creation; else an allowlist update
	allowlist []string // the allowlist sent, for an update
}

// TestCrashUnderLoad (must show of issue 12, "durability unchanged"): the real binary,
// `keyreg serve` with the checkpoint sealer on, takes allowlist updates and key creations
// from 64 concurrent HTTP clients and is killed with SIGKILL mid-load, three times, at
// different moments (after 100, 600 and 1,500 answered writes of the round). After each
// kill:
//   - the views left on disk are marked as crashed and equal a rebuild of the stream up to
//     their own checkpoint (`keyreg replay --verify`): no half batch;
//   - the restarted node's first answers already show every answered change (each key at
//     a version at least its latest answered one), before it reports ready;
//   - every answered change is in its key's history after the restart, at the sequence
//     the answer gave, with the type and allowlist written.
//
// At the end, after a clean stop, the views hold the whole stream and equal a rebuild of it
// into a fresh directory, key by key.
func TestCrashUnderLoad(t *testing.T) {
	data := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "root.key")
	p := startServe(t, data, "--bootstrap-key-file", keyFile)
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	root := strings.TrimSpace(string(b))
	waitReadyURL(t, p.url) // the root key, made at this first start, is in the views
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	const writers = 64
	c := client.New(p.url, root, hc)
	if _, err := c.CreateWorkspace(ctx, crashWorkspace, "Crash", client.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var acks []ack
	own := make([]string, writers) // each writer's key
	for w := range own {
		k, err := c.CreateKey(ctx, crashWorkspace, client.CreateKeyRequest{Name: fmt.Sprint("writer ", w)}, client.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		own[w] = k.Key.ID
		acks = append(acks, ack{id: k.Key.ID, version: k.Key.Version, created: true})
	}

	for round, killAfter := range []int{100, 600, 1500} {
		got := writeUntilKilled(t, ctx, p, client.New(p.url, root, hc), own, round, killAfter)
		acks = append(acks, got...)
		t.Logf("round %d: killed after %d answered writes (%d in all)", round, len(got), len(acks))
		checkCrashedViews(t, ctx, data, acks)
		p = startServe(t, data)
		c = client.New(p.url, root, hc)
		checkNoReadGoesBack(t, ctx, c, acks)
		waitReadyURL(t, p.url)
		checkHistory(t, ctx, c, acks)
	}

	if err := p.stop(); err != nil {
		t.Fatalf("keyreg serve after SIGTERM: %v\n%s", err, p.out.String())
	}
	checkViewsEqualRebuild(t, ctx, data)
}

// writeUntilKilled runs writers clients against p, each writing in turn allowlist updates of its own
// key (four in five) and new keys, until killAfter writes were answered; it then kills p
// with SIGKILL while they keep writing, and returns the writes answered 2xx. A write that
// fails before the kill fails the test.
func writeUntilKilled(t *testing.T, ctx context.Context, p *serveProc, c *client.Client, own []string, round, killAfter int) []ack {
	t.Helper()
	var (
		mu      sync.Mutex
		acks    []ack
		killed  atomic.Bool
		answers = make(chan struct{}, len(own))
		wg      sync.WaitGroup
	)
	fail := make(chan error, len(own))
	for w, id := range own {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var a ack
				var err error
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				if i%5 == 4 {
					var k wire.KeyWithSecret
					k, err = c.CreateKey(rctx, crashWorkspace, client.CreateKeyRequest{Name: fmt.Sprintf("r%d w%d i%d", round, w, i)}, client.WriteOptions{})
					a = ack{id: k.Key.ID, version: k.Key.Version, created: true}
				} else {
					list := []string{fmt.Sprintf("10.%d.%d.0/24", w, (round*50+i)%256)}
					var k wire.Key
					k, err = c.PutAllowlist(rctx, crashWorkspace, id, list, client.WriteOptions{})
					a = ack{id: id, version: k.Version, allowlist: list}
				}
				cancel()
				if err != nil {
					if !killed.Load() {
						fail <- fmt.Errorf("writer %d before the kill: %w", w, err)
					}
					return
				}
				mu.Lock()
				acks = append(acks, a)
				mu.Unlock()
				select {
				case answers <- struct{}{}:
				default:
				}
			}
		}()
	}
	deadline := time.After(3 * time.Minute)
	for n := 0; n < killAfter; {
		select {
		case <-answers:
			mu.Lock()
			n = len(acks)
			mu.Unlock()
		case err := <-fail:
			killed.Store(true)
			p.kill()
			wg.Wait()
			t.Fatalf("%v\n%s", err, p.out.String())
		case <-deadline:
			killed.Store(true)
			p.kill()
			wg.Wait()
			t.Fatalf("round %d: %d writes answered in 3 minutes, want %d before the kill", round, len(acks), killAfter)
		}
	}
	killed.Store(true)
	p.kill()
	wg.Wait() // the writers see the connection go and stop (each request has a timeout)
	mu.Lock()
	defer mu.Unlock()
	return acks
}

// checkCrashedViews checks the views a kill left on disk, before anything reopens them:
// they are marked as crashed, and `keyreg replay --verify` finds them equal to a rebuild
// of the stream up to their checkpoint. It logs how many answered writes the views on disk
// lack (the kill took them; the stream has them).
func checkCrashedViews(t *testing.T, ctx context.Context, data string, acks []ack) {
	t.Helper()
	s, err := projections.Open(filepath.Join(data, "projections", currentGenDir(t, data)), projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	recovered, cp := s.Recovered(), s.Checkpoint()
	s.Close()
	if !recovered {
		t.Fatal("the views of a killed node are not marked as crashed")
	}
	vctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(vctx, nodetest.Binary(t), "replay", "--data", data, "--verify").CombinedOutput()
	if err != nil {
		t.Fatalf("keyreg replay --verify on the views of the killed node: %v\n%s", err, out)
	}
	beyond := 0
	for _, a := range acks {
		if a.version > cp {
			beyond++
		}
	}
	t.Logf("views after the kill: checkpoint %d, %d answered writes beyond it: %s", cp, beyond, strings.TrimSpace(string(out)))
}

// checkNoReadGoesBack reads every key written, as soon as the restarted node answers
// (before it reports ready): each is at least at the version of its latest answered write.
func checkNoReadGoesBack(t *testing.T, ctx context.Context, c *client.Client, acks []ack) {
	t.Helper()
	latest := map[string]uint64{}
	for _, a := range acks {
		latest[a.id] = max(latest[a.id], a.version)
	}
	for id, v := range latest {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		k, err := c.GetKey(rctx, crashWorkspace, id)
		cancel()
		if err != nil {
			t.Fatalf("read key %s after the restart: %v", id, err)
		}
		if k.Version < v {
			t.Fatalf("key %s read after the restart at version %d, older than the answered change %d", id, k.Version, v)
		}
	}
}

// checkHistory checks that every answered write is in its key's history, at the sequence
// its answer gave, as the event it made.
func checkHistory(t *testing.T, ctx context.Context, c *client.Client, acks []ack) {
	t.Helper()
	type event struct {
		Type string `json:"type"`
		Data struct {
			Allowlist []string `json:"allowlist"`
		} `json:"data"`
	}
	byKey := map[string][]ack{}
	for _, a := range acks {
		byKey[a.id] = append(byKey[a.id], a)
	}
	for id, as := range byKey {
		hist := map[uint64]event{}
		for after := uint64(0); ; {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			h, err := c.KeyHistory(rctx, crashWorkspace, id, after, 1000)
			cancel()
			if err != nil {
				t.Fatalf("history of key %s: %v", id, err)
			}
			for _, e := range h.Events {
				var ev event
				if err := json.Unmarshal(e.Event, &ev); err != nil {
					t.Fatalf("history of key %s, sequence %d: %v", id, e.Sequence, err)
				}
				hist[e.Sequence] = ev
			}
			if after = h.Next; after == 0 {
				break
			}
		}
		for _, a := range as {
			ev, ok := hist[a.version]
			switch {
			case !ok:
				t.Fatalf("key %s: the change answered with version %d is not in its history (%d events)", id, a.version, len(hist))
			case a.created && ev.Type != "keyreg.key.created.v1":
				t.Fatalf("key %s: answered created at version %d, history has %s there", id, a.version, ev.Type)
			case !a.created && (ev.Type != "keyreg.key.allowlist_updated.v1" || !slices.Equal(ev.Data.Allowlist, a.allowlist)):
				t.Fatalf("key %s: answered allowlist %v at version %d, history has %s %v there", id, a.allowlist, a.version, ev.Type, ev.Data.Allowlist)
			}
		}
	}
}

// checkViewsEqualRebuild checks, on a stopped node's data dir, that the serving views hold
// the whole stream and equal a rebuild of it into a fresh directory.
func checkViewsEqualRebuild(t *testing.T, ctx context.Context, data string) {
	t.Helper()
	cfg := server.Config{DataDir: data, Logger: slog.New(slog.DiscardHandler)}
	st, err := server.OpenStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	last, err := st.Log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rebuilt")
	if _, err := replay.Rebuild(ctx, st.Log, dir, replay.Options{}); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := projections.Open(dir, projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rebuilt.Close()
	live, err := projections.Open(filepath.Join(data, "projections", currentGenDir(t, data)), projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if live.Checkpoint() != last || live.Recovered() {
		t.Fatalf("views after a clean stop: checkpoint %d of the stream's %d, marked as crashed %t", live.Checkpoint(), last, live.Recovered())
	}
	diffs, err := replay.Diff(live, rebuilt, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
	t.Logf("views equal a rebuild of the %d events of the stream", last)
}

// TestServeAfterCrashCatchesUpFirst: a node whose views were marked as crashed and lost
// many batches (here: the views of an earlier moment put back, and 20,000 events since,
// the last of them an answered allowlist update) answers nothing before its views are
// back at the end of the stream: when it starts serving, its checkpoint is at or beyond
// the answered change, and a read shows the change.
func TestServeAfterCrashCatchesUpFirst(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k"})
	n.stop()
	gen := filepath.Join(data, "projections", currentGenDir(t, data))
	saved := filepath.Join(t.TempDir(), "views")
	copyDir(t, gen, saved)

	n2 := startNode(t, data)
	eventstest.Fill(t, n2.Log, "bulk", 20_000)
	var changed wire.Key
	n2.json("PUT", "/v1/workspaces/acme/keys/"+k.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": []string{"10.9.9.0/24"}}, 200, &changed)
	n2.stop()

	// The views of the earlier moment, marked as a LazySync store that crashed.
	if err := os.RemoveAll(gen); err != nil {
		t.Fatal(err)
	}
	copyDir(t, saved, gen)
	if err := os.WriteFile(filepath.Join(gen, "KEYREG-LAZY-SYNC-OPEN"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := projections.Open(gen, projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Recovered() || s.Checkpoint() >= changed.Version {
		t.Fatalf("views put back: marked as crashed %t, checkpoint %d (want true, before %d)", s.Recovered(), s.Checkpoint(), changed.Version)
	}
	s.Close()

	// Serve by hand, to see the views at the moment the node starts answering.
	cfg := server.Config{DataDir: data, HTTPAddr: "127.0.0.1:0", Stderr: io.Discard,
		Logger: slog.New(slog.DiscardHandler), ShutdownTimeout: 5 * time.Second, SealEveryEvents: -1, SealInterval: -1}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nd, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type serving struct {
		addr       string
		checkpoint uint64
	}
	ready := make(chan serving, 1)
	cfg.Ready = func(addr string) { ready <- serving{addr, nd.Store().Checkpoint()} }
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { err := nd.Serve(sctx, cfg); nd.Close(); done <- err }()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(time.Minute):
			t.Error("the node did not stop within a minute")
		}
	}()
	var at serving
	select {
	case at = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-ctx.Done():
		t.Fatal("the node did not serve in time")
	}
	if at.checkpoint < changed.Version {
		t.Fatalf("the node started serving at checkpoint %d, before the answered change at %d", at.checkpoint, changed.Version)
	}
	got, err := client.New(at.addr, f.writer, nil).GetKey(ctx, "acme", k.Key.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != changed.Version || !slices.Equal(got.Allowlist, []string{"10.9.9.0/24"}) {
		t.Fatalf("first read after the restart: version %d, allowlist %v; answered %d, [10.9.9.0/24]", got.Version, got.Allowlist, changed.Version)
	}
}

// serveProc is a `keyreg serve` process (the real binary) that a test may kill.
type serveProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *nodetest.SyncBuffer
	exited chan struct{}
	err    error // how it exited, once exited is closed
	url    string
}

// startServe runs `keyreg serve` on data, with the sealer sealing every 200 events, and
// more args, and waits until it serves HTTP (not until it is ready). At the end of the
// test it is killed if still running.
func startServe(t *testing.T, data string, args ...string) *serveProc {
	t.Helper()
	args = append([]string{"serve", "--data", data, "--http", "127.0.0.1:0", "--nats-listen", "", "--seal-every-events", "200"}, args...)
	p := &serveProc{t: t, cmd: exec.Command(nodetest.Binary(t), args...), out: &nodetest.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(p.kill)
	deadline := time.After(nodetest.StartTimeout)
	for {
		if _, after, ok := strings.Cut(p.out.String(), "http="); ok {
			addr, _, _ := strings.Cut(after, " ")
			p.url = "http://" + strings.TrimSpace(addr)
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("keyreg serve ended before it served: %v\n%s", p.err, p.out.String())
		case <-deadline:
			p.kill()
			t.Fatalf("keyreg serve did not serve within %s:\n%s", nodetest.StartTimeout, p.out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// kill kills the process with SIGKILL and waits until it is gone.
func (p *serveProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		p.t.Errorf("keyreg serve (pid %d) still there a minute after SIGKILL", p.cmd.Process.Pid)
	}
}

// stop stops the process with SIGTERM and returns how it exited.
func (p *serveProc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(nodetest.StopTimeout):
		p.kill()
		return errors.New("keyreg serve did not stop within " + nodetest.StopTimeout.String() + " of SIGTERM")
	}
}

// copyDir copies the files of dir (no subdirectories) to a new directory to.
func copyDir(t *testing.T, dir, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			t.Fatalf("copyDir: %s has a subdirectory %s", dir, e.Name())
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkViewsFsync measures, in one run, the write path of keyreg serve (commands with
// group commit on the embedded stream, fsync on; the projector; the wait until the views
// applied the change; the answer read from the views) with the views fsynced on every batch
// and without (projections.Options.LazySync), taking turns for 5 rounds of 64 clients each
// updating its own key's allowlist (and 1 client updating 64 keys in turn); commands read the state they decide on from the log (as
// keyreg serve does today) or from the views. It logs each variant's updates/s and mean
// wait for the views, and the ratios lazy/fsync (b.N is ignored: one run is the
// measurement).
func BenchmarkViewsFsync(b *testing.B) {
	const (
		clients = 64
		rounds  = 5
		writes  = 400 // per round and variant
		ws      = "bench"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	data := b.TempDir()
	st, err := server.OpenStream(ctx, server.Config{DataDir: data, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	log := events.NewGroupLog(st.Log)
	h := &commands.Handler{Log: log}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: ws, Name: "bench"}); err != nil {
		b.Fatal(err)
	}
	var keys []string
	for i := range clients {
		r, err := h.CreateKey(ctx, commands.CreateKey{Workspace: ws, Name: fmt.Sprint("key ", i), Allowlist: []string{"10.0.0.0/8"}})
		if err != nil {
			b.Fatal(err)
		}
		keys = append(keys, r.ID)
	}
	type variant struct {
		name       string
		store      *projections.Store
		stateViews bool
		sum        commands.WriteStages
		batches    int64 // the views' batches during the measurements
	}
	stores := map[string]*projections.Store{}
	for name, opts := range map[string]projections.Options{"fsync": {}, "lazy": {LazySync: true}} {
		s, err := projections.Open(filepath.Join(data, name), opts)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[name] = s
	}
	variants := []*variant{
		{name: "fsync, state from log", store: stores["fsync"]}, {name: "lazy, state from log", store: stores["lazy"]},
		{name: "fsync, state from views", store: stores["fsync"], stateViews: true}, {name: "lazy, state from views", store: stores["lazy"], stateViews: true},
	}
	for _, run := range []struct {
		name            string
		clients, writes int // writes per round and variant
	}{{"1 client", 1, 60}, {"64 clients", clients, 1000}} {
		for _, v := range variants {
			v.sum, v.batches = commands.WriteStages{}, 0
		}
		for round := range rounds {
			for i := range variants {
				v := variants[(i+round)%len(variants)] // each goes first in turn
				// Only this variant's projector runs, caught up before the clock starts.
				p := projections.NewProjector(v.store, st.Log)
				pctx, stop := context.WithCancel(ctx)
				ran := make(chan error, 1)
				go func() { ran <- p.Run(pctx) }()
				last, err := st.Log.LastSeq(ctx)
				if err == nil {
					err = p.WaitFor(ctx, last)
				}
				path := commands.WritePath{Log: log, Wait: p.WaitFor,
					Respond: func(ctx context.Context, id string) error { _, err := v.store.Key(ctx, ws, id); return err }}
				if v.stateViews {
					path.State = v.store
				}
				var s commands.WriteStages
				before := v.store.ApplyStats().Batches
				if err == nil {
					s, err = commands.MeasureUpdates(ctx, path, ws, keys, run.clients, run.writes)
				}
				v.batches += v.store.ApplyStats().Batches - before
				stop()
				<-ran
				if err != nil {
					b.Fatal(err)
				}
				v.sum = v.sum.Add(s)
			}
		}
		rate := func(s commands.WriteStages) float64 { return float64(s.Writes) / s.Wall.Seconds() }
		per := func(d time.Duration, s commands.WriteStages) float64 {
			return float64(d.Microseconds()) / float64(s.Writes)
		}
		for _, v := range variants {
			b.Logf("%s, views %-24s %5d updates in %8s: %5.0f/s; per update: wait for views %6.0f µs, append+fsync %7.0f µs, state read %7.0f µs; %d views batches",
				run.name, v.name+":", v.sum.Writes, v.sum.Wall.Round(time.Millisecond), rate(v.sum), per(v.sum.Wait, v.sum), per(v.sum.Append, v.sum), per(v.sum.Read, v.sum), v.batches)
		}
		for i, state := range []string{"log", "views"} {
			fs, lz := variants[2*i].sum, variants[2*i+1].sum
			b.Logf("%s, state from %s: lazy/fsync updates/s %.2f, wait for views %.2f", run.name, state, rate(lz)/rate(fs), per(lz.Wait, lz)/per(fs.Wait, fs))
		}
	}
}
