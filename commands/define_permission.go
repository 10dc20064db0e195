package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// DefinePermission adds a permission of a workspace's own to its catalogue, so that its
// keys may be granted it (an endpoint of the platform the built-in catalogue lacks, say).
type DefinePermission struct {
	Workspace   string
	Name        string // dotted lower case like users.track; not keyreg.*, not built in
	Description string // what the permission allows; a name-like text (see events.ParseName)
	EventID     string // optional ULID; see Handler
	Meta        events.Meta
}

type definePermission struct {
	ws          events.Workspace
	name        events.Permission
	description string
}

func (c DefinePermission) validate() (definePermission, error) {
	ws, err := events.ParseWorkspace(c.Workspace)
	if err != nil {
		return definePermission{}, err
	}
	name, err := events.ParsePermission(c.Name)
	if err != nil {
		return definePermission{}, withField(err, "name")
	}
	if name.IsRegistry() {
		return definePermission{}, events.Invalid("name", c.Name, "%s* permissions are the registry's own; a workspace cannot define one", events.RegistryPrefix)
	}
	if _, ok := events.LookupPermission(name); ok {
		return definePermission{}, events.Invalid("name", c.Name, "%s is already in the built-in catalogue", name)
	}
	desc, err := events.ParseName("description", c.Description)
	if err != nil {
		return definePermission{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return definePermission{}, err
	}
	return definePermission{ws: ws, name: name, description: desc}, nil
}

func (c definePermission) decide(ws events.WorkspaceState) ([]change, error) {
	if !ws.Exists() {
		return nil, fmt.Errorf("workspace %s: %w", c.ws, events.ErrNotFound)
	}
	for _, p := range ws.Permissions {
		if p.Name != c.name {
			continue
		}
		if p.Description == c.description {
			return nil, nil
		}
		return nil, alreadyExists("permission %q of workspace %q, with another description,", c.name, c.ws)
	}
	return []change{{ws: c.ws, agg: events.AggWorkspace, id: string(c.ws), payload: events.PermissionDefined{
		Name: c.name, Description: c.description,
	}, expect: ws.Version, prevHash: ws.LastHash}}, nil
}

// DefinePermission defines a permission of the workspace's own. The Result's ID is the
// workspace id and Version the workspace's version. Defining it again with the same
// description appends nothing; permissions are never removed.
//
// Errors: *events.ValidationError (fields workspace, name, description, event_id; a name
// that is built in or starts with keyreg.); events.ErrNotFound when the workspace does not
// exist; ErrAlreadyExists when the workspace has the permission with another
// description, or EventID was used by another command.
func (h *Handler) DefinePermission(ctx context.Context, cmd DefinePermission) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("define permission: %w", err)
	}
	home := target{c.ws, events.AggWorkspace, string(c.ws)}
	res, err := h.execute(ctx, home, cmd.EventID, cmd.Meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		ws, err := h.stateOf(ctx).Workspace(ctx, c.ws)
		if err != nil {
			return nil, Result{}, err
		}
		changes, err := c.decide(ws)
		return changes, unchanged(string(c.ws), ws.Version), err
	})
	if err != nil {
		return Result{}, fmt.Errorf("define permission: %w", err)
	}
	h.workspaces.Delete(c.ws) // the cached state lacks the new permission
	return res, nil
}

// withField renames the field of a validation error.
func withField(err error, field string) error {
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return &events.ValidationError{Field: field, Value: ve.Value, Msg: ve.Msg}
	}
	return err
}
