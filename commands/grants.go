package commands

import (
	"context"
	"fmt"
	"slices"

	"github.com/keyreg/keyreg/events"
)

// Grantor is the caller of a command that grants permissions to a key (CreateKey,
// UpdatePermissions, UpdateKey), for the rule of least privilege: a caller grants only
// the registry permissions (keyreg.*) it holds itself, unless it is an admin. Platform
// permissions and the workspace's own are not restricted.
type Grantor struct {
	// Admin is true for a key with keyreg.admin in workspace system: it may grant any
	// permission.
	Admin bool
	// Permissions are the caller's own.
	Permissions []events.Permission
}

// GrantError reports a registry permission a caller tried to grant without holding it.
// It unwraps to ErrForbidden.
type GrantError struct {
	Permission events.Permission
}

func (e *GrantError) Error() string {
	return fmt.Sprintf("cannot grant %s: the caller does not hold it (a key grants only the keyreg.* permissions it holds)", e.Permission)
}

// Unwrap returns ErrForbidden.
func (e *GrantError) Unwrap() error { return ErrForbidden }

// checkGrants checks the permissions a command adds to a key of workspace ws: each must be
// in the catalogue or among ws's own (else a *events.ValidationError for field
// permissions naming the closest valid one), keyreg.admin only in workspace system, and
// each registry permission held by the grantor (else a *GrantError); a nil grantor is the
// process itself and may grant anything. Permissions a key already has are not checked
// again, so a key whose permission left the catalogue keeps it.
func checkGrants(ws events.WorkspaceState, added []events.Permission, by *Grantor) error {
	for _, p := range added {
		if !events.KnownPermission(p, ws.Permissions) {
			hint := "see GET /v1/permissions"
			if s, ok := events.SuggestPermission(p, ws.Permissions); ok {
				hint = "did you mean " + string(s) + "? (GET /v1/permissions lists them)"
			}
			return events.Invalid("permissions", string(p), "unknown permission %s: %s", p, hint)
		}
		if p == events.PermAdmin && ws.ID != events.SystemWorkspace {
			return events.Invalid("permissions", string(p), "%s exists only on keys of workspace %s", p, events.SystemWorkspace)
		}
	}
	if by == nil || by.Admin {
		return nil
	}
	for _, p := range added {
		if p.IsRegistry() && !slices.Contains(by.Permissions, p) {
			return &GrantError{Permission: p}
		}
	}
	return nil
}

// grantWorkspace reads the state of workspace ws for checking grants of perms: from
// memory, unless one of perms is unknown there, in which case it reads the workspace
// again (another node, or this one, may have defined it since).
func (h *Handler) grantWorkspace(ctx context.Context, ws events.Workspace, perms []events.Permission) (events.WorkspaceState, error) {
	s, err := h.workspace(ctx, ws)
	if err != nil || !s.Exists() {
		return s, err
	}
	for _, p := range perms {
		if !events.KnownPermission(p, s.Permissions) {
			fresh, err := h.stateOf(ctx).Workspace(ctx, ws)
			if err == nil && fresh.Exists() {
				h.workspaces.Store(ws, fresh)
			}
			return fresh, err
		}
	}
	return s, nil
}
