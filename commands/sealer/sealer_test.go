package sealer_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/sealer"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/projections"
)

// logs are the event logs every sealing test runs on.
var logs = []struct {
	name string
	open func(t *testing.T) events.Log
}{
	{"MemLog", func(*testing.T) events.Log { return events.NewMemLog() }},
	{"JetStream", func(t *testing.T) events.Log { return eventstest.NewJetStreamLog(t) }},
}

// forEachLog runs test on each log of logs, as a subtest.
func forEachLog(t *testing.T, test func(t *testing.T, log events.Log)) {
	for _, l := range logs {
		t.Run(l.name, func(t *testing.T) { test(t, l.open(t)) })
	}
}

// env is a log with live views (a real Pebble store and its projector) and workspace
// acme in it.
type env struct {
	log   events.Log
	store *projections.Store
	proj  *projections.Projector
	h     *commands.Handler
}

func newEnv(t *testing.T, log events.Log) *env {
	t.Helper()
	s, err := projections.Open("views", projections.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := projections.NewProjector(s, log)
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	e := &env{log: log, store: s, proj: p, h: &commands.Handler{Log: log}}
	if _, err := e.h.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) views() (sealer.Tree, sealer.Waiter) { return e.store, e.proj }

// sealer returns a sealer of the env's views with a key of its own, registered in the log
// (the views applied it), and its verifier key.
func (e *env) sealer(t *testing.T, cfg sealer.Config, lease sealer.Lease) (*sealer.Sealer, string) {
	t.Helper()
	s, vkey := e.unregisteredSealer(t, cfg, lease)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.Register(ctx, "test-node")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.proj.WaitFor(ctx, st.AddedSeq); err != nil {
		t.Fatal(err)
	}
	return s, vkey
}

// unregisteredSealer is sealer without the registration of its key.
func (e *env) unregisteredSealer(t *testing.T, cfg sealer.Config, lease sealer.Lease) (*sealer.Sealer, string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, sealer.SignerName)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	return sealer.New(cfg, e.log, e.views, sealer.Key{Signer: signer, VerifierKey: vkey}, lease, slog.New(slog.NewTextHandler(io.Discard, nil))), vkey
}

// addKeys creates n keys and waits until the views applied them; it returns the last
// stream sequence.
func (e *env) addKeys(t *testing.T, n int) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last uint64
	for i := range n {
		r, err := e.h.CreateKey(ctx, commands.CreateKey{Workspace: "acme", Name: fmt.Sprint("k", i)})
		if err != nil {
			t.Fatal(err)
		}
		last = r.Seq
	}
	if err := e.proj.WaitFor(ctx, last); err != nil {
		t.Fatalf("the views did not apply sequence %d: %v", last, err)
	}
	return last
}

