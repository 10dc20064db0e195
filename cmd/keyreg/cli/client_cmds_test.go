package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func TestWorkspaceCommands(t *testing.T) {
	h := startServer(t)
	out := h.ok("workspace", "create", "acme", "--name", "Acme Inc", "--reason", "new customer")
	contains(t, "workspace create", out, "Created workspace acme", "Acme Inc")

	var ws wire.Workspace
	h.okJSON(&ws, "workspace", "create", "globex", "--name", "Globex")
	if ws.ID != "globex" || ws.Name != "Globex" || ws.Version == 0 {
		t.Errorf("workspace create --json = %+v", ws)
	}

	contains(t, "workspace list", h.ok("workspace", "list"), "ID", "NAME", "acme", "Acme Inc", "globex", "system")
	var list struct{ Workspaces []wire.Workspace }
	h.okJSON(&list, "workspace", "list")
	if len(list.Workspaces) != 3 {
		t.Errorf("workspace list --json = %+v, want 3 workspaces", list)
	}

	h.fails(1, []string{"409 already_exists", `workspace "acme" already exists`}, "workspace", "create", "acme", "--name", "Again")
	h.fails(1, []string{"400 invalid_input", "workspace", `"Bad_ID"`}, "workspace", "create", "Bad_ID", "--name", "x")
	h.fails(2, []string{`"name"`}, "workspace", "create", "initech")
	h.fails(2, []string{"accepts 1 arg"}, "workspace", "create", "--name", "x")
}

// keyFixture creates workspace acme and returns the harness.
func keyFixture(t *testing.T) *harness {
	t.Helper()
	h := startServer(t)
	h.ok("workspace", "create", "acme", "--name", "Acme Inc")
	return h
}

