package commands

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// startViews opens views in a fresh Pebble store, with a projector applying log to them
// until the test ends, and returns them with a ViewState on them.
func startViews(t testing.TB, log events.Log) (*projections.Store, ViewState) {
	t.Helper()
	store, err := projections.Open(t.TempDir(), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := projections.NewProjector(store, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("projector: %v", err)
		}
		store.Close()
	})
	return store, ViewState{Log: log, Views: func() Views { return store }}
}

// pausedViews opens views that nothing applies: the test moves them with catchUp.
func pausedViews(t testing.TB, log events.Log) (*projections.Store, ViewState) {
	t.Helper()
	store, err := projections.Open(t.TempDir(), projections.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store, ViewState{Log: log, Views: func() Views { return store }}
}

// catchUp applies the log's records after the views' checkpoint up to sequence upto.
func catchUp(t testing.TB, store *projections.Store, log events.Log, upto uint64) {
	t.Helper()
	var recs []events.Record
	err := log.Read(testCtx(t), ">", store.Checkpoint()+1, func(r events.Record) error {
		if r.Seq <= upto {
			recs = append(recs, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Apply(recs); err != nil {
		t.Fatal(err)
	}
	if store.Checkpoint() != upto {
		t.Fatalf("views at %d, want %d", store.Checkpoint(), upto)
	}
}

// countingLog counts appends.
type countingLog struct {
	events.Log
	appends atomic.Int32
}

func (l *countingLog) Append(ctx context.Context, msgs []events.Message) ([]uint64, error) {
	l.appends.Add(1)
	return l.Log.Append(ctx, msgs)
}

// lastEvent returns the last event of an aggregate as stored.
func lastEvent(t testing.TB, log events.Reader, ws string, agg events.Aggregate, id string) events.Decoded {
	t.Helper()
	recs := records(t, log, events.AggregateFilter(events.Workspace(ws), agg, id))
	if len(recs) == 0 {
		t.Fatalf("no events of %s %s", agg, id)
	}
	return recs[len(recs)-1]
}

// TestViewStateLagging runs commands whose state comes from views that lag behind the
// log (nothing applies them unless the test says so): each decision is the one the log's
// state calls for, a stale read costs at most one retry, and events chain to the real
// last event.
func TestViewStateLagging(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no JetStream")
	}
	setup := func(t *testing.T) (*Handler, *countingLog, *projections.Store) {
		log := &countingLog{Log: events.NewGroupLog(eventstest.StartEmbedded(t, t.TempDir()).Log)}
		store, st := pausedViews(t, log)
		h := &Handler{Log: log, State: st}
		return h, log, store
	}

	t.Run("stale version retries once", func(t *testing.T) {
		h, log, store := setup(t)
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		catchUp(t, store, log, lastSeq(t, log))
		first, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.1.1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		before := log.appends.Load()
		res, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"2.2.2.2"}})
		if err != nil {
			t.Fatal(err)
		}
		if n := log.appends.Load() - before; n != 2 {
			t.Errorf("%d appends, want 2: the stale one and one retry", n)
		}
		last := lastEvent(t, log, "acme", events.AggKey, id)
		if last.Seq != res.Seq || !slices.Equal(last.Payload.(*events.AllowlistUpdated).Previous, prefixes("1.1.1.1/32")) {
			t.Errorf("last event %d %+v, want at %d with previous 1.1.1.1", last.Seq, last.Payload, res.Seq)
		}
		prev, err := log.Get(ctx, first.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if last.Event.PrevHash != events.Hash(prev.Data) {
			t.Errorf("prevhash %q, want the hash of event %d", last.Event.PrevHash, first.Seq)
		}
	})

	t.Run("no-op on a stale view is decided again", func(t *testing.T) {
		h, log, store := setup(t)
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID // allowlist 10.0.0.0/8
		catchUp(t, store, log, lastSeq(t, log))
		if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.1.1.1"}}); err != nil {
			t.Fatal(err)
		}
		// The views still hold 10.0.0.0/8: setting it looks like a no-op there.
		res, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"10.0.0.0/8"}})
		if err != nil {
			t.Fatal(err)
		}
		last := lastEvent(t, log, "acme", events.AggKey, id)
		if last.Seq != res.Seq || !slices.Equal(last.Payload.(*events.AllowlistUpdated).Allowlist, prefixes("10.0.0.0/8")) {
			t.Errorf("last event %d %+v, want 10.0.0.0/8 appended at %d", last.Seq, last.Payload, res.Seq)
		}
	})

	t.Run("refusals on a stale view are decided again", func(t *testing.T) {
		h, log, store := setup(t)
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		catchUp(t, store, log, lastSeq(t, log))
		key := mustKey(t, h, "acme") // not in the views: not found there
		if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: key.ID, Allowlist: []string{"1.1.1.1"}}); err != nil {
			t.Fatalf("update of a key the views do not hold yet: %v", err)
		}
		// The expected version is the log's, not the views'.
		k := keyState(t, h, "acme", key.ID)
		if _, err := h.RenameKey(ctx, RenameKey{Workspace: "acme", KeyID: key.ID, Name: "Renamed", ExpectedVersion: k.Version}); err != nil {
			t.Fatalf("rename at the log's version: %v", err)
		}
		// A name the views show taken was released since.
		ident := mustIdentifier(t, h, "acme", "segment", "VIPs")
		catchUp(t, store, log, lastSeq(t, log))
		if _, err := h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: ident.ID}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "vips"}); err != nil {
			t.Fatalf("register a name the views show taken, released in the log: %v", err)
		}
		// A workspace the views do not hold.
		mustWorkspace(t, h, "beta")
		mustKey(t, h, "beta")
		// And the refusals the log calls for still come.
		_, err := h.CreateWorkspace(ctx, CreateWorkspace{Workspace: "beta", Name: "again"})
		wantErr(t, err, ErrAlreadyExists)
		_, err = h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "VIPS"})
		wantErr(t, err, ErrNameTaken)
	})

	t.Run("a view between a command's events", func(t *testing.T) {
		h, log, store := setup(t)
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		ident := mustIdentifier(t, h, "acme", "segment", "Summer Sale")
		// The views applied identifier.registered but not the name.claimed of the same
		// append (a projector batch may end between them): the identifier is at its
		// real version, its claim looks free.
		catchUp(t, store, log, ident.Version)
		if _, err := h.RetireIdentifier(ctx, RetireIdentifier{Workspace: "acme", IdentifierID: ident.ID}); err != nil {
			t.Fatal(err)
		}
		if last := lastEvent(t, log, "acme", events.AggName, claimID("segment", "Summer Sale")); last.Event.Type != events.TypeNameReleased {
			t.Fatalf("the claim's last event is %s, want name.released: the name leaked", last.Event.Type)
		}
		if _, err := h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "summer sale"}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("duplicate event id", func(t *testing.T) {
		h, log, store := setup(t)
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		catchUp(t, store, log, lastSeq(t, log))
		eventID := events.NewID()
		cmd := UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.1.1.1"}, EventID: eventID}
		first, err := h.UpdateAllowlist(ctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"2.2.2.2"}}); err != nil {
			t.Fatal(err)
		}
		again, err := h.UpdateAllowlist(ctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if !again.Duplicate || again.Seq != first.Seq || again.Version != first.Version {
			t.Errorf("again: %v, want a duplicate of %v", again, first)
		}
		if n := len(records(t, log, events.AggregateFilter("acme", events.AggKey, id))); n != 3 {
			t.Errorf("%d events of the key, want 3", n)
		}
	})

	t.Run("fresh reads are exact", func(t *testing.T) {
		h, log, store := setup(t)
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		ident := mustIdentifier(t, h, "acme", "segment", "Summer Sale")
		for i := range 3 {
			if _, err := h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{fmt.Sprintf("1.1.1.%d", i)}}); err != nil {
				t.Fatal(err)
			}
		}
		fresh := h.State.(ViewState).Fresh()
		exact := LogState{Log: log}
		for _, upto := range []uint64{0, 2, 5, lastSeq(t, log)} {
			if upto > store.Checkpoint() {
				catchUp(t, store, log, upto)
			}
			k, err := fresh.Key(ctx, "acme", id)
			if err != nil {
				t.Fatal(err)
			}
			want := keyState(t, h, "acme", id)
			if k.Version != want.Version || k.LastHash != want.LastHash || !slices.Equal(k.Allowlist, want.Allowlist) {
				t.Errorf("views at %d: fresh key %+v, log %+v", upto, k, want)
			}
			c, err := fresh.NameClaim(ctx, "acme", claimID("segment", "Summer Sale"))
			if err != nil {
				t.Fatal(err)
			}
			wantC, _ := exact.NameClaim(ctx, "acme", claimID("segment", "Summer Sale"))
			if c != wantC || c.Holder != ident.ID {
				t.Errorf("views at %d: fresh claim %+v, log %+v", upto, c, wantC)
			}
		}
	})
}

