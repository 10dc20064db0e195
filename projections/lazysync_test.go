package projections

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// TestLazySyncCrash is the live path without the views' fsync: records applied one batch
// each (as the projector does under light load) to a LazySync store, the machine crashed at
// several points, dropping all or a random part of what was not fsynced. After each crash
// the store reopens at a checkpoint no later than the crash, its views are exactly those of
// a rebuild up to that checkpoint (a prefix: no half batch, no view ahead of or behind the
// checkpoint), it reports Recovered, and once a Projector has caught up with the log every
// view equals a rebuild of the whole log and Recovered is false. Some crash must lose
// batches, or the test would not exercise the lost tail.
func TestLazySyncCrash(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 200)
	recs := allRecords(t, log)
	want := openMem(t)
	if err := want.Apply(recs); err != nil {
		t.Fatal(err)
	}
	n := len(recs)
	lost := 0
	for _, at := range []int{1, n / 3, 2 * n / 3, n} {
		for seed := range uint64(3) {
			// seed 0 drops everything unsynced; the others keep a random part of it.
			cfg := vfs.CrashCloneCfg{}
			if seed > 0 {
				cfg = vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, uint64(at)))}
			}
			t.Run(fmt.Sprintf("at%d/seed%d", at, seed), func(t *testing.T) {
				synced := uint64(at / 2) // Sync after this record: it survives any crash
				cp := crashLazy(t, recs[:at], synced, cfg)
				lost += at - int(cp.Checkpoint())
				if c := cp.Checkpoint(); c < synced || c > uint64(at) {
					t.Fatalf("checkpoint after the crash %d, want %d..%d", c, synced, at)
				}
				if !cp.Recovered() {
					t.Fatal("a store reopened after a crash does not report Recovered")
				}
				prefix := openMem(t)
				if err := prefix.Apply(recs[:cp.Checkpoint()]); err != nil {
					t.Fatal(err)
				}
				checkSame(t, "after the crash, against a rebuild to its checkpoint", prefix, cp)
				runProjector(t, cp, log, uint64(n))
				if cp.Recovered() {
					t.Fatal("Recovered after the projector caught up")
				}
				checkSame(t, "caught up after the crash", want, cp)
			})
		}
	}
	t.Logf("batches lost in the crashes: %d", lost)
	if lost == 0 {
		t.Fatal("no crash lost a batch: the views were fsynced after all")
	}
}

// crashLazy applies recs one at a time to a fresh LazySync store on a crashable file
// system, Syncs after record synced, crashes the file system as cfg says, and returns the
// store reopened (LazySync) on what survived. It closes the store at the end of the test.
func crashLazy(t *testing.T, recs []events.Record, synced uint64, cfg vfs.CrashCloneCfg) *Store {
	t.Helper()
	fs := vfs.NewCrashableMem()
	s, err := Open("db", Options{FS: fs, LazySync: true})
	if err != nil {
		t.Fatal(err)
	}
	if s.Recovered() {
		t.Fatal("a fresh store reports Recovered")
	}
	for _, r := range recs {
		if err := s.Apply([]events.Record{r}); err != nil {
			t.Fatal(err)
		}
		if r.Seq == synced {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	crashed := fs.CrashClone(cfg)
	s.Close()
	r, err := Open("db", Options{FS: crashed, LazySync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestLazySyncRecoveredUntilCaughtUp: the crash mark stays on disk until a Projector has
// caught up. A store reopened after a crash and closed cleanly before that (or crashed
// again) still reports Recovered at the next open; applying records by hand does not clear
// it; once a Projector caught up and the store closed, it is gone. A store closed cleanly
// after lazy batches is not Recovered, and one that fsyncs each batch never marks its
// directory.
func TestLazySyncRecoveredUntilCaughtUp(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 20)
	recs := allRecords(t, log)
	n := uint64(len(recs))
	open := func(fs vfs.FS, opts Options) *Store {
		t.Helper()
		opts.FS = fs
		s, err := Open("db", opts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	closeStore := func(s *Store) {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// Clean close: no mark.
	fs := vfs.NewCrashableMem()
	s := open(fs, Options{LazySync: true})
	if err := s.Apply(recs[:10]); err != nil {
		t.Fatal(err)
	}
	closeStore(s)
	s = open(fs.CrashClone(vfs.CrashCloneCfg{}), Options{LazySync: true})
	if s.Recovered() || s.Checkpoint() != 10 {
		t.Fatalf("after a clean close: Recovered %t, checkpoint %d (want false, 10)", s.Recovered(), s.Checkpoint())
	}
	closeStore(s)

	// A crash: the mark survives a clean close before catching up, a second crash, and
	// Applies by hand; a projector that catches up clears it.
	fs = vfs.NewCrashableMem()
	s = open(fs, Options{LazySync: true})
	if err := s.Apply(recs); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	s = open(crashed, Options{LazySync: true})
	if !s.Recovered() || s.Checkpoint() == n {
		t.Fatalf("after a crash: Recovered %t, checkpoint %d of %d", s.Recovered(), s.Checkpoint(), n)
	}
	closeStore(s)
	s = open(crashed, Options{LazySync: true})
	if !s.Recovered() {
		t.Fatal("the crash mark is gone after a clean close that had not caught up")
	}
	if err := s.Apply(recs[:5]); err != nil {
		t.Fatal(err)
	}
	again := crashed.CrashClone(vfs.CrashCloneCfg{})
	closeStore(s)
	for _, fs := range []*vfs.MemFS{crashed, again} {
		s = open(fs, Options{LazySync: true})
		if !s.Recovered() {
			t.Fatal("the crash mark is gone before a projector caught up")
		}
		runProjector(t, s, log, n)
		if s.Recovered() {
			t.Fatal("Recovered after the projector caught up")
		}
		closeStore(s)
		s = open(fs, Options{LazySync: true})
		if s.Recovered() || s.Checkpoint() != n {
			t.Fatalf("reopened after catching up: Recovered %t, checkpoint %d of %d", s.Recovered(), s.Checkpoint(), n)
		}
		closeStore(s)
	}

	// Fsync on every batch: nothing to mark, nothing lost.
	fs = vfs.NewCrashableMem()
	s = open(fs, Options{})
	if err := s.Apply(recs); err != nil {
		t.Fatal(err)
	}
	crashed = fs.CrashClone(vfs.CrashCloneCfg{})
	s.Close()
	s = open(crashed, Options{})
	if s.Recovered() || s.Checkpoint() != n {
		t.Fatalf("synced store after a crash: Recovered %t, checkpoint %d of %d", s.Recovered(), s.Checkpoint(), n)
	}
	closeStore(s)
}

// BenchmarkApplyEach applies records one batch each, as the live projector does under
// light load, to a store on disk: each batch fsynced (Options{}) and not (LazySync). The
// ratio of the two is what the views' fsync costs each change on the write path.
func BenchmarkApplyEach(b *testing.B) {
	log := events.NewMemLog()
	scenario(b, newWriter(log), 1000)
	recs := allRecords(b, log)
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"Disk/Sync", Options{}},
		{"Disk/LazySync", Options{LazySync: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), bc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { s.Close() }()
			i := 0
			for b.Loop() {
				if i == len(recs) {
					b.StopTimer()
					s.Close()
					if s, err = Open(b.TempDir(), bc.opts); err != nil {
						b.Fatal(err)
					}
					i = 0
					b.StartTimer()
				}
				if err := s.Apply(recs[i : i+1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
		})
	}
}
