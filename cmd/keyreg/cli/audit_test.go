package cli

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
)

func TestAuditCommands(t *testing.T) {
	h := keyFixture(t)
	var k httpapi.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "Prod", "--allow", "203.0.113.0/24")
	h.ok("key", "allowlist", "-w", "acme", k.Key.ID, "--allow", "198.51.100.0/24", "--reason", "office moved")
	h.ok("key", "revoke", "-w", "acme", k.Key.ID, "--reason", "leaked")
	h.ok("key", "create", "-w", "acme", "--name", "Other")

	// audit log: a table with before and after; filters; --json.
	out := h.ok("audit", "log", "-w", "acme", "--key", k.Key.ID)
	contains(t, "audit log --key", out, "SEQ", "AGGREGATE", "CHANGE", "BEFORE", "AFTER", "key/"+k.Key.ID, "created",
		"allowlist_updated", `{"allowlist":["203.0.113.0/24"]}`, `{"allowlist":["198.51.100.0/24"]}`, "office moved",
		"revoked", `{"status":"active"}`, `{"status":"revoked"}`, "127.0.0.1")
	if strings.Contains(out, "Other") {
		t.Errorf("audit log --key shows another key:\n%s", out)
	}
	var page client.History
	h.okJSON(&page, "audit", "log", "-w", "acme", "--type", "revoked")
	if len(page.Events) != 1 || page.Next != 0 {
		t.Fatalf("audit log --type revoked --json: %+v", page)
	}
	h.okJSON(&page, "audit", "log", "-w", "acme", "--limit", "2")
	if len(page.Events) != 2 || page.Next == 0 {
		t.Fatalf("audit log --limit 2: %d events, next %d", len(page.Events), page.Next)
	}
	contains(t, "audit log --limit 2", h.ok("audit", "log", "-w", "acme", "--limit", "2"), "More: add --after")
	page = client.History{}
	h.okJSON(&page, "audit", "log", "-w", "acme", "--all")
	if len(page.Events) != 5 || page.Next != 0 {
		t.Fatalf("audit log --all: %d events", len(page.Events))
	}
	// The key as of before its revocation: active, old allowlist gone.
	var revokedAt httpapi.Key
	h.okJSON(&revokedAt, "key", "show", "-w", "acme", k.Key.ID)
	var then httpapi.Key
	h.okJSON(&then, "key", "show", "-w", "acme", k.Key.ID, "--as-of", fmtVersion(revokedAt.Version-1))
	if then.Status != "active" || strings.Join(then.Allowlist, " ") != "198.51.100.0/24" {
		t.Fatalf("key show --as-of: %+v", then)
	}
	contains(t, "key list --as-of", h.ok("key", "list", "-w", "acme", "--as-of", fmtVersion(revokedAt.Version-1)), "Prod", "active")
	h.fails(1, []string{"404"}, "key", "show", "-w", "acme", k.Key.ID, "--as-of", fmtVersion(k.Key.Version-1))
	h.fails(2, []string{"--since", "RFC 3339"}, "audit", "log", "-w", "acme", "--since", "yesterday")
	h.fails(1, []string{"400 invalid_input", "type"}, "audit", "log", "-w", "acme", "--type", "bogus")

	// audit pubkey, export, verify.
	dir := t.TempDir()
	pub := strings.TrimSpace(h.ok("audit", "pubkey"))
	if !strings.HasPrefix(pub, "keyreg+") {
		t.Fatalf("audit pubkey: %q", pub)
	}
	pubFile := filepath.Join(dir, "keyreg.pub")
	os.WriteFile(pubFile, []byte(pub+"\n"), 0o644)
	export := filepath.Join(dir, "acme.jsonl")
	r := h.run("audit", "export", "-w", "acme", "-o", export)
	if r.code != 0 || !strings.Contains(r.stderr, "exported the audit log of acme to "+export) {
		t.Fatalf("audit export: %+v", r)
	}
	out = h.ok("audit", "verify", export, "--pubkey", "@"+pubFile)
	contains(t, "audit verify", out, "OK", "Events:", "5 checked", "Aggregates:", "Checkpoint:", "tree of", "Signed by:", "keyreg+")
	out = h.ok("audit", "verify", export, "--pubkey", pub)
	contains(t, "audit verify --pubkey KEY", out, "OK")
	b, _ := os.ReadFile(export)
	out = h.runIn(string(b), "audit", "verify", "-", "--pubkey", pub, "--json").stdout
	contains(t, "audit verify - --json", out, `"ok": true`, `"events": 5`)

	// A changed byte fails, naming the cause.
	tampered := filepath.Join(dir, "tampered.jsonl")
	os.WriteFile(tampered, bytes.Replace(b, []byte("office moved"), []byte("office muved"), 1), 0o600)
	r = h.fails(1, []string{"audit verify", "FAILED", "inclusion proof"}, "audit", "verify", tampered, "--pubkey", pub)
	contains(t, "audit verify (tampered)", r.stdout, "FAILED")
	h.fails(2, []string{"pubkey"}, "audit", "verify", export)

	// CSV.
	csvFile := filepath.Join(dir, "k.csv")
	h.ok("audit", "export", "-w", "acme", "--format", "csv", "--key", k.Key.ID, "-o", csvFile)
	f, _ := os.Open(csvFile)
	rows, err := csv.NewReader(f).ReadAll()
	f.Close()
	if err != nil || len(rows) != 4 || rows[0][0] != "time" || rows[3][4] != "revoked" || rows[3][9] != "leaked" {
		t.Fatalf("csv export: %q, %v", rows, err)
	}
	h.fails(2, []string{"--format"}, "audit", "export", "-w", "acme", "--format", "xml")
	if _, err := os.Stat(filepath.Join(dir, "x.jsonl.partial")); err == nil {
		t.Fatal("a partial file was left")
	}
}