// lagCopyLog is a log whose nearest copy (ReadNear) holds only the records up to upto, as
// a replica of a replicated stream that lags behind its leader; Read is exact. It counts
// the reads of key and name filters on each side.
type lagCopyLog struct {
	*countingLog
	upto        atomic.Uint64
	near, exact atomic.Int32
}

var errPastCopy = errors.New("past the copy")

func (l *lagCopyLog) ReadNear(ctx context.Context, filter string, from uint64, fn func(events.Record) error) error {
	if aggregateRead(filter) {
		l.near.Add(1)
	}
	err := l.Log.Read(ctx, filter, from, func(r events.Record) error {
		if r.Seq > l.upto.Load() {
			return errPastCopy
		}
		return fn(r)
	})
	if errors.Is(err, errPastCopy) {
		return nil
	}
	return err
}

func (l *lagCopyLog) Read(ctx context.Context, filter string, from uint64, fn func(events.Record) error) error {
	if aggregateRead(filter) {
		l.exact.Add(1)
	}
	return l.Log.Read(ctx, filter, from, fn)
}

func aggregateRead(filter string) bool {
	return strings.HasPrefix(filter, "keyreg.acme.key.") || strings.HasPrefix(filter, "keyreg.acme.name.")
}

// TestViewStateNearReads: on a log with a nearer copy than its exact reads (natslog on a
// replicated stream, whose exact reads ask the stream's leader), the first retry after a
// conflict reads the near copy, and only a decision the append cannot check, or a second
// conflict, reads exactly. Every decision is still the one the log's state calls for.
func TestViewStateNearReads(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no JetStream")
	}
	setup := func(t *testing.T) (*Handler, *lagCopyLog, *projections.Store, string) {
		log := &lagCopyLog{countingLog: &countingLog{Log: events.NewGroupLog(eventstest.StartEmbedded(t, t.TempDir()).Log)}}
		store, st := pausedViews(t, log)
		h := &Handler{Log: log, State: st}
		mustWorkspace(t, h, "acme")
		id := mustKey(t, h, "acme").ID
		catchUp(t, store, log, lastSeq(t, log))
		if _, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"1.1.1.1"}}); err != nil {
			t.Fatal(err)
		}
		return h, log, store, id // the views lack the last update
	}
	update := func(t *testing.T, h *Handler, log *lagCopyLog, id string) (appends, near, exact int32) {
		t.Helper()
		a, n, e := log.appends.Load(), log.near.Load(), log.exact.Load()
		res, err := h.UpdateAllowlist(testCtx(t), UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: []string{"2.2.2.2"}})
		if err != nil {
			t.Fatal(err)
		}
		appends, near, exact = log.appends.Load()-a, log.near.Load()-n, log.exact.Load()-e
		last := lastEvent(t, log, "acme", events.AggKey, id)
		if last.Seq != res.Seq || !slices.Equal(last.Payload.(*events.AllowlistUpdated).Previous, prefixes("1.1.1.1/32")) {
			t.Fatalf("last event %d %+v, want at %d with previous 1.1.1.1", last.Seq, last.Payload, res.Seq)
		}
		return appends, near, exact
	}

	t.Run("the first retry reads the near copy", func(t *testing.T) {
		h, log, _, id := setup(t)
		log.upto.Store(lastSeq(t, log))
		appends, near, exact := update(t, h, log, id)
		if appends != 2 || near != 1 || exact != 0 {
			t.Errorf("%d appends, %d near and %d exact reads; want 2 appends (stale views, then the near copy) and no exact read", appends, near, exact)
		}
	})

	t.Run("a near copy that lags too costs one more retry", func(t *testing.T) {
		h, log, store, id := setup(t)
		log.upto.Store(store.Checkpoint())
		appends, near, exact := update(t, h, log, id)
		if appends != 3 || near != 1 || exact != 1 {
			t.Errorf("%d appends, %d near and %d exact reads; want 3 appends (stale views, stale copy, exact) and one read of each", appends, near, exact)
		}
	})

	t.Run("refusals are decided on exact reads", func(t *testing.T) {
		h, log, store, _ := setup(t)
		ctx := testCtx(t)
		mustIdentifier(t, h, "acme", "segment", "VIPs")
		log.upto.Store(store.Checkpoint()) // neither the views nor the copy hold the name
		_, err := h.RegisterIdentifier(ctx, RegisterIdentifier{Workspace: "acme", Kind: "segment", Name: "vips"})
		wantErr(t, err, ErrNameTaken)
		mustWorkspace(t, h, "beta") // a workspace only the log holds
		if _, err := h.CreateKey(ctx, CreateKey{Workspace: "beta", Name: "k"}); err != nil {
			t.Fatalf("create a key in a workspace neither the views nor the copy hold: %v", err)
		}
	})
}

