package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

// TestOperatorCommands drives replay, replay --verify, point-in-time copies, backup and
// restore through the command line, on a registry made through the command line.
func TestOperatorCommands(t *testing.T) {
	data := t.TempDir()
	nd := nodetest.Start(t, nodetest.Options{DataDir: data, Seal: true})
	h := harnessFor(nd)
	h.ok("workspace", "create", "acme", "--name", "Acme")
	for _, name := range []string{"a", "b", "c"} {
		h.ok("key", "create", "-w", "acme", "--name", name, "--allow", "10.0.0.0/8")
	}
	// While serve holds the data dir, offline tools refuse it.
	h.fails(1, []string{"used by another keyreg process"}, "replay", "--data", data)
	if err := nd.Stop(); err != nil {
		t.Fatal(err)
	}

	// Six events at least (two workspaces, the root key and three keys); the sealer may
	// add checkpoints.
	out := h.ok("replay", "--data", data)
	var n int
	if _, err := fmt.Sscanf(out, "Applied %d events", &n); err != nil || n < 6 {
		t.Fatalf("replay printed %q", out)
	}
	all := fmt.Sprintf("Applied %d events (up to sequence %d)", n, n)
	contains(t, "replay", out, all, "events/s", "now serves")
	r := h.run("replay", "--data", data)
	contains(t, "replay progress (not a terminal)", r.stderr, fmt.Sprintf("replay: %d/%d events (100.0%%)", n, n))
	match := fmt.Sprintf("The views match the log (checkpoint %d)", n)
	contains(t, "verify", h.ok("replay", "--data", data, "--verify"), match)

	pit := filepath.Join(t.TempDir(), "pit")
	contains(t, "point in time", h.ok("replay", "--data", data, "--until-seq", "5", "--into", pit), "up to sequence 5", "keyreg serve --read-only --views "+pit)

	h.fails(2, []string{"needs --into"}, "replay", "--data", data, "--until-seq", "5")
	h.fails(2, []string{"not both"}, "replay", "--data", data, "--until-seq", "5", "--until-time", time.Now().Format(time.RFC3339), "--into", pit)
	h.fails(2, []string{"--until-time"}, "replay", "--data", data, "--until-time", "yesterday", "--into", pit)
	h.fails(2, []string{"--verify"}, "replay", "--data", data, "--verify", "--into", pit)

	bak := filepath.Join(t.TempDir(), "bak")
	contains(t, "backup", h.ok("backup", "--data", data, "--to", bak), "Backed up", "files")
	h.fails(1, []string{"not empty"}, "backup", "--data", data, "--to", bak)
	restored := filepath.Join(t.TempDir(), "restored")
	contains(t, "restore", h.ok("restore", "--from", bak, "--data", restored), "Restored")
	contains(t, "verify restored", h.ok("replay", "--data", restored, "--verify"), match)
	h.fails(1, []string{"not a keyreg backup"}, "restore", "--from", t.TempDir(), "--data", filepath.Join(t.TempDir(), "x"))
	h.fails(2, []string{"--to"}, "backup", "--data", data)
}

// TestBench runs `keyreg bench` small: every measurement prints a line with a rate.
func TestBench(t *testing.T) {
	h := &harness{t: t}
	out := h.ok("bench", "--events", "40", "--publishers", "4", "--dir", t.TempDir())
	for _, want := range []string{"append, one at a time", "append, 4 publishers", "atomic batches of 100",
		"CreateKey commands, 4 clients", "drain the stream", "replay into Pebble views", "Verify (in-process"} {
		contains(t, "bench", out, want)
	}
	if strings.Count(out, "/s ") < 7 {
		t.Fatalf("bench printed fewer than 7 rates:\n%s", out)
	}
}
