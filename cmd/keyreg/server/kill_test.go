package server_test

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// keyregBinary builds the real binary once per test run.
func keyregBinary(t *testing.T) string { t.Helper(); return nodetest.Binary(t) }

// TestKillDuringRebuild kills `keyreg replay` (the real binary) with SIGKILL at random
// moments of a rebuild. Afterwards the serving views match the log, half-built
// generations are removed at the next start, and the node serves.
func TestKillDuringRebuild(t *testing.T) {
	bin := keyregBinary(t)
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	eventstest.Fill(t, n.Log, "bulk", 30_000)
	if err := n.Projector().WaitFor(context.Background(), n.lastSeq()); err != nil {
		t.Fatal(err)
	}
	want := dumpStore(t, n.Store())
	n.stop()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	halfBuilt := 0
	for i := range 5 {
		cmd := exec.Command(bin, "replay", "--data", data)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Spread the kills over the rebuild: start-up, early, middle, late.
		delay := time.Duration(100+250*i+rng.IntN(250)) * time.Millisecond
		time.Sleep(delay)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		gens, _ := filepath.Glob(filepath.Join(data, "projections", "g*"))
		if len(gens) > 1 {
			halfBuilt++
		}
		t.Logf("kill %d after %s: %v; %d generation dirs", i, delay, err, len(gens))
	}
	if halfBuilt == 0 {
		t.Fatal("no kill landed during a rebuild: the test did not test what it claims")
	}
	// Whatever generation serves now, it matches the log.
	out, err := exec.Command(bin, "replay", "--data", data, "--verify").CombinedOutput()
	if err != nil {
		t.Fatalf("replay --verify after the kills: %v\n%s", err, out)
	}
	cur := currentGenDir(t, data)
	s, err := projections.Open(filepath.Join(data, "projections", cur), projections.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got := dumpStore(t, s)
	s.Close()
	if !slices.Equal(got, want) {
		t.Fatalf("serving generation %s differs from the views before the kills", cur)
	}
	n2 := startNode(t, data)
	entries, _ := os.ReadDir(filepath.Join(data, "projections"))
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) != 1 || dirs[0] != cur {
		t.Fatalf("after restart the views dir holds %v, want only %s", dirs, cur)
	}
	fx := fixture{node: n2, ws: "acme", writer: f.writer}
	if v := fx.verify(k.Secret, "10.1.1.1", ""); v.Code != "VALID" {
		t.Fatalf("verify after the kills: %s", v.Code)
	}
}
