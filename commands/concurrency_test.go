package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestConcurrentAllowlistUpdates updates one key's allowlist from 50 goroutines at once:
// every success is in the log exactly once, each event's Previous is the allowlist of
// the event before it (no lost update), and the final state is the last event's.
func TestConcurrentAllowlistUpdates(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		const n = 50
		var wg sync.WaitGroup
		results := make([]Result, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = h.UpdateAllowlist(ctx, UpdateAllowlist{
					Workspace: "acme", KeyID: id, Allowlist: []string{fmt.Sprintf("192.0.2.%d", i)},
				})
			})
		}
		wg.Wait()

		byVersion := map[uint64]int{} // version -> goroutine
		for i, err := range errs {
			switch {
			case err == nil:
				if j, dup := byVersion[results[i].Version]; dup {
					t.Errorf("goroutines %d and %d both got version %d", i, j, results[i].Version)
				}
				byVersion[results[i].Version] = i
			case !errors.Is(err, events.ErrConflict):
				t.Errorf("goroutine %d: %v", i, err)
			}
		}
		if len(byVersion) < n {
			t.Logf("%d of %d updates gave up after %d retries", n-len(byVersion), n, DefaultMaxRetries)
		}

		recs := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, id))
		updates := recs[1:]
		if len(updates) != len(byVersion) {
			t.Fatalf("log has %d updates, %d succeeded", len(updates), len(byVersion))
		}
		prev := recs[0].Payload.(*events.KeyCreated).Allowlist
		for _, d := range updates {
			p := d.Payload.(*events.AllowlistUpdated)
			i, ok := byVersion[d.Seq]
			if !ok {
				t.Fatalf("seq %d was not returned to any caller", d.Seq)
			}
			if want := prefixes(fmt.Sprintf("192.0.2.%d/32", i)); !slices.Equal(p.Allowlist, want) {
				t.Errorf("seq %d: allowlist %v, goroutine %d set %v", d.Seq, p.Allowlist, i, want)
			}
			if !slices.Equal(p.Previous, prev) {
				t.Errorf("seq %d: previous %v, want %v (lost update)", d.Seq, p.Previous, prev)
			}
			prev = p.Allowlist
		}
		if k := keyState(t, h, "acme", id); !slices.Equal(k.Allowlist, prev) || k.Version != updates[len(updates)-1].Seq {
			t.Errorf("final state %v at %d, last event %v at %d", k.Allowlist, k.Version, prev, updates[len(updates)-1].Seq)
		}
	})
}

// TestConcurrentRegistrations registers one name, in different letter cases, from 20
// goroutines at once: exactly one wins.
func TestConcurrentRegistrations(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		variants := []string{"Summer Sale", "SUMMER SALE", "summer sale", "sUMMER sALE", " Summer Sale "}
		const n = 20
		var wg sync.WaitGroup
		var won atomic.Int32
		winner := make(chan Result, n)
		for i := range n {
			wg.Go(func() {
				res, err := h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "campaign", Name: variants[i%len(variants)]})
				switch {
				case err == nil:
					won.Add(1)
					winner <- res
				case !errors.Is(err, ErrNameTaken):
					t.Errorf("goroutine %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if won.Load() != 1 {
			t.Fatalf("%d registrations won, want 1", won.Load())
		}
		w := <-winner
		if seq := lastSeq(t, h.Log); seq != 3 {
			t.Errorf("log has %d events, want 3 (workspace, registered, claimed)", seq)
		}
		if _, err := h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: w.ID}); err != nil {
			t.Fatal(err)
		}
		again := mustIdentifier(t, h, "acme", "campaign", "summer SALE")
		if again.ID == w.ID {
			t.Error("same id registered twice")
		}
	})
}

// conflictLog is a log whose appends always conflict.
type conflictLog struct {
	events.Log
	appends atomic.Int32
}

func (l *conflictLog) Append(ctx context.Context, msgs []events.Message) ([]uint64, error) {
	l.appends.Add(1)
	return nil, fmt.Errorf("%w: always", events.ErrConflict)
}

func TestRetryGivesUp(t *testing.T) {
	mem := newLog(t)
	mustWorkspace(t, &Handler{Log: mem}, "acme")
	for _, tt := range []struct {
		maxRetries int
		appends    int32
	}{{0, DefaultMaxRetries + 1}, {3, 4}, {-1, 1}} {
		t.Run(fmt.Sprint(tt.maxRetries), func(t *testing.T) {
			l := &conflictLog{Log: mem}
			h := &Handler{Log: l, MaxRetries: tt.maxRetries}
			_, err := h.CreateKey(testCtx(t), CreateKey{Workspace: "acme", Name: "k"})
			wantErr(t, err, events.ErrConflict)
			if got := l.appends.Load(); got != tt.appends {
				t.Errorf("%d appends, want %d", got, tt.appends)
			}
		})
	}
}

// staleState serves an old version of a key once, as a lagging projection would.
type staleState struct {
	LogState
	stale events.KeyState
	used  atomic.Bool
}

func (s *staleState) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	if !s.used.Swap(true) {
		return s.stale, nil
	}
	return s.LogState.Key(ctx, ws, id)
}

func TestStaleReadRetries(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		stale := keyState(t, h, "acme", id)
		if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.1.1.1"}}); err != nil {
			t.Fatal(err)
		}
		h.State = &staleState{LogState: LogState{Log: h.Log}, stale: stale}
		res, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"2.2.2.2"}})
		if err != nil {
			t.Fatal(err)
		}
		recs := records(t, h.Log, events.AggregateFilter("acme", events.AggKey, id))
		last := recs[len(recs)-1]
		if len(recs) != 3 || last.Seq != res.Seq || !slices.Equal(last.Payload.(*events.AllowlistUpdated).Previous, prefixes("1.1.1.1/32")) {
			t.Errorf("after a stale read: %d events, last %+v", len(recs), last.Payload)
		}
	})
}
