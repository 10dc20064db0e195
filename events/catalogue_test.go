package events_test

import (
	"strings"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// TestCatalogue checks the built-in table: names unique and valid, each with a one-line
// description and a group, the registry's permissions all there.
func TestCatalogue(t *testing.T) {
	seen := map[events.Permission]bool{}
	cat := events.Catalogue()
	for _, p := range cat {
		if seen[p.Name] {
			t.Errorf("%s is listed twice", p.Name)
		}
		seen[p.Name] = true
		if _, err := events.ParsePermission(string(p.Name)); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
		if p.Description == "" || strings.ContainsAny(p.Description, "\n\t") || p.Group == "" || p.Workspace != "" {
			t.Errorf("%s: bad entry %+v", p.Name, p)
		}
		if p.Name.IsRegistry() != (p.Group == events.GroupRegistry) {
			t.Errorf("%s: group %q", p.Name, p.Group)
		}
		if got, ok := events.LookupPermission(p.Name); !ok || got != p {
			t.Errorf("LookupPermission(%s) = %+v, %v", p.Name, got, ok)
		}
	}
	for _, p := range []events.Permission{"users.track", "users.delete", "users.alias.new", "users.identify", "users.export.ids",
		"users.merge", "messages.send", "campaigns.trigger.send", "canvas.trigger.send", "segments.list", "templates.email.create",
		"content_blocks.list", "kpi.dau.data_series", "sends.id.create", "subscription.status.set", "catalogs.get_items",
		events.PermAdmin, events.PermKeysRead, events.PermKeysWrite, events.PermIdentifiersRead, events.PermIdentifiersWrite,
		events.PermAuditRead, events.PermEventsRead, events.PermVerify} {
		if !seen[p] {
			t.Errorf("the catalogue lacks %s", p)
		}
	}
	cat[0].Name = "changed.by.caller"
	if _, ok := events.LookupPermission("changed.by.caller"); ok {
		t.Error("Catalogue returned the table itself, not a copy")
	}
}

func TestSuggestPermission(t *testing.T) {
	own := []events.PermissionInfo{{Name: "reports.weekly"}}
	for _, tc := range []struct {
		in   events.Permission
		want events.Permission
	}{
		{"users.trak", "users.track"},
		{"users.trakc", "users.track"},
		{"userstrack", "users.track"},
		{"keyreg.admn", "keyreg.admin"},
		{"keyreg.keys.wirte", "keyreg.keys.write"},
		{"messages.sned", "messages.send"},
		{"reports.weekyl", "reports.weekly"},
		{"zzz.qqq", ""},
		{"users.export", ""},
	} {
		got, ok := events.SuggestPermission(tc.in, own)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("SuggestPermission(%s) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
	if !events.KnownPermission("reports.weekly", own) || events.KnownPermission("reports.weekly", nil) || !events.KnownPermission("users.track", nil) {
		t.Error("KnownPermission does not look in the catalogue and the workspace's own")
	}
}
