package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// watchFixture makes workspace acme with a key whose allowlist changes and that is then
// revoked, and returns the harness and the key id.
func watchFixture(t *testing.T) (*harness, string) {
	t.Helper()
	h := keyFixture(t)
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "Prod server", "--permission", "users.track", "--allow", "203.0.113.0/24")
	h.ok("key", "allowlist", "-w", "acme", k.Key.ID, "--allow", "198.51.100.0/24", "--reason", "office moved")
	h.ok("key", "create", "-w", "acme", "--name", "other")
	h.ok("key", "revoke", "-w", "acme", k.Key.ID)
	return h, k.Key.ID
}

// watchJSON runs keyreg watch --json with args and returns the sequences and types seen.
func (h *harness) watchJSON(args ...string) ([]uint64, []string) {
	h.t.Helper()
	out := h.ok(append([]string{"watch", "-w", "acme", "--json"}, args...)...)
	var seqs []uint64
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e wire.HistoryEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			h.t.Fatalf("watch --json line %q: %v", line, err)
		}
		ev, err := events.Decode(e.Event)
		if err != nil {
			h.t.Fatal(err)
		}
		seqs = append(seqs, e.Sequence)
		types = append(types, string(ev.Type))
	}
	return seqs, types
}

func TestWatchLines(t *testing.T) {
	h, id := watchFixture(t)
	out := h.ok("watch", "-w", "acme", "--from-seq", "1", "--count", "5")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 {
		t.Fatalf("watch --count 5 printed %d lines:\n%s", len(lines), out)
	}
	contains(t, "workspace line", lines[0], "keyreg.workspace.created.v1", "workspace/acme", `created "Acme Inc"`)
	contains(t, "key line", lines[1], "keyreg.key.created.v1", "key/"+id, `"Prod server"`, "permissions users.track", "allowlist 203.0.113.0/24", "by ")
	contains(t, "allowlist line", lines[2], "keyreg.key.allowlist_updated.v1", "allowlist 198.51.100.0/24 (+198.51.100.0/24 -203.0.113.0/24)", `reason "office moved"`, "from 127.0.0.1")
	contains(t, "revoke line", lines[4], "keyreg.key.revoked.v1", "revoked (was active)")
	if _, err := time.Parse(time.RFC3339, strings.Fields(lines[0])[0]); err != nil {
		t.Errorf("a line does not start with the time: %q", lines[0])
	}

	// Filters: by type, by key, both.
	if _, types := h.watchJSON("--from-seq", "1", "--count", "2", "--type", "keyreg.key.created.v1"); !slices.Equal(types, []string{"keyreg.key.created.v1", "keyreg.key.created.v1"}) {
		t.Errorf("--type: %v", types)
	}
	if _, types := h.watchJSON("--from-seq", "1", "--count", "3", "--key", id); !slices.Equal(types, []string{"keyreg.key.created.v1", "keyreg.key.allowlist_updated.v1", "keyreg.key.revoked.v1"}) {
		t.Errorf("--key: %v", types)
	}
	if _, types := h.watchJSON("--from-seq", "1", "--count", "1", "--key", id, "--type", "keyreg.key.revoked.v1"); !slices.Equal(types, []string{"keyreg.key.revoked.v1"}) {
		t.Errorf("--key --type: %v", types)
	}

	h.fails(2, []string{"which workspace"}, "watch")
	h.fails(2, []string{"from-seq", "from-time"}, "watch", "-w", "acme", "--from-seq", "1", "--from-time", "2026-01-01T00:00:00Z")
	h.fails(2, []string{"--from-time"}, "watch", "-w", "acme", "--from-time", "yesterday")
	h.fails(1, []string{"400 invalid_input", "keyreg.key.deleted.v1"}, "watch", "-w", "acme", "--type", "keyreg.key.deleted.v1")
	h.fails(1, []string{"404"}, "watch", "-w", "nope")
	h.fails(2, []string{"--durable"}, "watch", "-w", "acme", "--durable", "../x")
}

// TestWatchDurable: runs with one --durable name, stopped after a few events each, with
// changes made between the runs, together see every event of the workspace once, in
// order; a new durable starting from now remembers its start even if it saw nothing.
func TestWatchDurable(t *testing.T) {
	h, _ := watchFixture(t)
	state := t.TempDir()
	durable := func(count int, extra ...string) []uint64 {
		t.Helper()
		seqs, _ := h.watchJSON(append([]string{"--durable", "siem", "--state-dir", state, "--count", fmt.Sprint(count)}, extra...)...)
		return seqs
	}
	var got []uint64
	got = append(got, durable(2, "--from-seq", "1")...)
	got = append(got, durable(2, "--from-seq", "1")...) // the saved position wins
	h.ok("key", "create", "-w", "acme", "--name", "between runs")
	got = append(got, durable(1)...)
	got = append(got, durable(1)...)

	want, _ := h.watchJSON("--from-seq", "1", "--count", "6") // acme's 6 events
	if !slices.Equal(got, want) {
		t.Fatalf("durable runs saw %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(state, "acme.siem.json"))
	if err != nil || !bytes.Contains(b, []byte(fmt.Sprintf(`"last_seq":%d`, want[len(want)-1]))) {
		t.Fatalf("state file %s, %v", b, err)
	}

	// A new durable from now: its first run sees nothing (interrupted), yet the next run
	// gets what happened in between.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := Run(ctx, []string{"watch", "-w", "acme", "--durable", "fresh", "--state-dir", state}, func(k string) string { return h.env[k] }, strings.NewReader(""), &stdout, &stderr)
	if code != 0 || stdout.Len() != 0 {
		t.Fatalf("interrupted watch: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "while away")
	seqs, types := h.watchJSON("--durable", "fresh", "--state-dir", state, "--count", "1")
	if len(seqs) != 1 || seqs[0] != k.Key.Version || types[0] != "keyreg.key.created.v1" {
		t.Fatalf("fresh durable resumed with %v %v, want the key created at %d", seqs, types, k.Key.Version)
	}
}

// TestWatchFromNow: without a start flag, watch prints only what happens after it starts.
func TestWatchFromNow(t *testing.T) {
	h, _ := watchFixture(t)
	done := make(chan result, 1)
	go func() { done <- h.run("watch", "-w", "acme", "--count", "1") }()
	time.Sleep(300 * time.Millisecond) // let it connect
	var k wire.KeyWithSecret
	h.okJSON(&k, "key", "create", "-w", "acme", "--name", "new one")
	r := <-done
	if r.code != 0 || !strings.Contains(r.stdout, "key/"+k.Key.ID) || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("watch from now: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}
