package commands

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keyreg/keyreg/events"
)

// UpdatePermissions replaces a key's endpoint permissions.
type UpdatePermissions struct {
	Workspace       string
	KeyID           string
	Permissions     []string // the new set; sorted and deduplicated
	ExpectedVersion uint64   // optional (0: any); see ErrPrecondition
	EventID         string   // optional ULID, the event's id; see Handler
	By              *Grantor // the caller (see Grantor); nil: the process itself
	Meta            events.Meta
}

type updatePermissions struct {
	ws          events.Workspace
	id          string
	permissions []events.Permission
	expected    uint64
	by          *Grantor
}

func (c UpdatePermissions) validate() (updatePermissions, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return updatePermissions{}, err
	}
	perms, err := events.ParsePermissions(c.Permissions)
	if err != nil {
		return updatePermissions{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return updatePermissions{}, err
	}
	return updatePermissions{ws: ws, id: id, permissions: perms, expected: c.ExpectedVersion, by: c.By}, nil
}

// decide checks the permissions added (see checkGrants) against ws, the key's
// workspace.
func (c updatePermissions) decide(k events.KeyState, ws events.WorkspaceState) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	added, removed := diff(k.Permissions, c.permissions, cmp.Compare[events.Permission])
	if len(added) == 0 && len(removed) == 0 {
		return nil, nil
	}
	if err := checkGrants(ws, added, c.by); err != nil {
		return nil, err
	}
	return []change{keyChange(k, events.KeyPermissionsUpdated{
		Permissions: c.permissions,
		Previous:    nonNil(slices.Clone(k.Permissions)),
		Added:       added,
		Removed:     removed,
	})}, nil
}

// UpdatePermissions replaces a key's permissions; the event lists the previous set and
// what was added and removed. Setting the current set appends nothing and returns the
// current version. The permissions added are checked as CreateKey checks them; those the
// key keeps are not (a key keeps a permission that has left the catalogue).
//
// Errors: *events.ValidationError (fields workspace, key_id, permissions, event_id);
// *GrantError (ErrForbidden); events.ErrNotFound; ErrPrecondition; ErrRevoked.
func (h *Handler) UpdatePermissions(ctx context.Context, cmd UpdatePermissions) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("update permissions: %w", err)
	}
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, func(k events.KeyState, now time.Time) ([]change, error) {
		ws, err := h.grantWorkspace(ctx, c.ws, c.permissions)
		if err != nil {
			return nil, err
		}
		return c.decide(k, ws)
	})
	if err != nil {
		return Result{}, fmt.Errorf("update permissions: %w", err)
	}
	return res, nil
}
