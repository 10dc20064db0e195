package commands

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/events"
)

func TestCheckGrants(t *testing.T) {
	acme := events.WorkspaceState{ID: "acme", Head: events.Head{Version: 2}, Permissions: []events.PermissionInfo{
		{Name: "reports.weekly", Description: "Weekly reports", Group: events.GroupWorkspace, Workspace: "acme"},
	}}
	system := events.WorkspaceState{ID: events.SystemWorkspace, Head: events.Head{Version: 1}}
	keysWrite := &Grantor{Permissions: []events.Permission{events.PermKeysWrite}}
	admin := &Grantor{Admin: true, Permissions: []events.Permission{events.PermAdmin}}
	perms := func(s ...events.Permission) []events.Permission { return s }

	for _, tc := range []struct {
		name    string
		ws      events.WorkspaceState
		added   []events.Permission
		by      *Grantor
		invalid string // the value of a *ValidationError, and a text its message must hold
		hint    string
		grant   events.Permission // the permission of a *GrantError
	}{
		{name: "PlatformPermissions", ws: acme, added: perms("messages.send", "users.track"), by: keysWrite},
		{name: "OwnRegistryPermission", ws: acme, added: perms(events.PermKeysWrite), by: keysWrite},
		{name: "WorkspacePermission", ws: acme, added: perms("reports.weekly"), by: keysWrite},
		{name: "ErrForbidden/audit", ws: acme, added: perms("users.track", events.PermAuditRead), by: keysWrite, grant: events.PermAuditRead},
		{name: "ErrForbidden/events", ws: acme, added: perms(events.PermEventsRead), by: keysWrite, grant: events.PermEventsRead},
		{name: "ErrForbidden/keys.read", ws: acme, added: perms(events.PermKeysRead), by: keysWrite, grant: events.PermKeysRead},
		{name: "ErrForbidden/verify", ws: acme, added: perms(events.PermVerify), by: keysWrite, grant: events.PermVerify},
		{name: "ErrForbidden/admin", ws: system, added: perms(events.PermAdmin), by: keysWrite, grant: events.PermAdmin},
		{name: "AdminGrantsAll", ws: acme, added: perms(events.PermAuditRead, events.PermEventsRead, events.PermKeysRead), by: admin},
		{name: "NoGrantor", ws: system, added: perms(events.PermAdmin)},
		{name: "AdminInSystem", ws: system, added: perms(events.PermAdmin), by: admin},
		{name: "ErrInvalid/AdminOutsideSystem", ws: acme, added: perms(events.PermAdmin), by: admin, invalid: "keyreg.admin", hint: "only on keys of workspace system"},
		{name: "ErrInvalid/Typo", ws: acme, added: perms("users.trak"), by: admin, invalid: "users.trak", hint: "did you mean users.track?"},
		{name: "ErrInvalid/RegistryTypo", ws: acme, added: perms("keyreg.admn"), by: admin, invalid: "keyreg.admn", hint: "did you mean keyreg.admin?"},
		{name: "ErrInvalid/WorkspaceTypo", ws: acme, added: perms("reports.weekyl"), by: admin, invalid: "reports.weekyl", hint: "did you mean reports.weekly?"},
		{name: "ErrInvalid/OtherWorkspace", ws: system, added: perms("reports.weekly"), by: admin, invalid: "reports.weekly", hint: "unknown permission"},
		{name: "ErrInvalid/FarFromAll", ws: acme, added: perms("zzz.qqq"), by: admin, invalid: "zzz.qqq", hint: "see GET /v1/permissions"},
		{name: "ErrInvalid/BeforeForbidden", ws: acme, added: perms(events.PermAuditRead, "users.trak"), by: keysWrite, invalid: "users.trak", hint: "users.track"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkGrants(tc.ws, tc.added, tc.by)
			var ve *events.ValidationError
			var ge *GrantError
			switch {
			case tc.invalid != "":
				if !errors.As(err, &ve) || ve.Field != "permissions" || ve.Value != tc.invalid || !strings.Contains(ve.Error(), tc.hint) {
					t.Fatalf("got %v; want invalid permissions %q saying %q", err, tc.invalid, tc.hint)
				}
			case tc.grant != "":
				if !errors.As(err, &ge) || ge.Permission != tc.grant || !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), string(tc.grant)) {
					t.Fatalf("got %v; want a GrantError for %s", err, tc.grant)
				}
			case err != nil:
				t.Fatalf("got %v; want no error", err)
			}
		})
	}
}

func TestDecideDefinePermission(t *testing.T) {
	c := definePermission{ws: "acme", name: "reports.weekly", description: "Weekly reports"}
	changes, err := c.decide(testWorkspace)
	wantChanges(t, changes, err, change{ws: "acme", agg: events.AggWorkspace, id: "acme", expect: 1, prevHash: "last-1",
		payload: events.PermissionDefined{Name: "reports.weekly", Description: "Weekly reports"}})

	defined := testWorkspace
	defined.Permissions = []events.PermissionInfo{{Name: "reports.weekly", Description: "Weekly reports", Group: events.GroupWorkspace, Workspace: "acme"}}
	changes, err = c.decide(defined)
	wantChanges(t, changes, err) // the same again: nothing

	c.description = "Something else"
	_, err = c.decide(defined)
	wantErr(t, err, ErrAlreadyExists)
	_, err = c.decide(events.WorkspaceState{})
	wantErr(t, err, events.ErrNotFound)
}

