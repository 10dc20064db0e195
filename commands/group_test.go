package commands

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
)

// gatedGroupLog records the number of commands in each group write and, while gate is
// set, holds each write until gate is closed.
type gatedGroupLog struct {
	events.GroupedLog
	mu      sync.Mutex
	sizes   []int
	gate    chan struct{}
	entered chan struct{} // receives when a write reaches the gate
}

func (l *gatedGroupLog) AppendGroup(ctx context.Context, groups [][]events.Message) []events.AppendResult {
	l.mu.Lock()
	l.sizes = append(l.sizes, len(groups))
	gate := l.gate
	l.mu.Unlock()
	if gate != nil {
		l.entered <- struct{}{}
		<-gate
	}
	return l.GroupedLog.AppendGroup(ctx, groups)
}

func (l *gatedGroupLog) writes() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sizes)
}

// staleKey serves an old version of key id once, as a lagging projection would.
type staleKey struct {
	LogState
	id    string
	stale events.KeyState
	used  atomic.Bool
}

func (s *staleKey) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	if id == s.id && !s.used.Swap(true) {
		return s.stale, nil
	}
	return s.LogState.Key(ctx, ws, id)
}

// TestGroupCommitStaleCommandRetries runs two commands in one group write on the
// JetStream log, one of them decided on a stale read: the other is appended, the stale one
// fails alone and its retry, alone, is appended on the fresh state.
func TestGroupCommitStaleCommandRetries(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no JetStream")
	}
	ctx := testCtx(t)
	gated := &gatedGroupLog{GroupedLog: eventstest.StartEmbedded(t, t.TempDir()).Log}
	group := events.NewGroupLog(gated)
	h := &Handler{Log: group}
	mustWorkspace(t, h, "acme")
	stale, fresh, held := mustKey(t, h, "acme").ID, mustKey(t, h, "acme").ID, mustKey(t, h, "acme").ID
	old := keyState(t, h, "acme", stale)
	if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: stale, Allowlist: []string{"1.1.1.1"}}); err != nil {
		t.Fatal(err)
	}
	before := len(gated.writes())
	h.State = &staleKey{LogState: LogState{Log: h.Log}, id: stale, stale: old}

	gated.mu.Lock()
	gated.gate, gated.entered = make(chan struct{}), make(chan struct{}, 10)
	gated.mu.Unlock()
	var wg sync.WaitGroup
	update := func(id, ip string, res *Result, err *error) {
		wg.Go(func() {
			*res, *err = h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{ip}})
		})
	}
	var heldRes, staleRes, freshRes Result
	var heldErr, staleErr, freshErr error
	update(held, "3.3.3.3", &heldRes, &heldErr)
	select { // a write is under way, held at the gate
	case <-gated.entered:
	case <-ctx.Done():
		t.Fatal("no write")
	}
	update(stale, "2.2.2.2", &staleRes, &staleErr)
	update(fresh, "4.4.4.4", &freshRes, &freshErr)
	for deadline := time.Now().Add(20 * time.Second); group.Queued() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d commands queued, want 2", group.Queued())
		}
	}
	close(gated.gate)
	wg.Wait()
	for _, err := range []error{heldErr, staleErr, freshErr} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(gated.writes()[before:]); got != "[1 2 1]" {
		t.Fatalf("group writes of %s commands, want [1 2 1]: the held one, the two together, the stale one's retry alone", got)
	}
	if freshRes.Seq >= staleRes.Seq {
		t.Errorf("the fresh command at %d, the stale one's retry at %d: want the retry after", freshRes.Seq, staleRes.Seq)
	}
	recs := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, stale))
	last := recs[len(recs)-1]
	if len(recs) != 3 || last.Seq != staleRes.Seq || !slices.Equal(last.Payload.(*events.AllowlistUpdated).Previous, prefixes("1.1.1.1/32")) {
		t.Errorf("stale key: %d events, last at %d %+v; want 3, the retry decided on 1.1.1.1", len(recs), last.Seq, last.Payload)
	}
	if k := keyState(t, h, "acme", fresh); k.Version != freshRes.Seq || !slices.Equal(k.Allowlist, prefixes("4.4.4.4/32")) {
		t.Errorf("fresh key: %+v, want 4.4.4.4 at %d", k, freshRes.Seq)
	}
}
