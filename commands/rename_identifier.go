package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// RenameIdentifier changes an identifier's name.
type RenameIdentifier struct {
	Workspace       string
	IdentifierID    string
	Name            string
	ExpectedVersion uint64 // optional (0: any); see ErrPrecondition
	EventID         string // optional ULID, the first event's id; see Handler
	Meta            events.Meta
}

type renameIdentifier struct {
	ws       events.Workspace
	id       string
	name     string
	expected uint64
}

func (c RenameIdentifier) validate() (renameIdentifier, error) {
	ws, id, err := parseIdentifierRef(c.Workspace, c.IdentifierID)
	if err != nil {
		return renameIdentifier{}, err
	}
	name, err := events.ParseName("name", c.Name)
	if err != nil {
		return renameIdentifier{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return renameIdentifier{}, err
	}
	return renameIdentifier{ws: ws, id: id, name: name, expected: c.ExpectedVersion}, nil
}

// decide renames s. When the folded name changes, it also claims the new name (newClaim
// must be free) and releases the old one (oldClaim, if s holds it).
func (c renameIdentifier) decide(s events.IdentifierState, newClaim, oldClaim events.NameClaimState) ([]change, error) {
	if err := checkIdentifier(s, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	if c.name == s.Name {
		return nil, nil
	}
	changes := []change{identifierChange(s, events.IdentifierRenamed{Name: c.name, Previous: s.Name})}
	if events.FoldName(c.name) == events.FoldName(s.Name) {
		return changes, nil
	}
	if newClaim.Holder != "" {
		return nil, &NameTakenError{Kind: s.Kind, Name: c.name, Holder: newClaim.Holder}
	}
	changes = append(changes, claimChange(s.Workspace, s.Kind, c.name, newClaim, events.NameClaimed{IdentifierID: s.ID, Kind: s.Kind, Name: c.name}))
	if oldClaim.Holder == s.ID {
		changes = append(changes, claimChange(s.Workspace, s.Kind, s.Name, oldClaim, events.NameReleased{IdentifierID: s.ID, Kind: s.Kind, Name: s.Name}))
	}
	return changes, nil
}

// RenameIdentifier renames an identifier. A new name (ignoring case) is claimed and the
// old one released in the same atomic append; a change of letter case only appends
// identifier.renamed. Renaming to the current name appends nothing and returns the
// current version. Result.Seq is the last event's sequence.
//
// Errors: *events.ValidationError (fields workspace, identifier_id, name, event_id);
// events.ErrNotFound; ErrPrecondition; ErrRetired; ErrNameTaken.
func (h *Handler) RenameIdentifier(ctx context.Context, cmd RenameIdentifier) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("rename identifier: %w", err)
	}
	home := target{c.ws, events.AggIdentifier, c.id}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		s, err := h.stateOf(ctx).Identifier(ctx, c.ws, c.id)
		if err != nil {
			return nil, Result{}, err
		}
		var newClaim, oldClaim events.NameClaimState
		if s.Exists() && events.FoldName(c.name) != events.FoldName(s.Name) {
			if newClaim, err = h.stateOf(ctx).NameClaim(ctx, c.ws, claimID(s.Kind, c.name)); err != nil {
				return nil, Result{}, err
			}
			if oldClaim, err = h.stateOf(ctx).NameClaim(ctx, c.ws, claimID(s.Kind, s.Name)); err != nil {
				return nil, Result{}, err
			}
		}
		changes, err := c.decide(s, newClaim, oldClaim)
		return changes, unchanged(c.id, s.Version), err
	})
	if err != nil {
		return Result{}, fmt.Errorf("rename identifier: %w", err)
	}
	return res, nil
}
