package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// CreateWorkspace creates a workspace.
type CreateWorkspace struct {
	Workspace string // the new workspace's id, a slug
	Name      string
	EventID   string // optional ULID; see Handler.CreateWorkspace
	Meta      events.Meta
}

type createWorkspace struct {
	ws   events.Workspace
	name string
}

func (c CreateWorkspace) validate() (createWorkspace, error) {
	ws, err := events.ParseWorkspace(c.Workspace)
	if err != nil {
		return createWorkspace{}, err
	}
	name, err := events.ParseName("name", c.Name)
	if err != nil {
		return createWorkspace{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return createWorkspace{}, err
	}
	return createWorkspace{ws: ws, name: name}, nil
}

func (c createWorkspace) decide(ws events.WorkspaceState) ([]change, error) {
	if ws.Exists() {
		return nil, alreadyExists("workspace %q", c.ws)
	}
	return []change{{ws: c.ws, agg: events.AggWorkspace, id: string(c.ws), payload: events.WorkspaceCreated{Name: c.name}}}, nil
}

// CreateWorkspace creates workspace cmd.Workspace. The Result's ID is the workspace id.
//
// EventID, when set, is the id of the workspace.created event; running the command
// again with it returns the earlier Result with Duplicate set.
//
// Errors: *events.ValidationError (fields workspace, name, event_id); ErrAlreadyExists.
func (h *Handler) CreateWorkspace(ctx context.Context, cmd CreateWorkspace) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("create workspace: %w", err)
	}
	home := target{c.ws, events.AggWorkspace, string(c.ws)}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		ws, err := h.stateOf(ctx).Workspace(ctx, c.ws)
		if err != nil {
			return nil, Result{}, err
		}
		changes, err := c.decide(ws)
		return changes, Result{ID: string(c.ws)}, err
	})
	if err != nil {
		return Result{}, fmt.Errorf("create workspace: %w", err)
	}
	return res, nil
}
