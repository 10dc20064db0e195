package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// RetireIdentifier retires an identifier, freeing its name.
type RetireIdentifier struct {
	Workspace       string
	IdentifierID    string
	ExpectedVersion uint64 // optional (0: any); see ErrPrecondition
	EventID         string // optional ULID, the first event's id; see Handler
	Meta            events.Meta
}

type retireIdentifier struct {
	ws       events.Workspace
	id       string
	expected uint64
}

func (c RetireIdentifier) validate() (retireIdentifier, error) {
	ws, id, err := parseIdentifierRef(c.Workspace, c.IdentifierID)
	if err != nil {
		return retireIdentifier{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return retireIdentifier{}, err
	}
	return retireIdentifier{ws: ws, id: id, expected: c.ExpectedVersion}, nil
}

// decide retires s and releases its name claim (if s holds it).
func (c retireIdentifier) decide(s events.IdentifierState, claim events.NameClaimState) ([]change, error) {
	if err := checkIdentifier(s, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	changes := []change{identifierChange(s, events.IdentifierRetired{Kind: s.Kind, Name: s.Name})}
	if claim.Holder == s.ID {
		changes = append(changes, claimChange(s.Workspace, s.Kind, s.Name, claim, events.NameReleased{IdentifierID: s.ID, Kind: s.Kind, Name: s.Name}))
	}
	return changes, nil
}

// RetireIdentifier retires an identifier and releases its name in one atomic append; the
// name can then be registered again. Result.Version is the identifier's version; Result.Seq
// that of the release.
//
// Errors: *events.ValidationError (fields workspace, identifier_id, event_id);
// events.ErrNotFound; ErrPrecondition; ErrRetired when it is already retired.
func (h *Handler) RetireIdentifier(ctx context.Context, cmd RetireIdentifier) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("retire identifier: %w", err)
	}
	home := target{c.ws, events.AggIdentifier, c.id}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		s, err := h.stateOf(ctx).Identifier(ctx, c.ws, c.id)
		if err != nil {
			return nil, Result{}, err
		}
		var claim events.NameClaimState
		if s.Exists() {
			if claim, err = h.stateOf(ctx).NameClaim(ctx, c.ws, claimID(s.Kind, s.Name)); err != nil {
				return nil, Result{}, err
			}
		}
		changes, err := c.decide(s, claim)
		return changes, unchanged(c.id, s.Version), err
	})
	if err != nil {
		return Result{}, fmt.Errorf("retire identifier: %w", err)
	}
	return res, nil
}
