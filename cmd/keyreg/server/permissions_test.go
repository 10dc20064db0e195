package server_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// TestLeastPrivilege checks over HTTP that a key grants only the keyreg.* permissions it
// holds: a key with only keyreg.keys.write cannot make or change a key to read the audit
// log, events or keys (403 naming the permission, nothing appended), and can grant what
// it holds and the platform's permissions.
func TestLeastPrivilege(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	writeOnly := f.createKey(map[string]any{"name": "write only", "permissions": []string{"keyreg.keys.write"}}).Secret
	target := f.createKey(map[string]any{"name": "target", "permissions": []string{"users.track"}})
	keys := "/v1/workspaces/acme/keys"

	for _, p := range []string{"keyreg.audit.read", "keyreg.events.read", "keyreg.keys.read", "keyreg.verify"} {
		for _, req := range []struct{ method, path string }{{"POST", keys}, {"PATCH", keys + "/" + target.Key.ID}} {
			before := n.lastSeq()
			body := map[string]any{"permissions": []string{"users.track", p}}
			if req.method == "POST" {
				body["name"] = "escalate"
			}
			st, _, b := n.do(req.method, req.path, writeOnly, body)
			var pb problemBody
			json.Unmarshal(b, &pb)
			if st != 403 || pb.Code != "forbidden" || pb.Field != "permissions" || pb.Value != p || !strings.Contains(pb.Detail, p) {
				t.Errorf("%s %s granting %s: %d %s; want 403 naming %s", req.method, req.path, p, st, b, p)
			}
			if after := n.lastSeq(); after != before {
				t.Errorf("%s granting %s moved the stream from %d to %d", req.method, p, before, after)
			}
		}
	}
	var ok wire.KeyWithSecret
	n.json("POST", keys, writeOnly, map[string]any{"name": "ok", "permissions": []string{"keyreg.keys.write", "users.track", "messages.send"}}, 201, &ok)
	if !slices.Equal(ok.Key.Permissions, []string{"keyreg.keys.write", "messages.send", "users.track"}) {
		t.Errorf("permissions %v", ok.Key.Permissions)
	}
	// The admin grants registry permissions it does not hold by name.
	n.json("POST", keys, n.root, map[string]any{"name": "reader", "permissions": []string{"keyreg.audit.read", "keyreg.events.read"}}, 201, nil)
}

