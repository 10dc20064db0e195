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

// TestConcurrentAllowlistUpdates updates one key's allowlist from 21 goroutines at once:
// every update succeeds, is in the log exactly once, each event's Previous is the
// allowlist of the event before it (no lost update), and the final state is the last
// event's.
//
// None may give up: an attempt conflicts only if another goroutine's update was stored
// between its read and its append, so each of a goroutine's failed attempts (one after
// the other) is matched by a distinct success of another goroutine, and each goroutine
// succeeds once. With 21 goroutines one fails at most 20 times, within the budget of
// DefaultMaxRetries (20) retries, whatever the interleaving.
func TestConcurrentAllowlistUpdates(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		const n = 21
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
			default:
				t.Errorf("goroutine %d: %v", i, err)
			}
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

// lockstep is a StateReader whose Key reads hold every contender of a round until all of
// them have read: round 0 has n contenders, and each round after it one fewer. So all of
// a round's contenders read the same version before any of them appends, exactly one of
// them wins, and the others conflict and retry into the next round: the contender that
// wins round r needed r retries. (Each round's readers are the previous round's losers,
// who read only after its winner was stored, so the rounds never overlap.)
type lockstep struct {
	LogState
	mu      sync.Mutex
	size    int           // contenders of the current round
	arrived int           // of them, how many have read
	release chan struct{} // closed when all of them have
}

func newLockstep(log events.Log, n int) *lockstep {
	return &lockstep{LogState: LogState{Log: log}, size: n, release: make(chan struct{})}
}

func (s *lockstep) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	k, err := s.LogState.Key(ctx, ws, id)
	if err != nil {
		return k, err
	}
	s.mu.Lock()
	release := s.release
	if s.arrived++; s.arrived == s.size {
		close(s.release)
		s.size, s.arrived, s.release = s.size-1, 0, make(chan struct{})
	}
	s.mu.Unlock()
	select {
	case <-release:
		return k, nil
	case <-ctx.Done():
		return k, ctx.Err()
	}
}

// TestRetryBudgetUnderContention runs 20 updates of one key in lockstep (see lockstep),
// the worst case for retries: the last one succeeds only after 19 retries. With the
// default budget every update succeeds; with a budget of b retries exactly b+1 succeed and
// the others fail with ErrConflict.
func TestRetryBudgetUnderContention(t *testing.T) {
	const n = 20
	for _, tt := range []struct {
		maxRetries int
		succeed    int
	}{{0, n}, {3, 4}, {-1, 1}} {
		t.Run(fmt.Sprint(tt.maxRetries), func(t *testing.T) {
			forEachLog(t, func(t *testing.T, h *Handler) {
				ctx := testCtx(t)
				mustWorkspace(t, h, "acme")
				id := mustKey(t, h, "acme").ID
				h.State, h.MaxRetries = newLockstep(h.Log, n), tt.maxRetries
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Go(func() {
						_, errs[i] = h.UpdateAllowlist(ctx, UpdateAllowlist{
							Workspace: "acme", KeyID: id, Allowlist: []string{fmt.Sprintf("192.0.2.%d", i)},
						})
					})
				}
				wg.Wait()
				succeeded := 0
				for i, err := range errs {
					switch {
					case err == nil:
						succeeded++
					case !errors.Is(err, events.ErrConflict):
						t.Errorf("goroutine %d: %v", i, err)
					}
				}
				if succeeded != tt.succeed {
					t.Errorf("%d of %d updates succeeded, want %d", succeeded, n, tt.succeed)
				}
				if got := len(records(t, h.Log, events.AggregateFilter("acme", events.AggKey, id))) - 1; got != succeeded {
					t.Errorf("log has %d updates, %d succeeded", got, succeeded)
				}
			})
		})
	}
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
