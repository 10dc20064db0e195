package commands

import (
	"context"
	"fmt"

	"github.com/keyreg/keyreg/events"
)

// StateReader reads the current state of one aggregate. An aggregate with no events is
// its zero state (Version 0), not an error. A reader may lag behind the log: commands
// append with the version they read as expectation and retry on events.ErrConflict.
type StateReader interface {
	Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error)
	Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error)
	Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error)
	// NameClaim reads the claim with id events.NameClaimID(kind, folded name).
	NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error)
}

// LogState is a StateReader that folds an aggregate's events read from the log. It is
// never stale, and costs one read of the aggregate's events per call.
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

func (s LogState) fold(ctx context.Context, ws events.Workspace, agg events.Aggregate, id string,
	apply func(seq uint64, data []byte, e events.Event, p events.Payload) error) error {
	err := s.Log.Read(ctx, events.AggregateFilter(ws, agg, id), 1, func(r events.Record) error {
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