// lastSeq is the log's last sequence.
func (e *env) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := e.log.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// checkpoints returns every checkpoint event of the log, in order.
func (e *env) checkpoints(t *testing.T) []events.CheckpointSealed {
	t.Helper()
	var out []events.CheckpointSealed
	err := e.log.Read(context.Background(), events.AggregateFilter(events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID), 1, func(r events.Record) error {
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

// signedBy reports whether checkpoint c's note carries a valid signature of vkey.
func signedBy(c events.CheckpointSealed, vkey string) bool {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return false
	}
	_, err = note.Open([]byte(c.Note), note.VerifierList(v))
	return err == nil
}

// waitFor polls cond until it holds, failing the test after 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// run starts s.Run; stop cancels it and waits for it to return, failing the test on an
// error. stop may be called more than once.
func run(t *testing.T, s *sealer.Sealer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestConcurrentSealsAppendOnce: sealers on several nodes sealing the same round at once
// append one checkpoint; the others find it and append nothing.
func TestConcurrentSealsAppendOnce(t *testing.T) {
	forEachLog(t, func(t *testing.T, log events.Log) {
		e := newEnv(t, log)
		var sealers []*sealer.Sealer
		for range 6 {
			s, _ := e.sealer(t, sealer.Config{}, nil)
			sealers = append(sealers, s)
		}
		last := e.addKeys(t, 5)
		ctx := context.Background()
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for _, s := range sealers {
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
		if cps := e.checkpoints(t); len(cps) != 1 || cps[0].TreeSize != last {
			t.Fatalf("checkpoints %+v; want one of %d leaves", cps, last)
		}
	})
}

// clock is a settable clock for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// TestStepRounds drives the sealer one round at a time: it seals every EveryEvents events
// and, with events not covered, every Interval; not when only its own checkpoint is new,
// and not by time with nothing new. Each checkpoint's note verifies and signs the root of
// the tree it names.
func TestStepRounds(t *testing.T) {
	forEachLog(t, func(t *testing.T, log events.Log) {
		e := newEnv(t, log)
		ctx := context.Background()
		clk := &clock{now: time.Now()}
		s, vkey := e.sealer(t, sealer.Config{EveryEvents: 10, Interval: time.Hour, Now: clk.Now}, nil)
		step := func(wantDue bool, wantUncovered uint64, wantCheckpoints int) {
			t.Helper()
			r, err := s.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Due != wantDue || r.Uncovered != wantUncovered || r.Applied != e.lastSeq(t)-boolInt(r.Due) {
				t.Fatalf("round %+v; want due %t with %d uncovered of %d applied", r, wantDue, wantUncovered, e.lastSeq(t))
			}
			if r.Due && (r.Sealed.TreeSize != r.Applied || r.Sealed.Version != e.lastSeq(t)) {
				t.Fatalf("round sealed %+v; want a checkpoint of %d leaves at sequence %d", r.Sealed, r.Applied, e.lastSeq(t))
			}
			if n := len(e.checkpoints(t)); n != wantCheckpoints {
				t.Fatalf("%d checkpoints after the round %+v, want %d", n, r, wantCheckpoints)
			}
		}
		e.addKeys(t, 5)
		step(false, 7, 0) // 7 events (workspace, signer, 5 keys), fewer than 10, and the interval has not passed
		e.addKeys(t, 6)
		step(true, 13, 1)
		e.addKeys(t, 9)
		step(false, 9, 1) // 9 new events and the checkpoint's own: not yet 10
		e.addKeys(t, 1)
		step(true, 10, 2)

		// By time: once the interval has passed, the few events not covered are sealed;
		// then, with nothing new, nothing more however long it waits.
		e.addKeys(t, 2)
		step(false, 2, 2)
		clk.Add(time.Hour + time.Minute) // past the interval, counted from the last checkpoint's time
		step(true, 2, 3)
		clk.Add(2 * time.Hour)
		step(false, 0, 3)
		if n, last := s.Rounds(); n != 7 || last.Due || last.Uncovered != 0 {
			t.Fatalf("Rounds = %d, %+v; want 7, the last one sealing nothing", n, last)
		}

		cps := e.checkpoints(t)
		for i, c := range cps {
			v, _ := note.NewVerifier(vkey)
			n, err := note.Open([]byte(c.Note), note.VerifierList(v))
			if err != nil {
				t.Fatalf("checkpoint %d: %v", i, err)
			}
			size, root, err := events.ParseCheckpoint([]byte(n.Text))
			want, _ := e.store.TreeHash(int64(size))
			if err != nil || size != c.TreeSize || root != want {
				t.Fatalf("checkpoint %d: size %d root %s; want %d %s (%v)", i, size, root, c.TreeSize, want, err)
			}
			if i > 0 && c.TreeSize <= cps[i-1].TreeSize {
				t.Fatalf("checkpoint sizes %d then %d", cps[i-1].TreeSize, c.TreeSize)
			}
		}
	})
}

func boolInt(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// TestRunSealsUntilStopped: Run seals by itself at its polls and returns nil when its
// context ends; once everything is covered, its later rounds seal nothing.
func TestRunSealsUntilStopped(t *testing.T) {
	e := newEnv(t, events.NewMemLog())
	s, _ := e.sealer(t, sealer.Config{EveryEvents: 3, Interval: -1, Poll: 5 * time.Millisecond}, nil)
	last := e.addKeys(t, 5)
	stop := run(t, s)
	waitFor(t, "a checkpoint", func() bool { return len(e.checkpoints(t)) == 1 })
	if cp := e.checkpoints(t)[0]; cp.TreeSize != last {
		t.Fatalf("checkpoint of %d leaves, want %d", cp.TreeSize, last)
	}
	// Rounds that saw the checkpoint applied decide nothing is due.
	if err := e.proj.WaitFor(context.Background(), e.lastSeq(t)); err != nil {
		t.Fatal(err)
	}
	n0, _ := s.Rounds()
	waitFor(t, "two more rounds", func() bool { n, _ := s.Rounds(); return n >= n0+2 })
	stop()
	if _, r := s.Rounds(); r.Due || r.Uncovered != 0 || len(e.checkpoints(t)) != 1 || e.lastSeq(t) != last+1 {
		t.Fatalf("after the checkpoint: round %+v, %d checkpoints, last sequence %d; want nothing more", r, len(e.checkpoints(t)), e.lastSeq(t))
	}
}

// TestRunNotPeriodic: with neither EveryEvents nor Interval, Run never looks and seals
// nothing; it returns when its context ends. A periodic sealer polling as often, which
// never finds a checkpoint due, shows that polls went by meanwhile.
func TestRunNotPeriodic(t *testing.T) {
	e := newEnv(t, events.NewMemLog())
	s, _ := e.sealer(t, sealer.Config{EveryEvents: -1, Interval: -1, Poll: time.Millisecond}, nil)
	ref, _ := e.sealer(t, sealer.Config{EveryEvents: 1 << 30, Interval: -1, Poll: time.Millisecond}, nil)
	stop := run(t, s)
	stopRef := run(t, ref)
	e.addKeys(t, 5)
	waitFor(t, "five polls of the periodic sealer", func() bool { n, _ := ref.Rounds(); return n >= 5 })
	stopRef()
	stop()
	if n, _ := s.Rounds(); n != 0 || len(e.checkpoints(t)) != 0 {
		t.Fatalf("%d rounds, %d checkpoints; want none", n, len(e.checkpoints(t)))
	}
}

// leases is a fake lease service: one holder at a time, no expiry. It counts each
// owner's TryAcquire calls; steal hands the lease to an owner that is no sealer, so the
// holder's next Renew fails.
type leases struct {
	mu     sync.Mutex
	holder string
	tries  map[string]int
}

func (ls *leases) lease(owner string, ttl time.Duration) *fakeLease {
	return &fakeLease{ls: ls, owner: owner, ttl: ttl}
}

func (ls *leases) state(owner string) (holder string, tries int) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.holder, ls.tries[owner]
}

func (ls *leases) steal() { ls.mu.Lock(); ls.holder = "thief"; ls.mu.Unlock() }

type fakeLease struct {
	ls    *leases
	owner string
	ttl   time.Duration
}

func (l *fakeLease) TTL() time.Duration { return l.ttl }

func (l *fakeLease) TryAcquire(context.Context) (bool, error) {
	l.ls.mu.Lock()
	defer l.ls.mu.Unlock()
	if l.ls.tries == nil {
		l.ls.tries = map[string]int{}
	}
	l.ls.tries[l.owner]++
	if l.ls.holder != "" {
		return false, nil
	}
	l.ls.holder = l.owner
	return true, nil
}

func (l *fakeLease) Renew(context.Context) error {
	l.ls.mu.Lock()
	defer l.ls.mu.Unlock()
	if l.ls.holder != l.owner {
		return fmt.Errorf("%s lost the lease to %q", l.owner, l.ls.holder)
	}
	return nil
}

func (l *fakeLease) Release(context.Context) error {
	l.ls.mu.Lock()
	defer l.ls.mu.Unlock()
	if l.ls.holder == l.owner {
		l.ls.holder = ""
	}
	return nil
}

// TestOnlyTheLeaseHolderSeals runs two sealers with a fake lease: only the holder looks
// and seals; when it stops, it releases the lease and the other takes over; a sealer
// that loses the lease stops sealing.
func TestOnlyTheLeaseHolderSeals(t *testing.T) {
	e := newEnv(t, events.NewMemLog())
	ls := &leases{}
	cfg := sealer.Config{EveryEvents: 3, Interval: -1, Poll: 5 * time.Millisecond}
	owners := []string{"a", "b"}
	sealers := map[string]*sealer.Sealer{}
	vkeys := map[string]string{}
	stops := map[string]func(){}
	for _, o := range owners {
		sealers[o], vkeys[o] = e.sealer(t, cfg, ls.lease(o, 60*time.Millisecond))
		stops[o] = run(t, sealers[o])
	}
	waitFor(t, "a lease holder", func() bool { h, _ := ls.state(""); return h != "" })
	leader, _ := ls.state("")
	other := owners[0]
	if other == leader {
		other = owners[1]
	}
	for i := 1; i <= 3; i++ {
		e.addKeys(t, 3)
		waitFor(t, fmt.Sprint("checkpoint ", i), func() bool { return len(e.checkpoints(t)) >= i })
	}
	for i, c := range e.checkpoints(t) {
		if !signedBy(c, vkeys[leader]) {
			t.Fatalf("checkpoint %d is not signed by the lease holder %s", i, leader)
		}
	}
	if n, _ := sealers[other].Rounds(); n != 0 {
		t.Fatalf("%s, not holding the lease, looked %d times", other, n)
	}

	// The holder stops: it releases the lease, and the other seals from then on.
	stops[leader]()
	waitFor(t, other+" to take the lease", func() bool { h, _ := ls.state(""); return h == other })
	before := len(e.checkpoints(t))
	e.addKeys(t, 3)
	waitFor(t, "a checkpoint by "+other, func() bool {
		cps := e.checkpoints(t)
		return len(cps) > before && signedBy(cps[len(cps)-1], vkeys[other])
	})

	// The lease is lost (taken elsewhere): the sealer stops at its next renewal and only
	// tries to take the lease again.
	_, tries := ls.state(other)
	ls.steal()
	waitFor(t, other+" to try the lease again", func() bool { _, n := ls.state(other); return n > tries })
	rounds, _ := sealers[other].Rounds()
	cps := len(e.checkpoints(t))
	_, tries = ls.state(other)
	e.addKeys(t, 6)
	waitFor(t, other+" to try the lease once more", func() bool { _, n := ls.state(other); return n > tries })
	if n, _ := sealers[other].Rounds(); n != rounds || len(e.checkpoints(t)) != cps {
		t.Fatalf("after losing the lease: %d rounds (had %d), %d checkpoints (had %d)", n, rounds, len(e.checkpoints(t)), cps)
	}
}

// TestOneSealerPerStream runs two sealers on one JetStream stream with the NATS KV lease:
// only the lease holder seals; when it stops, the other takes over.
func TestOneSealerPerStream(t *testing.T) {
	js := eventstest.StartEmbedded(t, t.TempDir())
	e := newEnv(t, js.Log)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := sealer.Config{EveryEvents: 3, Interval: -1, Poll: 10 * time.Millisecond}
	owners := []string{"node-a", "node-b"}
	sealers := map[string]*sealer.Sealer{}
	vkeys := map[string]string{}
	stops := map[string]func(){}
	var lease *natslog.KVLease
	for _, o := range owners {
		l, err := natslog.OpenKVLease(ctx, js.Log.JetStream(), sealer.LeaseKey, o, 3*time.Second, 1)
		if err != nil {
			t.Fatal(err)
		}
		lease = l
		sealers[o], vkeys[o] = e.sealer(t, cfg, l)
		stops[o] = run(t, sealers[o])
	}
	holder := func() string {
		h, err := lease.Holder(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	waitFor(t, "a lease holder", func() bool { return holder() != "" })
	leader := holder()
	other := owners[0]
	if other == leader {
		other = owners[1]
	}
	for i := 1; i <= 3; i++ {
		e.addKeys(t, 3)
		waitFor(t, fmt.Sprint("checkpoint ", i), func() bool { return len(e.checkpoints(t)) >= i })
	}
	for i, c := range e.checkpoints(t) {
		if !signedBy(c, vkeys[leader]) {
			t.Fatalf("checkpoint %d is not signed by the lease holder %s", i, leader)
		}
	}
	if n, _ := sealers[other].Rounds(); n != 0 || holder() != leader {
		t.Fatalf("%s looked %d times; holder %s, want %s all along", other, n, holder(), leader)
	}
	stops[leader]()
	waitFor(t, other+" to take the lease", func() bool { return holder() == other })
	before := len(e.checkpoints(t))
	e.addKeys(t, 3)
	waitFor(t, "a checkpoint by "+other, func() bool {
		cps := e.checkpoints(t)
		return len(cps) > before && signedBy(cps[len(cps)-1], vkeys[other])
	})
}
