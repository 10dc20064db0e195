package cli

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func TestAuditCommands(t *testing.T) {
	h := keyFixture(t)
	var k wire.KeyWithSecret
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
	var revokedAt wire.Key
	h.okJSON(&revokedAt, "key", "show", "-w", "acme", k.Key.ID)
	var then wire.Key
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

	exportFailures(t, h, len(b))
}

// exportFailures: audit export -o FILE writes FILE.partial and renames it to FILE once the
// whole export is in. So an export refused by the server, one interrupted half-way (its
// context canceled, as Ctrl-C does), and one whose rename fails each exit non-zero, leave
// an existing FILE as it was, and leave no FILE.partial. size is the length of acme's
// whole export.
func exportFailures(t *testing.T, h *harness, size int) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "x.jsonl")
	const old = "the export of yesterday\n"
	if err := os.WriteFile(out, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	unchanged := func(what string) {
		t.Helper()
		if b, err := os.ReadFile(out); err != nil || string(b) != old {
			t.Errorf("%s: the existing file is now %q (%v)", what, b, err)
		}
		if _, err := os.Stat(out + ".partial"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a partial file was left (%v)", what, err)
		}
	}

	h.fails(1, []string{"400", "invalid_input"}, "audit", "export", "-w", "acme", "--type", "bogus", "-o", out)
	unchanged("refused")

	// Interrupted: a proxy passes on the first half of the export, then cancels the
	// command's context and holds the connection open until the command goes away.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	upstream := h.env["KEYREG_ADDR"]
	passed := make(chan int64, 1) // bytes passed on before the interruption
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, upstream+r.URL.RequestURI(), nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		n, _ := io.CopyN(w, resp.Body, int64(size/2))
		http.NewResponseController(w).Flush()
		passed <- n
		cancel()
		<-r.Context().Done() // the command went away (or the 30 s are up: r's server closes)
	}))
	defer proxy.Close()
	env := maps.Clone(h.env)
	env["KEYREG_ADDR"] = proxy.URL
	var stdout, stderr bytes.Buffer
	code := Run(ctx, []string{"audit", "export", "-w", "acme", "-o", out}, func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
	if code == 0 {
		t.Errorf("interrupted export: exit 0, stderr %q", stderr.String())
	}
	select {
	case n := <-passed:
		if n != int64(size/2) {
			t.Errorf("interrupted export: the proxy passed on %d bytes, want %d", n, size/2)
		}
	default:
		t.Error("interrupted export: the proxy was not asked for it")
	}
	unchanged("interrupted")

	// The rename fails: FILE is a directory that is not empty.
	outDir := filepath.Join(dir, "d.jsonl")
	if err := os.MkdirAll(filepath.Join(outDir, "in"), 0o700); err != nil {
		t.Fatal(err)
	}
	if r := h.run("audit", "export", "-w", "acme", "-o", outDir); r.code != 1 {
		t.Errorf("export onto a directory: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(outDir + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("export onto a directory: a partial file was left (%v)", err)
	}
}

// TestAuditVerifyCompleteness runs keyreg audit verify on exports edited so that their
// counts still match: the revocation of a key removed from a workspace's export, and the
// newest event removed from a key's export. Each fails, naming the cause, and --json says
// ok and complete false; honest exports say what they prove, and --pubkey FILE (without
// @) hints at @FILE.
func TestAuditVerifyCompleteness(t *testing.T) {
	h := keyFixture(t)
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "Prod")
	h.ok("key", "allowlist", "-w", "acme", k.Key.ID, "--allow", "198.51.100.0/24")
	h.ok("key", "revoke", "-w", "acme", k.Key.ID, "--reason", "leaked")
	h.ok("key", "create", "-w", "acme", "--name", "Other")

	dir := t.TempDir()
	pubFile := filepath.Join(dir, "keyreg.pub")
	os.WriteFile(pubFile, []byte(h.ok("audit", "pubkey")), 0o644)
	pub := "@" + pubFile
	wsFile, keyFile, typeFile := filepath.Join(dir, "acme.jsonl"), filepath.Join(dir, "key.jsonl"), filepath.Join(dir, "type.jsonl")
	h.ok("audit", "export", "-w", "acme", "-o", wsFile)
	h.ok("audit", "export", "-w", "acme", "--key", k.Key.ID, "-o", keyFile)
	h.ok("audit", "export", "-w", "acme", "--type", "revoked", "-o", typeFile)

	contains(t, "audit verify (workspace)", h.ok("audit", "verify", wsFile, "--pubkey", pub),
		"OK: the export is signed, complete and unaltered", "complete: these are all 5 events of workspace acme")
	contains(t, "audit verify (key)", h.ok("audit", "verify", keyFile, "--pubkey", pub),
		"OK: the export is signed, complete and unaltered", "complete: these are all 3 events of key "+k.Key.ID)
	contains(t, "audit verify (type)", h.ok("audit", "verify", typeFile, "--pubkey", pub),
		"completeness is NOT proven", "Not proven:", "completeness of the filtered selection")

	// edit drops the event line of file that contains drop (the last such), lowers the
	// trailer's event count to match, and writes the result.
	edit := func(file, drop string) string {
		t.Helper()
		b, _ := os.ReadFile(file)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		i := len(lines) - 2
		for drop != "" && !strings.Contains(lines[i], drop) {
			i--
		}
		lines = append(lines[:i], lines[i+1:]...)
		var tr map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &tr); err != nil {
			t.Fatal(err)
		}
		tr["events"] = tr["events"].(float64) - 1
		last, _ := json.Marshal(tr)
		lines[len(lines)-1] = string(last)
		out := file + ".edited"
		os.WriteFile(out, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
		return out
	}
	revokedDropped := edit(wsFile, `"type":"keyreg.key.revoked.v1"`)
	r := h.fails(1, []string{"FAILED", "1 of the workspace's events are missing", "workspace acme had 5 events"},
		"audit", "verify", revokedDropped, "--pubkey", pub)
	contains(t, "audit verify (revocation dropped)", r.stdout, "FAILED: nothing is proven")
	r = h.run("audit", "verify", revokedDropped, "--pubkey", pub, "--json")
	var rep verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 1 {
		t.Fatalf("audit verify --json: exit %d, %q, %v", r.code, r.stdout, err)
	}
	if rep.OK || rep.Complete || rep.Summary.Complete || !strings.Contains(rep.Error, "events are missing") {
		t.Fatalf("audit verify --json of an edited export: %+v", rep)
	}
	h.fails(1, []string{"FAILED", "the key's newest events are missing"}, "audit", "verify", edit(keyFile, ""), "--pubkey", pub)

	// --pubkey given a file name without @.
	h.fails(2, []string{"did you mean @" + pubFile}, "audit", "verify", wsFile, "--pubkey", pubFile)
	h.fails(2, []string{"--pubkey", "@FILE"}, "audit", "verify", wsFile, "--pubkey", "no-such-file.pub")
}
