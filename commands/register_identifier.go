package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// RegisterIdentifier registers an app identifier or an additional API identifier.
type RegisterIdentifier struct {
	Workspace string
	Kind      string // one of events.Kinds
	Name      string // unique per workspace and kind among active identifiers, ignoring case
	Platform  string // required for kind app (ios, android, web, ...); empty otherwise
	EventID   string // optional ULID; see Handler.RegisterIdentifier
	Meta      events.Meta
}

type registerIdentifier struct {
	ws       events.Workspace
	id       string
	kind     events.Kind
	name     string
	platform string
}

func (c RegisterIdentifier) validate() (registerIdentifier, error) {
	ws, err := events.ParseWorkspace(c.Workspace)
	if err != nil {
		return registerIdentifier{}, err
	}
	kind, err := events.ParseKind(c.Kind)
	if err != nil {
		return registerIdentifier{}, err
	}
	name, err := events.ParseName("name", c.Name)
	if err != nil {
		return registerIdentifier{}, err
	}
	platform := c.Platform
	switch {
	case kind == events.KindApp && platform == "":
		return registerIdentifier{}, events.Invalid("platform", "", "is required for app identifiers")
	case kind == events.KindApp:
		if platform, err = events.ParsePlatform(platform); err != nil {
			return registerIdentifier{}, err
		}
	case platform != "":
		return registerIdentifier{}, events.Invalid("platform", platform, "only app identifiers have a platform")
	}
	if err := parseEventID(c.EventID); err != nil {
		return registerIdentifier{}, err
	}
	return registerIdentifier{ws: ws, kind: kind, name: name, platform: platform}, nil
}

// decide registers the identifier and claims its name, which must be free.
func (c registerIdentifier) decide(ws events.WorkspaceState, claim events.NameClaimState) ([]change, error) {
	if !ws.Exists() {
		return nil, events.NotFound("workspace", string(c.ws), "")
	}
	if claim.Holder != "" {
		return nil, &NameTakenError{Kind: c.kind, Name: c.name, Holder: claim.Holder}
	}
	return []change{
		{ws: c.ws, agg: events.AggIdentifier, id: c.id, payload: events.IdentifierRegistered{Kind: c.kind, Name: c.name, Platform: c.platform}},
		claimChange(c.ws, c.kind, c.name, claim, events.NameClaimed{IdentifierID: c.id, Kind: c.kind, Name: c.name}),
	}, nil
}

// RegisterIdentifier registers an identifier and claims its name in one atomic append, so
// that of concurrent registrations of one name (in any letter case) exactly one wins. The
// Result's ID is the new identifier's id: a new ULID, or EventID when that is set, so that
// running the command again with the same EventID returns the earlier Result with
// Duplicate set. Result.Version is the identifier's version; Result.Seq that of the name
// claim.
//
// Errors: *events.ValidationError (fields workspace, kind, name, platform, event_id);
// events.ErrNotFound (a *events.NotFoundError) when the workspace does not exist; ErrNameTaken (a
// *NameTakenError naming the holder); a *QuotaError when the workspace holds
// MaxIdentifiersPerWorkspace identifiers; ErrAlreadyExists when EventID was used by
// another command.
func (h *Handler) RegisterIdentifier(ctx context.Context, cmd RegisterIdentifier) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("register identifier: %w", err)
	}
	c.id = cmd.EventID
	if c.id == "" {
		c.id = events.NewID()
	}
	home := target{c.ws, events.AggIdentifier, c.id}
	q := h.newQuota(c.ws, events.AggIdentifier, events.TypeIdentifierRegistered, "identifiers", h.MaxIdentifiersPerWorkspace)
	res, err := q.run(ctx, func() (Result, error) {
		return h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
			ws, err := h.workspace(ctx, c.ws)
			if err != nil {
				return nil, Result{}, err
			}
			claim, err := h.stateOf(ctx).NameClaim(ctx, c.ws, claimID(c.kind, c.name))
			if err != nil {
				return nil, Result{}, err
			}
			changes, err := c.decide(ws, claim)
			if err == nil {
				err = q.apply(ctx, &changes[0])
			}
			return changes, Result{ID: c.id}, err
		})
	})
	if err != nil {
		return Result{}, fmt.Errorf("register identifier: %w", err)
	}
	return res, nil
}