func TestKeyCommands(t *testing.T) {
	h := keyFixture(t)

	// create, human and --json
	out := h.ok("key", "create", "-w", "acme", "--name", "Prod server", "--permission", "users.track",
		"--permission", "messages.send", "--allow", "203.0.113.0/24", "--allow", "2001:db8::/32", "--expires-in", "720h")
	contains(t, "key create", out, "Created key", "Prod server", "users.track", "203.0.113.0/24", "2001:db8::/32",
		"never again", "kr_")
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	var created wire.KeyWithSecret
	h.okJSON(&created, "key", "create", "--workspace", "acme", "--name", "CI", "--permission", "users.track,users.export.ids",
		"--expires-at", expires.Format(time.RFC3339))
	k := created.Key
	if !strings.HasPrefix(created.Secret, "kr_") || k.Name != "CI" || k.Status != "active" || len(k.Allowlist) != 0 ||
		strings.Join(k.Permissions, " ") != "users.export.ids users.track" || k.ExpiresAt == nil || !k.ExpiresAt.Equal(expires) {
		t.Fatalf("key create --json = %+v", created)
	}
	id := k.ID

	// list and show
	contains(t, "key list", h.ok("key", "list", "-w", "acme"), "ID", "NAME", "STATUS", "PERMISSIONS", "ALLOWLIST", "VERSION",
		id, "CI", "Prod server", "active", "users.export.ids,users.track", "203.0.113.0/24,2001:db8::/32", "any")
	var keys struct{ Keys []wire.Key }
	h.okJSON(&keys, "key", "list", "-w", "acme")
	if len(keys.Keys) != 2 {
		t.Errorf("key list --json = %+v, want 2 keys", keys)
	}
	contains(t, "key show", h.ok("key", "show", "-w", "acme", id), id, "CI", "users.export.ids, users.track", "any address",
		expires.Format(time.RFC3339))
	var shown wire.Key
	h.okJSON(&shown, "key", "show", "-w", "acme", id)
	if shown.ID != id || shown.Version != k.Version {
		t.Errorf("key show --json = %+v, want %+v", shown, k)
	}

	// update: only the given fields; If-Match
	var updated wire.Key
	h.okJSON(&updated, "key", "update", "-w", "acme", id, "--name", "CI runner", "--no-expiry", "--if-match", fmtVersion(k.Version))
	if updated.Name != "CI runner" || updated.ExpiresAt != nil || len(updated.Permissions) != 2 || updated.Version <= k.Version {
		t.Errorf("key update --name --no-expiry = %+v", updated)
	}
	h.fails(1, []string{"412 precondition_failed"}, "key", "update", "-w", "acme", id, "--name", "stale", "--if-match", fmtVersion(k.Version))
	h.okJSON(&updated, "key", "update", "-w", "acme", id, "--permission", "messages.send")
	if strings.Join(updated.Permissions, " ") != "messages.send" || updated.Name != "CI runner" {
		t.Errorf("key update --permission = %+v", updated)
	}
	contains(t, "key update --no-permissions", h.ok("key", "update", "-w", "acme", id, "--no-permissions", "--expires-in", "24h"),
		"Updated key "+id, "Permissions:  none")
	h.fails(2, []string{"nothing to change"}, "key", "update", "-w", "acme", id)
	h.fails(2, []string{"if any flags in the group"}, "key", "update", "-w", "acme", id, "--expires-in", "1h", "--no-expiry")
	h.fails(2, []string{"--expires-at", "RFC 3339"}, "key", "update", "-w", "acme", id, "--expires-at", "tomorrow")

	// allowlist
	h.okJSON(&updated, "key", "allowlist", "-w", "acme", id, "--allow", "198.51.100.7", "--allow", "2001:db8::/48")
	if strings.Join(updated.Allowlist, " ") != "198.51.100.7/32 2001:db8::/48" {
		t.Errorf("key allowlist --allow = %v", updated.Allowlist)
	}
	contains(t, "key allowlist --any", h.ok("key", "allowlist", "-w", "acme", id, "--any"), "Allowlist:", "any address")
	h.fails(2, []string{"--allow", "--any"}, "key", "allowlist", "-w", "acme", id)

	// rotate: a new secret, shown once; the old one kept for the grace period
	var rotated wire.KeyWithSecret
	h.okJSON(&rotated, "key", "rotate", "-w", "acme", id, "--grace", "24h")
	if !strings.HasPrefix(rotated.Secret, "kr_") || rotated.Secret == created.Secret || rotated.Key.PreviousSecretValidUntil == nil {
		t.Errorf("key rotate --grace 24h = %+v", rotated)
	}
	contains(t, "key rotate", h.ok("key", "rotate", "-w", "acme", id), "Rotated key "+id, "never again", "kr_")
	h.fails(2, []string{"--grace"}, "key", "rotate", "-w", "acme", id, "--grace", "-1s")

	// revoke, then no further change
	contains(t, "key revoke", h.ok("key", "revoke", "-w", "acme", id, "--reason", "secret leaked in a CI log"), "Revoked key "+id, "revoked")
	h.fails(1, []string{"409 key_revoked"}, "key", "update", "-w", "acme", id, "--name", "zombie")
	contains(t, "key list --status revoked", h.ok("key", "list", "-w", "acme", "--status", "revoked"), id)
	if out := h.ok("key", "list", "-w", "acme", "--status", "active"); strings.Contains(out, id) {
		t.Errorf("key list --status active shows the revoked key:\n%s", out)
	}
	h.fails(1, []string{"400 invalid_input", "status"}, "key", "list", "-w", "acme", "--status", "bogus")

	// history
	hist := h.ok("key", "history", "-w", "acme", id)
	contains(t, "key history", hist, "SEQ", "CHANGE", "created", "renamed", "expiry_changed", "permissions_updated",
		"allowlist_updated", "secret_rotated", "revoked", "secret leaked in a CI log", "127.0.0.1")
	if strings.Contains(hist, "secret_hash") {
		t.Errorf("key history shows secret hashes:\n%s", hist)
	}
	var page client.History
	h.okJSON(&page, "key", "history", "-w", "acme", id)
	if len(page.Events) != 11 || page.Next != 0 || !strings.Contains(string(page.Events[0].Event), `"keyreg.key.created.v1"`) {
		t.Errorf("key history --json: %d events, next %d", len(page.Events), page.Next)
	}
	first := h.ok("key", "history", "-w", "acme", id, "--limit", "3")
	m := regexp.MustCompile(`--after (\d+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("key history --limit 3 names no next page:\n%s", first)
	}
	h.okJSON(&page, "key", "history", "-w", "acme", id, "--after", m[1], "--limit", "100")
	if len(page.Events) != 8 {
		t.Errorf("key history --after %s: %d events, want 8", m[1], len(page.Events))
	}

	h.fails(1, []string{"404 not_found"}, "key", "show", "-w", "acme", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
	h.fails(1, []string{"400 invalid_input", "key_id"}, "key", "show", "-w", "acme", "01JDX3NOSUCHKEY0000000000") // not a ULID: O and U are not in its alphabet
	h.fails(2, []string{`unknown command "bogus"`}, "key", "bogus")
}

func TestKeyCreateIdempotencyKey(t *testing.T) {
	h := keyFixture(t)
	var a, b wire.KeyWithSecret
	h.okJSON(&a, "key", "create", "-w", "acme", "--name", "once", "--idempotency-key", "req-1")
	h.okJSON(&b, "key", "create", "-w", "acme", "--name", "once", "--idempotency-key", "req-1")
	if a.Key.ID != b.Key.ID {
		t.Errorf("two creates with one idempotency key made keys %s and %s", a.Key.ID, b.Key.ID)
	}
	h.fails(1, []string{"409 idempotency_key_reused"}, "key", "create", "-w", "acme", "--name", "other", "--idempotency-key", "req-1")
}

func TestBadAllowlist(t *testing.T) {
	h := keyFixture(t)
	want := []string{"400 invalid_input", "allowlist", `"10.0.0.0/33"`}
	h.fails(1, want, "key", "create", "-w", "acme", "--name", "bad", "--allow", "10.0.0.0/33")
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "good")
	h.fails(1, want, "key", "allowlist", "-w", "acme", k.Key.ID, "--allow", "203.0.113.0/24", "--allow", "10.0.0.0/33")
}

func TestWorkspaceFlag(t *testing.T) {
	h := keyFixture(t)
	for _, args := range [][]string{
		{"key", "list"}, {"key", "create", "--name", "x"}, {"key", "show", "ID"}, {"identifier", "list"},
		{"identifier", "register", "--kind", "segment", "--name", "x"},
	} {
		r := h.fails(2, []string{"-w/--workspace", "KEYREG_WORKSPACE"}, args...)
		contains(t, "usage error", r.stderr, "--help")
	}
	env := map[string]string{"KEYREG_WORKSPACE": "acme"}
	for k, v := range h.env {
		env[k] = v
	}
	if r := h.runWith(env, "", "key", "list"); r.code != 0 {
		t.Errorf("key list with KEYREG_WORKSPACE: exit %d, %s", r.code, r.stderr)
	}
	// The flag wins over the environment.
	env["KEYREG_WORKSPACE"] = "nosuch"
	if r := h.runWith(env, "", "key", "list", "-w", "acme"); r.code != 0 {
		t.Errorf("key list -w acme: exit %d, %s", r.code, r.stderr)
	}
}

func TestVerify(t *testing.T) {
	h := keyFixture(t)
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "edge", "--permission", "users.track", "--allow", "203.0.113.0/24")
	secret := k.Secret + "\n"
	keyFile := filepath.Join(t.TempDir(), "edge.key")
	if err := os.WriteFile(keyFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}

	r := h.runIn(secret, "verify", "--ip", "203.0.113.7", "--permission", "users.track")
	if r.code != 0 || r.stdout != "VALID\n" || r.stderr != "" {
		t.Errorf("verify from an allowed address: %+v", r)
	}
	r = h.check(h.runIn(secret, "verify", "--ip", "198.51.100.1"), 1, []string{"IP_NOT_ALLOWED", "allowlist"}, nil)
	if r.stdout != "IP_NOT_ALLOWED\n" {
		t.Errorf("verify from a refused address printed %q", r.stdout)
	}
	r = h.check(h.run("verify", "--ip", "203.0.113.7", "--permission", "messages.send", "--key-file", keyFile), 1, []string{"PERMISSION_DENIED"}, nil)
	if r.stdout != "PERMISSION_DENIED\n" {
		t.Errorf("verify without the permission printed %q", r.stdout)
	}
	if r := h.run("verify", "--ip", "203.0.113.7", "--key", k.Secret); r.code != 0 {
		t.Errorf("verify --key: %+v", r)
	}
	var v wire.VerifyResponse
	h.okJSON(&v, "verify", "--ip", "203.0.113.9", "--key-file", keyFile)
	if !v.Valid || v.Code != "VALID" || v.KeyID != k.Key.ID || v.Workspace != "acme" || len(v.Permissions) != 1 {
		t.Errorf("verify --json = %+v", v)
	}
	if v.AppliedSeq < k.Key.Version {
		t.Errorf("verify --json: applied_seq %d, before the key's version %d", v.AppliedSeq, k.Key.Version)
	}
	// verify needs a registry key with keyreg.verify, and answers for its workspace only.
	h.check(h.runWith(map[string]string{"KEYREG_ADDR": h.env["KEYREG_ADDR"]}, secret, "verify", "--ip", "203.0.113.7"), 1, []string{"401 unauthorized"}, nil)
	var gw, other, plain wire.KeyWithSecret
	h.okJSON(&plain, "key", "create", "-w", "acme", "--name", "plain", "--permission", "users.track")
	h.okJSON(&gw, "key", "create", "-w", "acme", "--name", "gateway", "--permission", "keyreg.verify")
	h.ok("workspace", "create", "beta", "--name", "Beta")
	h.okJSON(&other, "key", "create", "-w", "beta", "--name", "gateway", "--permission", "keyreg.verify")
	asGateway := map[string]string{"KEYREG_ADDR": h.env["KEYREG_ADDR"], "KEYREG_TOKEN": gw.Secret}
	if r := h.runWith(asGateway, secret, "verify", "--ip", "203.0.113.7"); r.code != 0 || r.stdout != "VALID\n" {
		t.Errorf("verify with a keyreg.verify key of the workspace: %+v", r)
	}
	h.check(h.runWith(map[string]string{"KEYREG_ADDR": h.env["KEYREG_ADDR"], "KEYREG_TOKEN": other.Secret}, secret, "verify", "--ip", "203.0.113.7"),
		1, []string{"NOT_FOUND"}, nil)
	h.check(h.runWith(map[string]string{"KEYREG_ADDR": h.env["KEYREG_ADDR"], "KEYREG_TOKEN": plain.Secret}, secret, "verify", "--ip", "203.0.113.7"),
		1, []string{"403 forbidden", "keyreg.verify"}, nil)
	h.check(h.runIn("kr_nope\n", "verify", "--ip", "203.0.113.7"), 1, []string{"MALFORMED"}, nil)

	h.fails(2, []string{"no key"}, "verify", "--ip", "203.0.113.7")
	h.fails(2, []string{`"ip"`}, "verify", "--key-file", keyFile)
	h.fails(1, []string{"400 invalid_input", "ip"}, "verify", "--ip", "not-an-ip", "--key-file", keyFile)
	h.fails(1, []string{"key file"}, "verify", "--ip", "203.0.113.7", "--key-file", filepath.Join(t.TempDir(), "missing"))

	h.ok("key", "revoke", "-w", "acme", k.Key.ID)
	r = h.check(h.runIn(secret, "verify", "--ip", "203.0.113.7"), 1, []string{"REVOKED"}, nil)
	if r.stdout != "REVOKED\n" {
		t.Errorf("verify of a revoked key printed %q", r.stdout)
	}
}

func TestTokens(t *testing.T) {
	h := keyFixture(t)
	with := func(token string) map[string]string {
		return map[string]string{"KEYREG_ADDR": h.env["KEYREG_ADDR"], "KEYREG_TOKEN": token}
	}
	h.check(h.runWith(with("kr_wrong"), "", "workspace", "list"), 1, []string{"401 unauthorized"}, nil)
	h.check(h.runWith(with(""), "", "workspace", "list"), 1, []string{"401 unauthorized", "missing bearer token"}, nil)

	// --token wins over $KEYREG_TOKEN.
	if r := h.runWith(with("kr_wrong"), "", "workspace", "list", "--token", h.env["KEYREG_TOKEN"]); r.code != 0 {
		t.Errorf("workspace list --token: %+v", r)
	}

	// A key of workspace acme that may only read keys.
	var reader wire.KeyWithSecret
	h.okJSON(&reader, "key", "create", "-w", "acme", "--name", "auditor", "--permission", "keyreg.keys.read")
	r := h.runWith(with(reader.Secret), "", "workspace", "list")
	if r.code != 0 || !strings.Contains(r.stdout, "acme") || strings.Contains(r.stdout, "system") {
		t.Errorf("workspace list as a workspace key: %+v", r)
	}
	if r := h.runWith(with(reader.Secret), "", "key", "list", "-w", "acme"); r.code != 0 {
		t.Errorf("key list with keyreg.keys.read: %+v", r)
	}
	r = h.check(h.runWith(with(reader.Secret), "", "key", "create", "-w", "acme", "--name", "x"), 1, []string{"403 forbidden", "keyreg.keys.write"}, nil)
	if strings.Contains(r.stderr, reader.Secret) {
		t.Errorf("the error shows the token: %q", r.stderr)
	}
	h.ok("key", "revoke", "-w", "acme", reader.Key.ID)
	h.check(h.runWith(with(reader.Secret), "", "key", "list", "-w", "acme"), 1, []string{"401 unauthorized", "revoked"}, nil)
}

func TestUnreachableServer(t *testing.T) {
	h := &harness{t: t, env: map[string]string{"KEYREG_ADDR": "http://127.0.0.1:1", "KEYREG_TOKEN": "kr_secret"}}
	h.fails(1, []string{"cannot reach keyreg at http://127.0.0.1:1"}, "workspace", "list")
	h.fails(1, []string{"cannot reach keyreg at http://127.0.0.1:2"}, "workspace", "list", "--addr", "127.0.0.1:2")
}

func TestIdentifierCommands(t *testing.T) {
	h := keyFixture(t)
	out := h.ok("identifier", "register", "-w", "acme", "--kind", "segment", "--name", "Summer Sale")
	contains(t, "identifier register", out, "Registered segment", "Summer Sale")
	var app wire.Identifier
	h.okJSON(&app, "identifier", "register", "-w", "acme", "--kind", "app", "--name", "Acme iOS", "--platform", "ios")
	if app.Kind != "app" || app.Platform != "ios" || app.Status != "active" {
		t.Errorf("identifier register --json = %+v", app)
	}
	h.ok("identifier", "register", "-w", "acme", "--kind", "segment", "--name", "Winter Sale")
	h.fails(1, []string{"409 name_taken"}, "identifier", "register", "-w", "acme", "--kind", "segment", "--name", "summer sale")
	h.fails(1, []string{"400 invalid_input", "kind", `"planet"`}, "identifier", "register", "-w", "acme", "--kind", "planet", "--name", "Mars")
	h.fails(2, []string{`"kind"`}, "identifier", "register", "-w", "acme", "--name", "x")

	contains(t, "identifier list", h.ok("identifier", "list", "-w", "acme"), "ID", "KIND", "NAME", "PLATFORM",
		app.ID, "Acme iOS", "ios", "Summer Sale", "Winter Sale")
	var list struct{ Identifiers []wire.Identifier }
	h.okJSON(&list, "identifier", "list", "-w", "acme", "--kind", "segment", "--q", "SUM")
	if len(list.Identifiers) != 1 || list.Identifiers[0].Name != "Summer Sale" {
		t.Errorf("identifier list --kind segment --q SUM = %+v", list)
	}

	contains(t, "identifier show", h.ok("identifier", "show", "-w", "acme", app.ID), app.ID, "Acme iOS", "Platform:", "ios")
	var renamed wire.Identifier
	h.okJSON(&renamed, "identifier", "rename", "-w", "acme", app.ID, "--name", "Acme iPhone", "--if-match", fmtVersion(app.Version))
	if renamed.Name != "Acme iPhone" || renamed.Version <= app.Version {
		t.Errorf("identifier rename = %+v", renamed)
	}
	h.fails(1, []string{"412 precondition_failed"}, "identifier", "rename", "-w", "acme", app.ID, "--name", "x", "--if-match", fmtVersion(app.Version))
	h.fails(2, []string{`"name"`}, "identifier", "rename", "-w", "acme", app.ID)

	contains(t, "identifier retire", h.ok("identifier", "retire", "-w", "acme", app.ID, "--reason", "app sunset"), "Retired app", "retired")
	if out := h.ok("identifier", "list", "-w", "acme"); strings.Contains(out, app.ID) {
		t.Errorf("identifier list shows a retired identifier:\n%s", out)
	}
	h.fails(1, []string{"409 identifier_retired"}, "identifier", "rename", "-w", "acme", app.ID, "--name", "Again")
	h.fails(1, []string{"404 not_found"}, "identifier", "show", "-w", "acme", "01ARZ3NDEKTSV4RRFFQ69G5FAW")
}

// TestHelpExamples checks that every command's --help shows examples.
func TestHelpExamples(t *testing.T) {
	h := &harness{t: t}
	root := newRoot(func(string) string { return "" }, nil, nil, nil)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			args := append(strings.Fields(sub.CommandPath())[1:], "--help")
			r := h.run(args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || sub.Short == "" {
				t.Errorf("keyreg %s: exit %d, no examples or no Short:\n%s", strings.Join(args, " "), r.code, r.stdout)
			}
			walk(sub)
		}
	}
	walk(root)
}
