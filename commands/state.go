package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyreg/keyreg/events"
)

// StateReader reads the current state of one aggregate. An aggregate with no events is
// its zero state (Version 0), not an error.
//
// A StateReader is exact unless it implements FreshReader: each read then reflects every
// event the log held when the read began (LogState). A FreshReader (ViewState) may lag
// behind the log; see Handler for how commands stay correct on it.
type StateReader interface {
	Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error)
	Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error)
	Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error)
	// NameClaim reads the claim with id events.NameClaimID(kind, folded name).
	NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error)
}

// FreshReader is a StateReader whose reads may lag behind the log, and that can also read
// exactly.
type FreshReader interface {
	StateReader
	// Fresh returns an exact reader of the same states: each of its reads reflects every
	// event the log held when the read began.
	Fresh() StateReader
}

// NearReader is a FreshReader with a middle tier: reads fresher than the lagging side and
// cheaper than Fresh, that may still lag.
type NearReader interface {
	FreshReader
	// Near returns a reader of the same states that reads the views and then the nearest
	// copy of the log (events.NearReader), and whether it may lag: when the log has no
	// nearer copy than its exact reads, Near is Fresh and lags is false.
	Near() (st StateReader, lags bool)
}

// LogState is a StateReader that folds an aggregate's events read from the log. It is
// never stale, and costs one read of the aggregate's events per call: it grows with the
// aggregate's history and, on JetStream, with the part of the stream after the aggregate's
// first event.
type LogState struct {
	Log events.Reader
}

// Workspace implements StateReader.
func (s LogState) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	var st events.WorkspaceState
	err := s.fold(ctx, ws, events.AggWorkspace, string(ws), st.Apply)
	return st, err
}

// Key implements StateReader.
func (s LogState) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	var st events.KeyState
	err := s.fold(ctx, ws, events.AggKey, id, st.Apply)
	return st, err
}

// Identifier implements StateReader.
func (s LogState) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	var st events.IdentifierState
	err := s.fold(ctx, ws, events.AggIdentifier, id, st.Apply)
	return st, err
}

// NameClaim implements StateReader.
func (s LogState) NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error) {
	var st events.NameClaimState
	err := s.fold(ctx, ws, events.AggName, claimID, st.Apply)
	return st, err
}

// applyFunc folds one record of an aggregate into its state.
type applyFunc func(seq uint64, data []byte, e events.Event, p events.Payload) error

func (s LogState) fold(ctx context.Context, ws events.Workspace, agg events.Aggregate, id string, apply applyFunc) error {
	return s.foldFrom(ctx, ws, agg, id, 1, apply)
}

// foldFrom folds the aggregate's records with a sequence from `from` on.
func (s LogState) foldFrom(ctx context.Context, ws events.Workspace, agg events.Aggregate, id string, from uint64, apply applyFunc) error {
	err := s.Log.Read(ctx, events.AggregateFilter(ws, agg, id), from, func(r events.Record) error {
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		return apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return fmt.Errorf("read %s %s: %w", agg, id, err)
	}
	return nil
}

// Views are the views of the log that ViewState reads (projections.Store implements it):
// each aggregate's state as folded up to the stream sequence Checkpoint, or later. A
// state they do not hold is an error wrapping events.ErrNotFound.
type Views interface {
	// Checkpoint is the stream sequence of the last record applied; it never goes down.
	Checkpoint() uint64
	StateReader
	CheckpointReader
}

// ViewState reads state from the views: one local read, whatever the length of the stream
// or the aggregate's history. Its reads may lag behind the log; its Fresh reads do not.
//
// A fresh read reads the views' checkpoint C, then the state from the views, then the
// aggregate's records after C from the log and folds those the state lacks (its Version
// tells). It waits for nothing and costs one view read and one filtered read of the log's
// last records (the views' lag), not of the aggregate's history.
//
// Views returns the views to read now (a rebuilt generation may be swapped in); when it
// is nil or returns nil, ViewState reads the log (LogState).
type ViewState struct {
	Log   events.Reader
	Views func() Views
}

var (
	_ NearReader       = ViewState{}
	_ FreshReader      = ViewState{}
	_ CheckpointReader = ViewState{}
)

func (s ViewState) views() Views {
	if s.Views == nil {
		return nil
	}
	return s.Views()
}

// Workspace implements StateReader.
func (s ViewState) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	return viewRead(ctx, s, false, events.AggWorkspace, ws, string(ws), viewsWorkspace, logWorkspace)
}

// Key implements StateReader.
func (s ViewState) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	return viewRead(ctx, s, false, events.AggKey, ws, id, Views.Key, LogState.Key)
}

// Identifier implements StateReader.
func (s ViewState) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	return viewRead(ctx, s, false, events.AggIdentifier, ws, id, Views.Identifier, LogState.Identifier)
}

// NameClaim implements StateReader.
func (s ViewState) NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error) {
	return viewRead(ctx, s, false, events.AggName, ws, claimID, Views.NameClaim, LogState.NameClaim)
}

