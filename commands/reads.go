package commands

import (
	"context"

	"github.com/keyreg/keyreg/events"
)

// reads is the state reader of one attempt of a command. It notes the version of each
// aggregate the decision read, and whether any read may have lagged behind the log, so
// that execute can tell whether the append's expectations check everything the decision
// rests on (see decideChecked).
type reads struct {
	st       StateReader
	stLags   bool // st is a FreshReader's lagging side
	cps      CheckpointReader
	cpsLag   bool
	lagged   bool              // a read went to a reader that may lag
	versions map[string]uint64 // aggregate filter -> version read; workspaces aside
}

// tier is how fresh the reads of an attempt are.
type tier int

const (
	// tierViews reads the Handler's State as it is: the views, which may lag.
	tierViews tier = iota
	// tierNear reads the views and then the nearest copy of the log (NearReader), which
	// may lag on a replicated log, where it saves a question to the stream's leader. On
	// other logs it is tierExact.
	tierNear
	// tierExact reads exactly: every event the log held when the read began.
	tierExact
)

// reads returns the reader of an attempt: the Handler's State and Checkpoints, which may
// lag, or their nearer or exact counterparts. Checkpoints are read exactly from tierNear
// on.
func (h *Handler) reads(t tier) *reads {
	st := h.state()
	r := &reads{st: st, versions: map[string]uint64{}}
	fr, lags := st.(FreshReader)
	nr, hasNear := st.(NearReader)
	switch {
	case lags && t == tierNear && hasNear:
		r.st, r.stLags = nr.Near()
	case lags && t >= tierNear:
		r.st = fr.Fresh()
	default:
		r.stLags = lags
	}
	c, isCps := st.(CheckpointReader)
	switch {
	case h.Checkpoints != nil:
		r.cps, r.cpsLag = h.Checkpoints, true // the views, as documented
	case isCps:
		r.cps, r.cpsLag = c, lags
	default:
		r.cps = LogState{Log: h.Log}
	}
	if t >= tierNear && r.cpsLag {
		exact := r.st
		if lags && t == tierNear {
			exact = fr.Fresh()
		}
		if c, ok := exact.(CheckpointReader); ok && h.Checkpoints == nil {
			r.cps = c
		} else {
			r.cps = freshCheckpoints{lagging: r.cps, log: h.Log}
		}
		r.cpsLag = false
	}
	return r
}

func (r *reads) note(lags bool, ws events.Workspace, agg events.Aggregate, id string, version uint64) {
	r.lagged = r.lagged || lags
	r.versions[events.AggregateFilter(ws, agg, id)] = version
}

// Workspace reads are not noted: a workspace is never deleted and its permissions are
// only added, so a stale workspace can only make a command refuse, and a refusal is
// decided again on an exact read (see decideChecked).
func (r *reads) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	r.lagged = r.lagged || r.stLags
	return r.st.Workspace(ctx, ws)
}

func (r *reads) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	s, err := r.st.Key(ctx, ws, id)
	r.note(r.stLags, ws, events.AggKey, id, s.Version)
	return s, err
}

func (r *reads) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	s, err := r.st.Identifier(ctx, ws, id)
	r.note(r.stLags, ws, events.AggIdentifier, id, s.Version)
	return s, err
}

func (r *reads) NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error) {
	s, err := r.st.NameClaim(ctx, ws, claimID)
	r.note(r.stLags, ws, events.AggName, claimID, s.Version)
	return s, err
}

func (r *reads) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	s, err := r.cps.SealedCheckpoint(ctx)
	r.note(r.cpsLag, events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID, s.Version)
	return s, err
}

// covered reports whether changes append with an expectation on every aggregate read, at
// the version read: JetStream then checks at the append that none of them moved.
func (r *reads) covered(changes []change) bool {
	for filter, version := range r.versions {
		ok := false
		for _, c := range changes {
			if c.expectFilter == "" && c.expect == version && events.AggregateFilter(c.ws, c.agg, c.id) == filter {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// freshCheckpoints reads the latest checkpoint exactly from a CheckpointReader that may
// lag (the views): its state, and the checkpoint events the log holds after it. Checkpoints
// are sealed every so many events, so that read is short.
type freshCheckpoints struct {
	lagging CheckpointReader
	log     events.Reader
}

func (f freshCheckpoints) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	st, err := f.lagging.SealedCheckpoint(ctx)
	if err != nil {
		return st, err
	}
	return st, foldCheckpointsAfter(ctx, f.log, &st, st.Version+1)
}

// readsKey is the context key of the reader of the attempt under way.
type readsKey struct{}

// stateOf returns the reader of the attempt that ctx belongs to (see execute), or an exact
// reader outside one.
func (h *Handler) stateOf(ctx context.Context) *reads {
	if r, ok := ctx.Value(readsKey{}).(*reads); ok {
		return r
	}
	return h.reads(tierExact)
}
