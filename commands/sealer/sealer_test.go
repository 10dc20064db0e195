package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// TestKVLock: one owner at a time; renewal keeps it; release or expiry hands it over;
// a holder that lost it cannot renew.
func TestKVLock(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	ctx := context.Background()
	ttl := time.Second
	a, err := OpenKVLock(ctx, e.Log.JetStream(), SealerLockKey, "a", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenKVLock(ctx, e.Log.JetStream(), SealerLockKey, "b", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	mustAcquire := func(l *KVLock, want bool) {
		t.Helper()
		ok, err := l.TryAcquire(ctx)
		if err != nil || ok != want {
			t.Fatalf("%s TryAcquire = %t, %v; want %t", l.owner, ok, err, want)
		}
	}
	mustAcquire(a, true)
	mustAcquire(b, false)
	if h, _ := b.Holder(ctx); h != "a" {
		t.Fatalf("holder %q, want a", h)
	}
	// Renewals keep it past the TTL.
	for range 4 {
		time.Sleep(ttl / 3)
		if err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		mustAcquire(b, false)
	}
	// Release hands it over at once.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mustAcquire(b, true)
	mustAcquire(a, false)
	if err := a.Renew(ctx); err == nil {
		t.Fatal("a renewed a lock it does not hold")
	}
	// b stops renewing: after the TTL the lock is free, a takes it, and b cannot renew.
	deadline := time.Now().Add(10 * ttl)
	for {
		ok, err := a.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock did not expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := b.Renew(ctx); err == nil {
		t.Fatal("b renewed a lock that expired and was taken by a")
	}
}

// sealerEnv is a log with live views and its projector.
type sealerEnv struct {
	e     *eventstest.Embedded
	store *projections.Store
	proj  *projections.Projector
	h     *commands.Handler
}

func newSealerEnv(t *testing.T) *sealerEnv {
	t.Helper()
	e := eventstest.StartEmbedded(t, t.TempDir())
	s, err := projections.Open(t.TempDir(), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := projections.NewProjector(s, e.Log)
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	h := &commands.Handler{Log: e.Log}
	if _, err := h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	return &sealerEnv{e: e, store: s, proj: p, h: h}
}

func (se *sealerEnv) views() (*projections.Store, *projections.Projector) { return se.store, se.proj }

func (se *sealerEnv) sealer(t *testing.T, cfg SealerConfig, lock *KVLock) (*Sealer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, AuditSignerName)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	return NewSealer(cfg, se.e.Log, se.views, signer, lock, slog.New(slog.NewTextHandler(io.Discard, nil))), vkey
}

func (se *sealerEnv) addKeys(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		if _, err := se.h.CreateKey(context.Background(), commands.CreateKey{Workspace: "acme", Name: fmt.Sprint("k", i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// checkpoints returns every checkpoint event of the log, in order.
func (se *sealerEnv) checkpoints(t *testing.T) []events.CheckpointSealed {
	t.Helper()
	var out []events.CheckpointSealed
	err := se.e.Log.Read(context.Background(), events.AggregateFilter(events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID), 1, func(r events.Record) error {
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		out = append(out, *d.Payload.(*events.CheckpointSealed))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestConcurrentSealsAppendOnce: sealers on several nodes sealing the same round at once
// append one checkpoint; the others find it and append nothing.
func TestConcurrentSealsAppendOnce(t *testing.T) {
	se := newSealerEnv(t)
	se.addKeys(t, 5)
	ctx := context.Background()
	last, _ := se.e.Log.LastSeq(ctx)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		s, _ := se.sealer(t, SealerConfig{}, nil)
		wg.Go(func() {
			cp, err := s.Seal(ctx, last)
			if err == nil && cp.TreeSize < last {
				err = fmt.Errorf("sealed %d, want at least %d", cp.TreeSize, last)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if cps := se.checkpoints(t); len(cps) != 1 || cps[0].TreeSize != last {
		t.Fatalf("checkpoints %+v; want one of %d leaves", cps, last)
	}
}

// TestSealerRounds: the sealer seals every EveryEvents events and, with events not
// covered, every Interval; not when only its own checkpoint is new.
func TestSealerRounds(t *testing.T) {
	se := newSealerEnv(t)
	s, vkey := se.sealer(t, SealerConfig{EveryEvents: 10, Interval: time.Hour, Poll: 20 * time.Millisecond}, nil)
	run := func(s *Sealer) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	stop := run(s)
	defer func() { stop() }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	se.addKeys(t, 5)
	time.Sleep(200 * time.Millisecond)
	if n := len(se.checkpoints(t)); n != 0 {
		t.Fatalf("%d checkpoints after 6 events, want none before 10 (interval 1h)", n)
	}
	// The sealer is stopped while events are added, so that each round sees them all at
	// once (a slow machine could otherwise seal in the middle of a burst).
	stop()
	se.addKeys(t, 6)
	stop = run(s)
	waitFor("a checkpoint after 12 events", func() bool { return len(se.checkpoints(t)) == 1 })
	stop()
	se.addKeys(t, 9) // 9 new events + the checkpoint's own: not yet 10
	stop = run(s)
	time.Sleep(200 * time.Millisecond)
	if n := len(se.checkpoints(t)); n != 1 {
		t.Fatalf("%d checkpoints; the checkpoint's own event counted", n)
	}
	se.addKeys(t, 1)
	waitFor("a second checkpoint", func() bool { return len(se.checkpoints(t)) == 2 })

	// By time: a short interval seals the few events not covered, then nothing more.
	stop()
	s.cfg.Interval = 100 * time.Millisecond
	stop = run(s)
	se.addKeys(t, 2)
	waitFor("a checkpoint by time", func() bool { return len(se.checkpoints(t)) == 3 })
	time.Sleep(400 * time.Millisecond)
	cps := se.checkpoints(t)
	if len(cps) != 3 {
		t.Fatalf("%d checkpoints: the sealer sealed with no new event", len(cps))
	}
	v, _ := note.NewVerifier(vkey)
	for i, c := range cps {
		n, err := note.Open([]byte(c.Note), note.VerifierList(v))
		if err != nil {
			t.Fatalf("checkpoint %d: %v", i, err)
		}
		size, root, err := events.ParseCheckpoint([]byte(n.Text))
		want, _ := se.store.TreeHash(int64(size))
		if err != nil || size != c.TreeSize || root != want {
			t.Fatalf("checkpoint %d: size %d root %s; want %d %s (%v)", i, size, root, c.TreeSize, want, err)
		}
		if i > 0 && c.TreeSize <= cps[i-1].TreeSize {
			t.Fatalf("checkpoint sizes %d then %d", cps[i-1].TreeSize, c.TreeSize)
		}
	}
}

// TestOneSealerPerStream runs two sealers with the KV lock on one stream: only the lock
// holder seals; when it stops, the other takes over.
func TestOneSealerPerStream(t *testing.T) {
	se := newSealerEnv(t)
	ctx := context.Background()
	cfg := SealerConfig{EveryEvents: 3, Interval: -1, Poll: 20 * time.Millisecond}
	var sealers []*Sealer
	var vkeys []string
	var stops []func()
	for _, owner := range []string{"node-a", "node-b"} {
		lock, err := OpenKVLock(ctx, se.e.Log.JetStream(), SealerLockKey, owner, time.Second, 1)
		if err != nil {
			t.Fatal(err)
		}
		s, vkey := se.sealer(t, cfg, lock)
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(rctx) }()
		sealers, vkeys = append(sealers, s), append(vkeys, vkey)
		stops = append(stops, func() { cancel(); <-done })
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	signers := func() map[string]int {
		out := map[string]int{}
		for _, c := range se.checkpoints(t) {
			for i, vk := range vkeys {
				v, _ := note.NewVerifier(vk)
				if _, err := note.Open([]byte(c.Note), note.VerifierList(v)); err == nil {
					out[fmt.Sprint("sealer", i)]++
				}
			}
		}
		return out
	}
	for range 5 {
		se.addKeys(t, 4)
		time.Sleep(100 * time.Millisecond)
	}
	got := signers()
	if len(got) != 1 || len(se.checkpoints(t)) < 3 {
		t.Fatalf("checkpoints by signer: %v; want several, all by one sealer", got)
	}
	var leader int
	for k := range got {
		fmt.Sscanf(k, "sealer%d", &leader)
	}
	holder, _ := sealers[leader].lock.Holder(ctx)
	t.Logf("sealer%d (%s) sealed %v", leader, holder, got)
	stops[leader]()
	stops[leader] = func() {}
	before := len(se.checkpoints(t))
	for deadline := time.Now().Add(10 * time.Second); ; {
		se.addKeys(t, 4)
		time.Sleep(100 * time.Millisecond)
		if len(signers()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other sealer did not take over (%d checkpoints, %d before)", len(se.checkpoints(t)), before)
		}
	}
}

// TestSigningKeyFiles: the key pair is made on first use, private key 0600 in a 0700
// directory, and the same key is read back later.
func TestSigningKeyFiles(t *testing.T) {
	data := t.TempDir()
	s1, vkey, err := LoadOrCreateSigningKey(data)
	if err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{
		filepath.Join(data, "audit"):                 0o700 | os.ModeDir,
		filepath.Join(data, "audit", "signing.key"):  0o600,
		filepath.Join(data, "audit", "verifier.key"): 0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode(), err, mode)
		}
	}
	s2, vkey2, err := LoadOrCreateSigningKey(data)
	if err != nil || vkey2 != vkey || s2.KeyHash() != s1.KeyHash() {
		t.Fatalf("second load: %s, %v; want %s", vkey2, err, vkey)
	}
	if got, err := ReadVerifierKey(data); err != nil || got != vkey {
		t.Fatalf("ReadVerifierKey = %q, %v", got, err)
	}
	msg, _ := note.Sign(&note.Note{Text: "hello\n"}, s1)
	v, _ := note.NewVerifier(vkey)
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(data, "audit", "verifier.key"))
	if string(b) != vkey+"\n" {
		t.Fatalf("verifier.key holds %q", b)
	}
}
