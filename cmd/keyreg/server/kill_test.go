package server_test

import (
	"context"
	"errors"
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

// TestKillDuringRebuild kills `keyreg replay` (the real binary) with SIGKILL at moments
// spread over a rebuild, chosen by what it has built (see killReplay), not by the clock. Afterwards the serving views match the log, half-built
// generations are removed at the next start, and the node serves.
func TestKillDuringRebuild(t *testing.T) {
	bin := keyregBinary(t)
	data := t.TempDir()
	n := startNode(t, data)
	f := newFixture(t, n, "acme")
	k := f.createKey(map[string]any{"name": "k", "allowlist": []string{"10.0.0.0/8"}})
	eventstest.Fill(t, n.Log, "bulk", 30_000)
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	if err := n.Projector().WaitFor(wctx, n.lastSeq()); err != nil {
		t.Fatal(err)
	}
	want := dumpStore(t, n.Store())
	n.stop()

	// A whole rebuild first, for the size of the generation it builds.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "replay", "--data", data).CombinedOutput(); err != nil {
		t.Fatalf("keyreg replay: %v\n%s", err, out)
	}
	full := dirSize(t, filepath.Join(data, "projections", currentGenDir(t, data)))

	// Spread the kills over the rebuild: at once (in start-up), then once the generation
	// being built exists, and once it holds a quarter, a half, three quarters of full. Each
	// of the later ones must land while that generation is there and not swapped in; a
	// rebuild that finishes between a look and the kill is run again (at most 3 times).
	if _, landed := killReplay(t, bin, data, -1); landed {
		t.Log("the start-up kill left a half-built generation")
	}
	for i := range 4 {
		min := full * int64(i) / 4
		landed := false
		for attempt := 0; attempt < 3 && !landed; attempt++ {
			var size int64
			size, landed = killReplay(t, bin, data, min)
			t.Logf("kill at %d of %d bytes, attempt %d: generation of %d bytes, mid-rebuild %t", min, full, attempt, size, landed)
		}
		if !landed {
			t.Fatalf("no kill landed in a rebuild with %d of %d bytes built", min, full)
		}
	}
	// Whatever generation serves now, it matches the log.
	out, err := exec.CommandContext(ctx, bin, "replay", "--data", data, "--verify").CombinedOutput()
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

// killReplay runs `keyreg replay --data data` and kills it with SIGKILL once the
// generation it builds holds at least minBytes (at once, in start-up, if minBytes < 0),
// polling every 2 ms; if the replay exits first, it is not killed. It returns the size of
// that generation when killed, and whether the kill landed mid-rebuild: the generation is
// there after the kill, and not the serving one.
func killReplay(t *testing.T, bin, data string, minBytes int64) (size int64, landed bool) {
	t.Helper()
	root := filepath.Join(data, "projections")
	cur := currentGenDir(t, data)
	// A half-built generation of an earlier kill gets a marker: the replay removes it and
	// may create the new one under the same name.
	const marker = "stale-in-test"
	gens, _ := filepath.Glob(filepath.Join(root, "g*"))
	for _, g := range gens {
		if filepath.Base(g) != cur {
			if err := os.WriteFile(filepath.Join(g, marker), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	building := func() string {
		gens, _ := filepath.Glob(filepath.Join(root, "g*"))
		for _, g := range gens {
			if _, err := os.Stat(filepath.Join(g, marker)); filepath.Base(g) != cur && errors.Is(err, os.ErrNotExist) {
				return g
			}
		}
		return ""
	}
	cmd := exec.Command(bin, "replay", "--data", data)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	kill := func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	if minBytes >= 0 {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(2 * time.Minute)
	wait:
		for {
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("keyreg replay: %v", err)
				}
				return 0, false
			case <-deadline:
				kill()
				t.Fatalf("keyreg replay did not build %d bytes in 2 minutes", minBytes)
			case <-tick.C:
				if g := building(); g != "" {
					if size = dirSize(t, g); size >= minBytes {
						break wait
					}
				}
			}
		}
	}
	kill()
	g := building()
	return size, g != "" && filepath.Base(g) != currentGenDir(t, data)
}

// dirSize returns the bytes of the files under dir (0 for files that vanish meanwhile).
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