// SealedCheckpoint implements CheckpointReader.
func (s ViewState) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	return viewCheckpoint(ctx, s, false)
}

func viewsWorkspace(v Views, ctx context.Context, ws events.Workspace, _ string) (events.WorkspaceState, error) {
	return v.Workspace(ctx, ws)
}

func logWorkspace(l LogState, ctx context.Context, ws events.Workspace, _ string) (events.WorkspaceState, error) {
	return l.Workspace(ctx, ws)
}

// Fresh implements FreshReader.
func (s ViewState) Fresh() StateReader { return freshViews{s} }

// Near implements NearReader: a fresh read of the views whose fold after the views'
// checkpoint reads the log's nearest copy (events.NearReader), when the log has one.
func (s ViewState) Near() (StateReader, bool) {
	nr, ok := s.Log.(events.NearReader)
	if !ok {
		return freshViews{s}, false
	}
	return freshViews{ViewState{Log: nearLog{Reader: s.Log, near: nr}, Views: s.Views}}, true
}

// nearLog is a Reader whose Read is its log's ReadNear.
type nearLog struct {
	events.Reader
	near events.NearReader
}

func (l nearLog) Read(ctx context.Context, filter string, from uint64, fn func(events.Record) error) error {
	return l.near.ReadNear(ctx, filter, from, fn)
}

// freshViews is the exact reader of a ViewState.
type freshViews struct{ s ViewState }

func (f freshViews) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	return viewRead(ctx, f.s, true, events.AggWorkspace, ws, string(ws), viewsWorkspace, logWorkspace)
}

func (f freshViews) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	return viewRead(ctx, f.s, true, events.AggKey, ws, id, Views.Key, LogState.Key)
}

func (f freshViews) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	return viewRead(ctx, f.s, true, events.AggIdentifier, ws, id, Views.Identifier, LogState.Identifier)
}

func (f freshViews) NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error) {
	return viewRead(ctx, f.s, true, events.AggName, ws, claimID, Views.NameClaim, LogState.NameClaim)
}

func (f freshViews) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	return viewCheckpoint(ctx, f.s, true)
}

// viewRead reads one aggregate from the views (its zero state when they do not hold it);
// when fresh, it then folds the aggregate's records stored after the views' checkpoint.
func viewRead[T any, PT interface {
	*T
	Apply(seq uint64, data []byte, e events.Event, p events.Payload) error
}](ctx context.Context, s ViewState, fresh bool, agg events.Aggregate, ws events.Workspace, id string,
	read func(Views, context.Context, events.Workspace, string) (T, error),
	fallback func(LogState, context.Context, events.Workspace, string) (T, error),
) (T, error) {
	v := s.views()
	if v == nil {
		return fallback(LogState{Log: s.Log}, ctx, ws, id)
	}
	cp := v.Checkpoint() // before the state: the state is then at cp or later
	st, err := read(v, ctx, ws, id)
	if errors.Is(err, events.ErrNotFound) {
		var zero T
		st, err = zero, nil
	}
	if err != nil || !fresh {
		return st, err
	}
	have := headOf(any(&st))
	err = LogState{Log: s.Log}.foldFrom(ctx, ws, agg, id, cp+1, func(seq uint64, data []byte, e events.Event, p events.Payload) error {
		if seq <= have {
			return nil // the views applied it after cp
		}
		return PT(&st).Apply(seq, data, e, p)
	})
	return st, err
}

// headOf returns the version of one of the aggregates' states.
func headOf(st any) uint64 {
	switch s := st.(type) {
	case *events.WorkspaceState:
		return s.Version
	case *events.KeyState:
		return s.Version
	case *events.IdentifierState:
		return s.Version
	case *events.NameClaimState:
		return s.Version
	case *events.CheckpointState:
		return s.Version
	}
	panic(fmt.Sprintf("commands: no head in %T", st))
}

// viewCheckpoint reads the latest checkpoint as viewRead reads an aggregate.
func viewCheckpoint(ctx context.Context, s ViewState, fresh bool) (events.CheckpointState, error) {
	v := s.views()
	if v == nil {
		return LogState{Log: s.Log}.SealedCheckpoint(ctx)
	}
	cp := v.Checkpoint()
	st, err := v.SealedCheckpoint(ctx)
	if err != nil || !fresh {
		return st, err
	}
	return st, foldCheckpointsAfter(ctx, s.Log, &st, max(cp, st.Version)+1)
}

// foldCheckpointsAfter folds into st the checkpoint events from sequence from on that st
// lacks.
func foldCheckpointsAfter(ctx context.Context, log events.Reader, st *events.CheckpointState, from uint64) error {
	have := st.Version
	return LogState{Log: log}.foldFrom(ctx, events.SystemWorkspace, events.AggCheckpoint, events.CheckpointID, from,
		func(seq uint64, data []byte, e events.Event, p events.Payload) error {
			if seq <= have {
				return nil
			}
			return st.Apply(seq, data, e, p)
		})
}
