package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// UpdateKey changes any of a key's name, permissions and expiry at once (HTTP PATCH):
// the changed fields' events are appended together, all or none.
type UpdateKey struct {
	Workspace   string
	KeyID       string
	Name        *string   // nil: unchanged
	Permissions *[]string // nil: unchanged
	// SetExpiry says whether ExpiresAt applies; ExpiresAt nil then clears the expiry.
	SetExpiry       bool
	ExpiresAt       *time.Time
	ExpectedVersion uint64 // optional (0: any); see ErrPrecondition
	EventID         string // optional ULID, the first event's id; see Handler
	// By is the caller granting permissions (see Grantor); nil: the process itself.
	By   *Grantor
	Meta events.Meta
}

type updateKey struct {
	rename *renameKey
	perms  *updatePermissions
	expiry *setKeyExpiry
	ws     events.Workspace
	id     string
}

func (c UpdateKey) validate(now time.Time) (updateKey, error) {
	var u updateKey
	var err error
	if u.ws, u.id, err = parseKeyRef(c.Workspace, c.KeyID); err != nil {
		return u, err
	}
	if c.Name != nil {
		r, err := RenameKey{Workspace: c.Workspace, KeyID: c.KeyID, Name: *c.Name, ExpectedVersion: c.ExpectedVersion, EventID: c.EventID}.validate()
		if err != nil {
			return u, err
		}
		u.rename = &r
	}
	if c.Permissions != nil {
		p, err := UpdatePermissions{Workspace: c.Workspace, KeyID: c.KeyID, Permissions: *c.Permissions, ExpectedVersion: c.ExpectedVersion, EventID: c.EventID, By: c.By}.validate()
		if err != nil {
			return u, err
		}
		u.perms = &p
	}
	if c.SetExpiry {
		e, err := SetKeyExpiry{Workspace: c.Workspace, KeyID: c.KeyID, ExpiresAt: c.ExpiresAt, ExpectedVersion: c.ExpectedVersion, EventID: c.EventID}.validate(now)
		if err != nil {
			return u, err
		}
		u.expiry = &e
	}
	if err := parseEventID(c.EventID); err != nil {
		return u, err
	}
	return u, nil
}

// decide gathers the events of every changed field; each is decided from the same state.
// ws is the key's workspace, for checking the permissions granted.
func (c updateKey) decide(k events.KeyState, ws events.WorkspaceState, expected uint64) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, expected); err != nil {
		return nil, err
	}
	var all []change
	add := func(ch []change, err error) error {
		all = append(all, ch...)
		return err
	}
	if c.rename != nil {
		if err := add(c.rename.decide(k)); err != nil {
			return nil, err
		}
	}
	if c.perms != nil {
		if err := add(c.perms.decide(k, ws)); err != nil {
			return nil, err
		}
	}
	if c.expiry != nil {
		if err := add(c.expiry.decide(k)); err != nil {
			return nil, err
		}
	}
	return all, nil
}

// UpdateKey applies the given fields in one atomic append: a KeyRenamed,
// KeyPermissionsUpdated and KeyExpiryChanged for each field that changes, in that order.
// Fields equal to the current values append nothing; if nothing changes it returns the
// current version.
//
// Permissions added are checked as UpdatePermissions checks them.
//
// Errors: *events.ValidationError (fields workspace, key_id, name, permissions,
// expires_at, event_id); *GrantError (ErrForbidden); events.ErrNotFound; ErrPrecondition;
// ErrRevoked.
func (h *Handler) UpdateKey(ctx context.Context, cmd UpdateKey) (Result, error) {
	c, err := cmd.validate(h.now())
	if err != nil {
		return Result{}, fmt.Errorf("update key: %w", err)
	}
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, func(k events.KeyState, now time.Time) ([]change, error) {
		var ws events.WorkspaceState
		if c.perms != nil {
			var err error
			if ws, err = h.grantWorkspace(ctx, c.ws, c.perms.permissions); err != nil {
				return nil, err
			}
		}
		return c.decide(k, ws, cmd.ExpectedVersion)
	})
	if err != nil {
		return Result{}, fmt.Errorf("update key: %w", err)
	}
	return res, nil
}
