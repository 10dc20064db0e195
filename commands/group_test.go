package commands

import (
	"context"
	"errors"
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

// gatedHandler returns a Handler on a group log over JetStream whose writes can be held
// (gatedGroupLog), reading state from the log or, with views, from views a projector
// keeps applying.
func gatedHandler(t *testing.T, views bool) (*Handler, *gatedGroupLog, *events.GroupLog) {
	t.Helper()
	gated := &gatedGroupLog{GroupedLog: eventstest.StartEmbedded(t, t.TempDir()).Log}
	group := events.NewGroupLog(gated)
	h := &Handler{Log: group}
	if views {
		_, h.State = startViews(t, group)
	}
	return h, gated, group
}

// hold makes the next group write wait at the gate: it runs first (which must append),
// waits until that write is held, and returns a function that waits until n more
// commands are queued behind it and then opens the gate.
func hold(t *testing.T, ctx context.Context, gated *gatedGroupLog, group *events.GroupLog, wg *sync.WaitGroup, first func() error) func(n int) {
	t.Helper()
	gated.mu.Lock()
	gated.gate, gated.entered = make(chan struct{}), make(chan struct{}, 64)
	gated.mu.Unlock()
	wg.Go(func() {
		if err := first(); err != nil {
			t.Error(err)
		}
	})
	select {
	case <-gated.entered:
	case <-ctx.Done():
		t.Fatal("no write")
	}
	return func(n int) {
		waitQueued(t, ctx, group, n)
		gated.mu.Lock()
		close(gated.gate)
		gated.gate = nil
		gated.mu.Unlock()
	}
}

// waitQueued waits until n appends wait for the write under way.
func waitQueued(t *testing.T, ctx context.Context, group *events.GroupLog, n int) {
	t.Helper()
	for group.Queued() < n {
		if ctx.Err() != nil {
			t.Fatalf("%d commands queued, want %d", group.Queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitViews waits until the Handler's views (if any) have applied the whole log, so that
// the next reads are not stale.
func waitViews(t *testing.T, ctx context.Context, h *Handler) {
	t.Helper()
	vs, ok := h.State.(ViewState)
	if !ok {
		return
	}
	last := lastSeq(t, h.Log)
	for vs.Views().Checkpoint() < last {
		if ctx.Err() != nil {
			t.Fatalf("views at %d, log at %d", vs.Views().Checkpoint(), last)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitSameAggregate queues two updates of one key into one group write, both
// decided on the same version: the first is appended, the second's expectation fails
// (it is checked against the stream with the first stored, not against the stream before
// the batch), and its retry, alone, decides on the first's state. Their events are in
// order, each expecting and chaining to the one before it.
func TestGroupCommitSameAggregate(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no JetStream")
	}
	for _, views := range []bool{false, true} {
		t.Run(fmt.Sprintf("views=%t", views), func(t *testing.T) {
			ctx := testCtx(t)
			h, gated, group := gatedHandler(t, views)
			mustWorkspace(t, h, "acme")
			id, other := mustKey(t, h, "acme").ID, mustKey(t, h, "acme").ID
			waitViews(t, ctx, h)
			before := len(gated.writes())

			var wg sync.WaitGroup
			release := hold(t, ctx, gated, group, &wg, func() error {
				_, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: other, Allowlist: []string{"9.9.9.9"}})
				return err
			})
			var first, second Result
			var firstErr, secondErr error
			wg.Go(func() {
				first, firstErr = h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.1.1.1"}})
			})
			waitQueued(t, ctx, group, 1)
			wg.Go(func() {
				second, secondErr = h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"2.2.2.2"}})
			})
			release(2)
			wg.Wait()
			if firstErr != nil || secondErr != nil {
				t.Fatal(firstErr, secondErr)
			}
			if got := fmt.Sprint(gated.writes()[before:]); got != "[1 2 1]" {
				t.Fatalf("group writes of %s commands, want [1 2 1]: the held one, the two together, the second's retry alone", got)
			}
			recs := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, id))
			if len(recs) != 3 || recs[1].Seq != first.Seq || recs[2].Seq != second.Seq {
				t.Fatalf("key events at %v, want created, then %d, then %d", seqsOf(recs), first.Seq, second.Seq)
			}
			if p := recs[1].Payload.(*events.AllowlistUpdated); !slices.Equal(p.Previous, prefixes("10.0.0.0/8")) || !slices.Equal(p.Allowlist, prefixes("1.1.1.1/32")) {
				t.Errorf("first update %+v", p)
			}
			if p := recs[2].Payload.(*events.AllowlistUpdated); !slices.Equal(p.Previous, prefixes("1.1.1.1/32")) || !slices.Equal(p.Allowlist, prefixes("2.2.2.2/32")) {
				t.Errorf("second update %+v: want it decided on the first's list", p)
			}
			for i := 1; i < len(recs); i++ {
				if recs[i].Event.PrevHash != events.Hash(recs[i-1].Data) {
					t.Errorf("event %d does not chain to event %d", recs[i].Seq, recs[i-1].Seq)
				}
			}
		})
	}
}

// TestGroupCommitNameClaim queues eight registrations of one name (in different letter
// cases) into one group write: exactly one wins, the others retry and find the name taken,
// and the log holds one registration and one claim.
func TestGroupCommitNameClaim(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no JetStream")
	}
	for _, views := range []bool{false, true} {
		t.Run(fmt.Sprintf("views=%t", views), func(t *testing.T) {
			ctx := testCtx(t)
			h, gated, group := gatedHandler(t, views)
			mustWorkspace(t, h, "acme")
			key := mustKey(t, h, "acme").ID
			waitViews(t, ctx, h)
			before := len(gated.writes())
			var wg sync.WaitGroup
			release := hold(t, ctx, gated, group, &wg, func() error {
				_, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: key, Allowlist: []string{"9.9.9.9"}})
				return err
			})
			variants := []string{"Summer Sale", "SUMMER SALE", "summer sale", "sUMMER sALE"}
			const n = 8
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() {
					_, errs[i] = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "campaign", Name: variants[i%len(variants)]})
				})
			}
			release(n)
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, ErrNameTaken):
					t.Errorf("registration %d: %v", i, err)
				}
			}
			if won != 1 {
				t.Errorf("%d registrations won, want 1", won)
			}
			if w := gated.writes()[before:]; len(w) < 2 || w[1] != n {
				t.Errorf("group writes of %v commands, want the %d registrations together after the held one", w, n)
			}
			claims := records(t, h.Log, events.AggregateFilter("acme", events.AggName, claimID("campaign", "summer sale")))
			registered := records(t, h.Log, "keyreg.acme.identifier.*.>")
			if len(claims) != 1 || len(registered) != 1 {
				t.Errorf("%d claims and %d identifiers in the log, want 1 and 1", len(claims), len(registered))
			}
		})
	}
}

func seqsOf(recs []events.Decoded) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}