func TestDefinePermissionValidation(t *testing.T) {
	for _, tc := range []struct {
		name, perm, desc, field string
	}{
		{"Registry", "keyreg.reports", "d", "name"},
		{"BuiltIn", "users.track", "d", "name"},
		{"Syntax", "Reports Weekly", "d", "name"},
		{"NoDot", "reports", "d", "name"},
		{"Description", "reports.weekly", "a\u202eb", "description"},
		{"EmptyDescription", "reports.weekly", " ", "description"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DefinePermission{Workspace: "acme", Name: tc.perm, Description: tc.desc}.validate()
			var ve *events.ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("got %v; want invalid %s", err, tc.field)
			}
		})
	}
}

// TestLeastPrivilege runs the grant rules through the handler, on both logs: what is
// refused appends nothing.
func TestLeastPrivilege(t *testing.T) {
	forEachLog(t, func(t *testing.T, h *Handler) {
		ctx := testCtx(t)
		mustWorkspace(t, h, "acme")
		mustWorkspace(t, h, "beta")
		keysWrite := &Grantor{Permissions: []events.Permission{events.PermKeysWrite}}
		key := mustKey(t, h, "acme")

		for _, p := range []events.Permission{events.PermAuditRead, events.PermEventsRead, events.PermKeysRead} {
			before := lastSeq(t, h.Log)
			_, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "escalate", Permissions: []string{string(p)}, By: keysWrite})
			var ge *GrantError
			if !errors.As(err, &ge) || ge.Permission != p {
				t.Fatalf("create with %s: %v; want a GrantError", p, err)
			}
			perms := []string{"users.track", string(p)}
			_, err = h.UpdateKey(ctx, UpdateKey{Workspace: "acme", KeyID: key.ID, Permissions: &perms, By: keysWrite})
			if !errors.As(err, &ge) || ge.Permission != p {
				t.Fatalf("update to %s: %v; want a GrantError", p, err)
			}
			if after := lastSeq(t, h.Log); after != before {
				t.Fatalf("a refused grant of %s appended: last sequence %d -> %d", p, before, after)
			}
		}
		if _, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "ok", By: keysWrite,
			Permissions: []string{string(events.PermKeysWrite), "users.track", "messages.send"}}); err != nil {
			t.Fatalf("grant of held and platform permissions: %v", err)
		}

		// A workspace's own permission: grantable there once defined, and only there.
		_, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "early", Permissions: []string{"reports.weekly"}})
		wantErr(t, err, events.ErrInvalid)
		if _, err := h.DefinePermission(ctx, DefinePermission{Workspace: "acme", Name: "reports.weekly", Description: "Weekly reports"}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.CreateKey(ctx, CreateKey{Workspace: "acme", Name: "reports", Permissions: []string{"reports.weekly"}, By: keysWrite}); err != nil {
			t.Fatalf("grant of a defined workspace permission: %v", err)
		}
		_, err = h.CreateKey(ctx, CreateKey{Workspace: "beta", Name: "reports", Permissions: []string{"reports.weekly"}})
		wantErr(t, err, events.ErrInvalid)

		// Another handler that cached acme before the definition still sees it.
		other := &Handler{Log: h.Log}
		if _, err := other.CreateKey(ctx, CreateKey{Workspace: "beta", Name: "warm"}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.DefinePermission(ctx, DefinePermission{Workspace: "beta", Name: "reports.daily", Description: "Daily reports"}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.CreateKey(ctx, CreateKey{Workspace: "beta", Name: "daily", Permissions: []string{"reports.daily"}}); err != nil {
			t.Fatalf("a handler with a stale cache refused a defined permission: %v", err)
		}
	})
}

// TestKeepsRetiredPermission checks that a key keeps a permission the catalogue no longer
// has: only the permissions a change adds are checked.
func TestKeepsRetiredPermission(t *testing.T) {
	h := &Handler{Log: newLog(t)}
	ctx := testCtx(t)
	mustWorkspace(t, h, "acme")
	key := mustKey(t, h, "acme")
	// Written as an older version would have, without the catalogue check.
	c := updatePermissions{ws: "acme", id: key.ID, permissions: []events.Permission{"feed.list", "users.track"}}
	k := keyState(t, h, "acme", key.ID)
	changes, err := c.decide(k, events.WorkspaceState{ID: "acme", Permissions: []events.PermissionInfo{{Name: "feed.list"}}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := messages(changes, events.NewID(), events.Meta{}, h.now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Log.Append(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if _, err := h.UpdatePermissions(ctx, UpdatePermissions{Workspace: "acme", KeyID: key.ID,
		Permissions: []string{"feed.list", "users.track", "messages.send"}}); err != nil {
		t.Fatalf("a change that keeps an unknown permission: %v", err)
	}
	_, err = h.UpdatePermissions(ctx, UpdatePermissions{Workspace: "acme", KeyID: key.ID, Permissions: []string{"feed.list", "feed.details"}})
	wantErr(t, err, events.ErrInvalid)
}