// TestPermissionCatalogue checks that only catalogue permissions (and the workspace's own)
// are granted, with the closest one named, and that GET /v1/permissions lists them.
func TestPermissionCatalogue(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	newFixture(t, n, "beta")
	writeOnly := f.createKey(map[string]any{"name": "write only", "permissions": []string{"keyreg.keys.write"}}).Secret

	refused := func(path, token string, body any, field, value, says string) {
		t.Helper()
		before := n.lastSeq()
		st, _, b := n.do("POST", path, token, body)
		var pb problemBody
		json.Unmarshal(b, &pb)
		if st != 400 || pb.Field != field || pb.Value != value || !strings.Contains(pb.Detail, says) {
			t.Errorf("POST %s %v: %d %s; want 400 for %s %q saying %q", path, body, st, b, field, value, says)
		}
		if after := n.lastSeq(); after != before {
			t.Errorf("the stream moved from %d to %d", before, after)
		}
	}
	key := func(perms ...string) map[string]any { return map[string]any{"name": "k", "permissions": perms} }
	refused("/v1/workspaces/acme/keys", f.writer, key("users.trak"), "permissions", "users.trak", "did you mean users.track?")
	refused("/v1/workspaces/system/keys", n.root, key("keyreg.admn"), "permissions", "keyreg.admn", "did you mean keyreg.admin?")
	refused("/v1/workspaces/acme/keys", n.root, key("keyreg.admin"), "permissions", "keyreg.admin", "only on keys of workspace system")
	refused("/v1/workspaces/acme/keys", n.root, key("reports.weekly"), "permissions", "reports.weekly", "unknown permission")

	// A workspace's own permission.
	perms := "/v1/workspaces/acme/permissions"
	refused(perms, writeOnly, map[string]any{"name": "users.track", "description": "x"}, "name", "users.track", "built-in")
	refused(perms, writeOnly, map[string]any{"name": "keyreg.reports", "description": "x"}, "name", "keyreg.reports", "registry")
	refused(perms, writeOnly, map[string]any{"name": "Reports", "description": "x"}, "name", "Reports", "dotted lower case")
	var def wire.Permission
	n.json("POST", perms, writeOnly, map[string]any{"name": "reports.weekly", "description": "Read the weekly reports"}, 201, &def)
	if def != (wire.Permission{Name: "reports.weekly", Description: "Read the weekly reports", Group: "workspace", Workspace: "acme"}) {
		t.Errorf("defined %+v", def)
	}
	seq := n.lastSeq()
	n.json("POST", perms, writeOnly, map[string]any{"name": "reports.weekly", "description": "Read the weekly reports"}, 201, nil)
	if n.lastSeq() != seq {
		t.Error("defining the same permission again appended")
	}
	n.json("POST", perms, writeOnly, map[string]any{"name": "reports.weekly", "description": "Something else"}, 409, nil)
	// The definition is in the audit log, and its export.
	if st, _, b := n.do("GET", "/v1/workspaces/acme/audit/export?format=csv", f.writer, nil); st != 200 ||
		!strings.Contains(string(b), "workspace/acme,permission_defined") || !strings.Contains(string(b), "Read the weekly reports") {
		t.Errorf("audit export: %d %s", st, b)
	}
	n.json("POST", "/v1/workspaces/acme/keys", writeOnly, key("reports.weekly", "users.track"), 201, nil)
	refused("/v1/workspaces/beta/keys", n.root, key("reports.weekly"), "permissions", "reports.weekly", "unknown permission")
	refused("/v1/workspaces/acme/keys", writeOnly, key("reports.weekyl"), "permissions", "reports.weekyl", "did you mean reports.weekly?")

	// The catalogue, to any key; a workspace's own to its keys and admins only.
	list := func(path, token string) []wire.Permission {
		var out wire.PermissionList
		n.json("GET", path, token, nil, 200, &out)
		return out.Permissions
	}
	has := func(ps []wire.Permission, name string) bool {
		return slices.ContainsFunc(ps, func(p wire.Permission) bool { return p.Name == name })
	}
	plain := f.createKey(key("users.track")).Secret
	all := list("/v1/permissions", plain)
	for _, want := range []string{"users.track", "users.alias.new", "catalogs.get_items", "keyreg.admin", "keyreg.verify"} {
		if !has(all, want) {
			t.Errorf("GET /v1/permissions lacks %s", want)
		}
	}
	if has(all, "reports.weekly") {
		t.Error("GET /v1/permissions without workspace lists a workspace's own")
	}
	if !has(list("/v1/permissions?workspace=acme", plain), "reports.weekly") || !has(list("/v1/permissions?workspace=acme", n.root), "reports.weekly") {
		t.Error("GET /v1/permissions?workspace=acme lacks reports.weekly")
	}
	if has(list("/v1/permissions?workspace=beta", n.root), "reports.weekly") {
		t.Error("beta lists acme's permission")
	}
	n.json("GET", "/v1/permissions?workspace=beta", plain, nil, 404, nil)
	n.json("GET", "/v1/permissions", "", nil, 401, nil)
	n.json("POST", "/v1/workspaces/beta/permissions", writeOnly, map[string]any{"name": "x.y", "description": "x"}, 404, nil)
	n.json("POST", perms, plain, map[string]any{"name": "x.y", "description": "x"}, 403, nil)
}

// TestHonestNames checks that names cannot hide characters from a reviewer and are
// stored in NFC.
func TestHonestNames(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	for _, tc := range []struct{ path, token, body, says string }{
		{"/v1/workspaces/acme/keys", f.writer, `{"name":"txt.exe\u202Egpj"}`, "U+202E RIGHT-TO-LEFT OVERRIDE at position 8"},
		{"/v1/workspaces/acme/keys", f.writer, `{"name":"Prod\u200Bkey"}`, "U+200B ZERO WIDTH SPACE at position 5"},
		{"/v1/workspaces/acme/keys", f.writer, `{"name":"\uFEFFProd"}`, "U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1"},
		{"/v1/workspaces/acme/identifiers", f.writer, `{"kind":"segment","name":"VIP\u2066 users"}`, "U+2066 LEFT-TO-RIGHT ISOLATE at position 4"},
		{"/v1/workspaces", n.root, `{"id":"beta","name":"Beta\u200F"}`, "U+200F RIGHT-TO-LEFT MARK at position 5"},
	} {
		before := n.lastSeq()
		st, _, b := n.do("POST", tc.path, tc.token, tc.body)
		var pb problemBody
		json.Unmarshal(b, &pb)
		if st != 400 || pb.Field != "name" || !strings.Contains(pb.Detail, tc.says) {
			t.Errorf("POST %s %s: %d %s; want 400 for name saying %q", tc.path, tc.body, st, b, tc.says)
		}
		if strings.ContainsAny(string(b), "\u202E\u200B\uFEFF\u2066\u200F") {
			t.Errorf("the answer echoes the hidden character: %s", b)
		}
		if n.lastSeq() != before {
			t.Errorf("POST %s %s appended", tc.path, tc.body)
		}
	}
	k := f.createKey(map[string]any{"name": "Cafe\u0301"})
	if k.Key.Name != "Caf\u00e9" {
		t.Errorf("name %q (% x), want NFC %q", k.Key.Name, k.Key.Name, "Caf\u00e9")
	}
	var got wire.Key
	n.json("GET", "/v1/workspaces/acme/keys/"+k.Key.ID, f.writer, nil, 200, &got)
	if got.Name != "Caf\u00e9" {
		t.Errorf("stored name %q, want NFC", got.Name)
	}
}