// TestViewStateConcurrentAdds has 64 goroutines each add one distinct entry to the
// allowlist of one key, as HTTP clients would: read the key (from the views, which lag),
// then replace the list with the read version as expected version, and read again on a
// precondition failure. Every entry is in the final list, each event's Previous is the
// list of the event before it (no lost update) and the prevhash chain holds.
func TestViewStateConcurrentAdds(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no JetStream")
	}
	ctx := testCtx(t)
	log := events.NewGroupLog(eventstest.StartEmbedded(t, t.TempDir()).Log)
	_, st := startViews(t, log)
	h := &Handler{Log: log, State: st}
	mustWorkspace(t, h, "acme")
	id := mustKey(t, h, "acme").ID
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mine := netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", i))
			for ctx.Err() == nil {
				k, err := st.Key(ctx, "acme", id)
				if err != nil {
					errs[i] = err
					return
				}
				if !k.Exists() {
					continue // the views have not applied the creation yet
				}
				list := []string{mine.String()}
				for _, p := range k.Allowlist {
					list = append(list, p.String())
				}
				_, err = h.UpdateAllowlist(ctx, UpdateAllowlist{Workspace: "acme", KeyID: id, Allowlist: list, ExpectedVersion: k.Version})
				if !errors.Is(err, ErrPrecondition) {
					errs[i] = err
					return
				}
			}
			errs[i] = ctx.Err()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("goroutine %d: %v", i, err)
		}
	}
	recs := records(t, log, events.AggregateFilter("acme", events.AggKey, id))
	prev, prevHash := recs[0].Payload.(*events.KeyCreated).Allowlist, events.Hash(recs[0].Data)
	for _, d := range recs[1:] {
		p := d.Payload.(*events.AllowlistUpdated)
		if !slices.Equal(p.Previous, prev) {
			t.Errorf("seq %d: previous %v, want %v (lost update)", d.Seq, p.Previous, prev)
		}
		if d.Event.PrevHash != prevHash {
			t.Errorf("seq %d: prevhash %q, want %q", d.Seq, d.Event.PrevHash, prevHash)
		}
		prev, prevHash = p.Allowlist, events.Hash(d.Data)
	}
	k := keyState(t, h, "acme", id)
	for i := range n {
		if !slices.Contains(k.Allowlist, netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", i))) {
			t.Errorf("entry of goroutine %d missing from the final list", i)
		}
	}
	if len(recs) != n+1 || len(k.Allowlist) != n+1 {
		t.Errorf("%d events and %d entries, want %d and %d", len(recs), len(k.Allowlist), n+1, n+1)
	}
}
