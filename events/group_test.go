package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// gatedLog is a MemLog whose AppendGroup records each call's size and, while gate is set,
// waits for it to be closed before writing.
type gatedLog struct {
	*MemLog
	mu        sync.Mutex
	calls     []int
	deadlines []time.Time // of each call's context (zero: none)
	gate      chan struct{}
	entered   chan struct{} // receives when a call reaches the gate
}

func (l *gatedLog) AppendGroup(ctx context.Context, groups [][]Message) []AppendResult {
	l.mu.Lock()
	l.calls = append(l.calls, len(groups))
	d, _ := ctx.Deadline()
	l.deadlines = append(l.deadlines, d)
	gate := l.gate
	l.mu.Unlock()
	if gate != nil {
		l.entered <- struct{}{}
		<-gate
	}
	return l.MemLog.AppendGroup(ctx, groups)
}

func (l *gatedLog) sizes() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.calls...)
}

func groupCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testMsg(id string, expect uint64) Message {
	subj := "keyreg.acme.key." + id + ".renamed"
	return Message{Subject: subj, ID: NewID(), Data: []byte("{}"), ExpectFilter: "keyreg.acme.key." + id + ".*", ExpectSeq: expect}
}

// waitQueued waits until g has n appends queued.
func waitQueued(t *testing.T, g *GroupLog, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		g.mu.Lock()
		q := len(g.queue)
		g.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d appends queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupLogCoalesces: an append while none is under way is written alone and at once;
// the appends made while it is written go together in the next write, each with its own
// result; a stale one among them fails alone.
func TestGroupLogCoalesces(t *testing.T) {
	ctx := groupCtx(t)
	l := &gatedLog{MemLog: NewMemLog()}
	g := NewGroupLog(l)

	// Idle: written alone, without waiting for company.
	if seqs, err := g.Append(ctx, []Message{testMsg("A", 0)}); err != nil || seqs[0] != 1 {
		t.Fatalf("idle append: %v, %v", seqs, err)
	}
	if got := l.sizes(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("idle append wrote groups of %v, want [1]", got)
	}

	l.mu.Lock()
	l.gate, l.entered = make(chan struct{}), make(chan struct{}, 10)
	l.mu.Unlock()
	type result struct {
		seqs []uint64
		err  error
	}
	results := make([]result, 5)
	var wg sync.WaitGroup
	wg.Go(func() { results[0].seqs, results[0].err = g.Append(ctx, []Message{testMsg("B", 0)}) })
	select { // the first write is under way, held at the gate
	case <-l.entered:
	case <-ctx.Done():
		t.Fatal("the first append was not written")
	}
	// Meanwhile: fresh commands on C and D, a stale one on A, and one on B that expects
	// what the first write leaves.
	queued := []Message{testMsg("C", 0), testMsg("A", 0), testMsg("D", 0), testMsg("B", 2)}
	for i, m := range queued {
		wg.Go(func() { results[i+1].seqs, results[i+1].err = g.Append(ctx, []Message{m}) })
		waitQueued(t, g, i+1) // so that they queue in this order
	}
	close(l.gate)
	wg.Wait()

	if got := l.sizes(); fmt.Sprint(got) != "[1 1 4]" {
		t.Fatalf("writes of %v groups, want [1 1 4]: the four queued appends in one write", got)
	}
	want := []struct {
		seq      uint64
		conflict bool
	}{{2, false}, {3, false}, {0, true}, {4, false}, {5, false}}
	for i, w := range want {
		r := results[i]
		switch {
		case w.conflict && !errors.Is(r.err, ErrConflict):
			t.Errorf("append %d: %v, %v; want ErrConflict", i, r.seqs, r.err)
		case !w.conflict && (r.err != nil || len(r.seqs) != 1 || r.seqs[0] != w.seq):
			t.Errorf("append %d: %v, %v; want [%d]", i, r.seqs, r.err, w.seq)
		}
	}
}

// TestGroupLogCancelledWhileQueued: an append whose context ends while it waits its turn
// is not written.
func TestGroupLogCancelledWhileQueued(t *testing.T) {
	ctx := groupCtx(t)
	l := &gatedLog{MemLog: NewMemLog(), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	g := NewGroupLog(l)
	var wg sync.WaitGroup
	var firstErr error
	wg.Go(func() { _, firstErr = g.Append(ctx, []Message{testMsg("A", 0)}) })
	<-l.entered
	cctx, cancel := context.WithCancel(ctx)
	var queuedErr error
	wg.Go(func() { _, queuedErr = g.Append(cctx, []Message{testMsg("B", 0)}) })
	waitQueued(t, g, 1)
	cancel()
	close(l.gate)
	wg.Wait()
	if firstErr != nil || !errors.Is(queuedErr, context.Canceled) {
		t.Fatalf("first append: %v; cancelled one: %v, want context.Canceled", firstErr, queuedErr)
	}
	// The writer skips it: once the queue is written, the log holds only the first.
	deadline := time.Now().Add(20 * time.Second)
	for {
		g.mu.Lock()
		writing := g.writing
		g.mu.Unlock()
		if !writing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer did not finish")
		}
		time.Sleep(time.Millisecond)
	}
	if n, _ := l.LastSeq(ctx); n != 1 {
		t.Fatalf("LastSeq %d, want 1: the cancelled append was written", n)
	}
	if got := l.sizes(); fmt.Sprint(got) != "[1]" {
		t.Fatalf("writes of %v groups, want [1]", got)
	}
}

// TestGroupLogWriteEndsWithItsCallers: a group write gives up when the last of its
// callers stops waiting (their latest deadline), not GroupLogTimeout later, so a write
// stuck on a stream without a leader does not hold the queue behind it longer.
func TestGroupLogWriteEndsWithItsCallers(t *testing.T) {
	ctx := groupCtx(t)
	l := &gatedLog{MemLog: NewMemLog(), gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	g := NewGroupLog(l)
	var wg sync.WaitGroup
	wg.Go(func() { g.Append(ctx, []Message{testMsg("A", 0)}) })
	<-l.entered
	soon := time.Now().Add(20 * time.Second)
	later := soon.Add(time.Second)
	for i, d := range []time.Time{later, soon} {
		dctx, cancel := context.WithDeadline(ctx, d)
		defer cancel()
		wg.Go(func() { g.Append(dctx, []Message{testMsg(fmt.Sprint("B", i), 0)}) })
		waitQueued(t, g, i+1)
	}
	l.mu.Lock()
	gate := l.gate
	l.gate = nil // the queued group goes straight through
	l.mu.Unlock()
	close(gate)
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	if fmt.Sprint(l.calls) != "[1 2]" {
		t.Fatalf("writes of %v groups, want [1 2]", l.calls)
	}
	if d := l.deadlines[1]; !d.Equal(later) {
		t.Fatalf("the group write's deadline is %v, want %v: the latest of its callers'", d, later)
	}
}
