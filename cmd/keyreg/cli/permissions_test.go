package cli

import (
	"slices"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func TestPermissionCommands(t *testing.T) {
	h := keyFixture(t)
	out := h.ok("permissions")
	contains(t, "permissions", out, "PERMISSION", "GROUP", "DESCRIPTION", "users.track", "Record user attributes",
		"kpi.dau.data_series", "keyreg.keys.write", "keyreg.verify")

	var list wire.PermissionList
	h.okJSON(&list, "permissions")
	names := func(l wire.PermissionList) []string {
		var out []string
		for _, p := range l.Permissions {
			out = append(out, p.Name)
		}
		return out
	}
	if !slices.Contains(names(list), "users.alias.new") || slices.Contains(names(list), "reports.weekly") {
		t.Errorf("permissions --json = %v", names(list))
	}

	contains(t, "permission add", h.ok("permission", "add", "-w", "acme", "reports.weekly", "--description", "Read the weekly reports"),
		"Defined permission reports.weekly in workspace acme", "workspace acme", "Read the weekly reports")
	h.okJSON(&list, "permissions", "-w", "acme")
	if !slices.Contains(names(list), "reports.weekly") {
		t.Errorf("permissions -w acme --json lacks reports.weekly: %v", names(list))
	}
	contains(t, "permission list", h.ok("permission", "list", "-w", "acme"), "reports.weekly", "workspace acme")
	h.ok("key", "create", "-w", "acme", "--name", "Reports", "--permission", "reports.weekly")

	h.fails(1, []string{"400 invalid_input", "did you mean users.track?"}, "key", "create", "-w", "acme", "--name", "x", "--permission", "users.trak")
	h.fails(1, []string{"400 invalid_input", "built-in"}, "permission", "add", "-w", "acme", "users.track", "--description", "x")
	h.fails(1, []string{"404"}, "permissions", "-w", "nowhere")
	h.fails(2, []string{`"description"`}, "permission", "add", "-w", "acme", "reports.daily")
}
