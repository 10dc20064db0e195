package projections

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// verifyDump renders the Verify index: one line per secret digest, sorted.
func verifyDump(t testing.TB, s *Store) string {
	t.Helper()
	d, err := s.verify.Dump()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func checkSame(t *testing.T, name string, want, got *Store) {
	t.Helper()
	if w, g := dump(t, want), dump(t, got); !bytes.Equal(w, g) {
		t.Errorf("%s: views differ from the reference:\n%s", name, firstDiff(w, g))
	}
	if w, g := verifyDump(t, want), verifyDump(t, got); w != g {
		t.Errorf("%s: verify index differs from the reference", name)
	}
}

func firstDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("line %d\nwant %s\ngot  %s", i+1, w[i], g[i])
		}
	}
	return fmt.Sprintf("want %d lines, got %d", len(w), len(g))
}

// TestGoldenLiveVsRebuild checks the golden rule: applying the log one event at a time,
// all at once, or in arbitrary overlapping batches gives byte-identical views, and the same
// Verify index as one rebuilt from the views on open.
func TestGoldenLiveVsRebuild(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 400)
	recs := allRecords(t, log)

	rebuilt := openMem(t)
	if err := rebuilt.Apply(recs); err != nil {
		t.Fatal(err)
	}
	if got := rebuilt.Checkpoint(); got != uint64(len(recs)) {
		t.Fatalf("checkpoint %d, want %d", got, len(recs))
	}

	live := openMem(t)
	for _, r := range recs {
		if err := live.Apply([]events.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	checkSame(t, "one at a time", rebuilt, live)

	rng := rand.New(rand.NewPCG(1, 2))
	chunked := openMem(t)
	for i := 0; i < len(recs); {
		from := max(0, i-rng.IntN(5)) // overlap: already applied records are skipped
		to := min(len(recs), i+1+rng.IntN(50))
		if err := chunked.Apply(recs[from:to]); err != nil {
			t.Fatal(err)
		}
		i = to
	}
	checkSame(t, "random batches", rebuilt, chunked)

	// The Verify index loaded from the views on open equals the one kept up to date live.
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := s.Apply([]events.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
	liveIndex := verifyDump(t, s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopened, err := Open("db", Options{FS: fs, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	if got := verifyDump(t, reopened); got != liveIndex {
		t.Error("verify index loaded on open differs from the one kept live")
	}
	checkSame(t, "reopened", rebuilt, reopened)
}

// TestCrashBetweenBatches crashes the file system after a synced batch (and, with NoSync,
// keeping a random part of what was not synced), reopens and lets a Projector resume: the
// views end identical to a rebuild.
func TestCrashBetweenBatches(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 200)
	recs := allRecords(t, log)
	want := openMem(t)
	if err := want.Apply(recs); err != nil {
		t.Fatal(err)
	}

	crashAndResume := func(t *testing.T, opts Options, cfg vfs.CrashCloneCfg, minCheckpoint uint64) {
		fs := vfs.NewCrashableMem()
		opts.FS = fs
		s, err := Open("db", opts)
		if err != nil {
			t.Fatal(err)
		}
		half := len(recs) / 2
		for i := 0; i < half; i += 17 {
			if err := s.Apply(recs[i:min(i+17, half)]); err != nil {
				t.Fatal(err)
			}
			if i == 34 {
				if err := s.Sync(); err != nil { // batches up to 51 survive any crash
					t.Fatal(err)
				}
			}
		}
		crashed := fs.CrashClone(cfg)
		if err := s.Apply(recs[half:]); err != nil { // lost in the crash
			t.Fatal(err)
		}
		s.Close()

		opts.FS = crashed
		s, err = Open("db", opts)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		cp := s.Checkpoint()
		if cp < minCheckpoint || cp > uint64(half) {
			t.Fatalf("checkpoint after crash %d, want %d..%d", cp, minCheckpoint, half)
		}
		t.Logf("checkpoint after crash: %d of %d", cp, half)
		runProjector(t, s, log, uint64(len(recs)))
		checkSame(t, "resumed after crash", want, s)
	}

	t.Run("Synced", func(t *testing.T) {
		crashAndResume(t, Options{}, vfs.CrashCloneCfg{}, uint64(len(recs)/2))
	})
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("NoSync/%d", seed), func(t *testing.T) {
			cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, seed))}
			crashAndResume(t, Options{NoSync: true}, cfg, 51)
		})
	}
}

// runProjector runs a Projector on s until it has applied seq, then stops it.
func runProjector(t *testing.T, s *Store, log events.Reader, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := NewProjector(s, log)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := p.WaitFor(wctx, seq); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
}

// TestHistoryFetchesBodies checks that history entries lead to the event bodies in the log.
func TestHistoryFetchesBodies(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 0)
	s := openMem(t)
	if err := s.Apply(allRecords(t, log)); err != nil {
		t.Fatal(err)
	}
	hist, err := s.History("acme", events.AggKey, "K1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, h := range hist {
		r, err := log.Get(context.Background(), h.Seq)
		if err != nil {
			t.Fatal(err)
		}
		d, err := events.DecodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		if d.Event.Type != h.Type || d.Event.Actor != h.Actor || !d.Event.Time.Equal(h.Time) {
			t.Errorf("seq %d: entry %+v does not match event %s by %s", h.Seq, h, d.Event.Type, d.Event.Actor)
		}
		types = append(types, strings.TrimSuffix(strings.TrimPrefix(string(h.Type), "keyreg.key."), ".v1"))
	}
	want := "created renamed permissions_updated allowlist_updated secret_rotated secret_rotated expiry_changed"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("history of K1: %s, want %s", got, want)
	}
	k, err := s.Key(context.Background(), "acme", "K1")
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1].Seq; k.Version != last {
		t.Errorf("key version %d, last history entry %d", k.Version, last)
	}
	r, _ := log.Get(context.Background(), k.Version)
	if k.LastHash != events.Hash(r.Data) {
		t.Errorf("key LastHash %s is not the hash of its last event", k.LastHash)
	}
	if _, err := hex.DecodeString(k.LastHash); err != nil {
		t.Error(err)
	}
}
