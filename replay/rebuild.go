package replay

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// Options say how far a rebuild goes and how it reports progress.
type Options struct {
	// UntilSeq stops after this stream sequence; 0 means the log's last sequence when the
	// rebuild starts.
	UntilSeq uint64
	// UntilTime, when set, stops before the first record stored after it.
	UntilTime time.Time
	// BatchSize is how many records go in one Pebble batch; 0 means 1000.
	BatchSize int
	// Progress, when set, is called after each batch with the records applied so far and
	// the last sequence the rebuild will reach.
	Progress func(applied, target uint64)
	// GCPercent, when above the process's setting, is the garbage collector's target
	// (debug.SetGCPercent) while ApplyInto runs; the previous one is restored after. A
	// rebuild allocates a lot of short-lived memory (decoded events, batches): at 400 the
	// collector runs a quarter as often, for about 4× the live heap at its peak. 0 leaves
	// the setting alone, for a server rebuilding beside its work; keyreg replay and the
	// benchmarks use 400.
	GCPercent int
}

// Stats describe a finished rebuild.
type Stats struct {
	Applied    uint64        // records applied
	Checkpoint uint64        // last sequence applied
	Duration   time.Duration // wall time
}

// PerSecond is the rebuild's rate in records per second.
func (s Stats) PerSecond() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Applied) / s.Duration.Seconds()
}

var errDone = errors.New("replay: done")

// Rebuild applies the log's records from sequence 1 into a new, empty store in dir (large
// unsynced batches, one sync at the end) and closes it. dir must not hold a store yet.
func Rebuild(ctx context.Context, log events.Reader, dir string, opts Options) (Stats, error) {
	store, err := projections.Open(dir, projections.Options{NoSync: true})
	if err != nil {
		return Stats{}, err
	}
	if cp := store.Checkpoint(); cp != 0 {
		store.Close()
		return Stats{}, fmt.Errorf("replay: %s already holds views up to sequence %d; rebuild into an empty directory", dir, cp)
	}
	stats, err := ApplyInto(ctx, log, store, opts)
	if cerr := store.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return stats, err
}

// ApplyInto applies the log's records after store's checkpoint up to opts' target.
func ApplyInto(ctx context.Context, log events.Reader, store *projections.Store, opts Options) (Stats, error) {
	start := time.Now()
	if opts.GCPercent > 0 {
		if old := debug.SetGCPercent(opts.GCPercent); old >= opts.GCPercent || old < 0 {
			debug.SetGCPercent(old)
		} else {
			defer debug.SetGCPercent(old)
		}
	}
	last, err := log.LastSeq(ctx)
	if err != nil {
		return Stats{}, err
	}
	target := last
	if opts.UntilSeq != 0 {
		target = min(opts.UntilSeq, last)
	}
	size := opts.BatchSize
	if size <= 0 {
		size = 1000
	}
	from := store.Checkpoint() + 1
	stats := Stats{Checkpoint: store.Checkpoint()}
	if from <= target {
		if err := pipeline(ctx, log, store, from, target, size, opts, &stats); err != nil {
			return stats, err
		}
	}
	if err := store.Sync(); err != nil {
		return stats, err
	}
	stats.Duration = time.Since(start)
	return stats, nil
}

// RebuildGeneration builds a new generation of the views under gens from the log, swaps it
// in and removes the others. Until the swap the current generation keeps serving; a crash
// before it leaves a half-built directory that RemoveStale deletes.
func RebuildGeneration(ctx context.Context, log events.Reader, gens Generations, opts Options) (string, Stats, error) {
	name, err := gens.Create()
	if err != nil {
		return "", Stats{}, err
	}
	stats, err := Rebuild(ctx, log, gens.Dir(name), opts)
	if err != nil {
		return "", stats, err
	}
	if err := gens.Swap(name); err != nil {
		return "", stats, err
	}
	return name, stats, gens.RemoveStale()
}

// preparedBatch is a batch of decoded records and what projections.Prepare computes of
// them (leaf hashes, history entries).
type preparedBatch struct {
	recs []events.Decoded
	prep []projections.Prepared
}

// pipeline reads, decodes and applies records on three stages, so that reading the
// stream, decoding JSON, hashing and encoding history entries (split over the cores) and
// folding and writing Pebble overlap.
func pipeline(ctx context.Context, log events.Reader, store *projections.Store, from, target uint64, size int, opts Options, stats *Stats) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	raw := make(chan []events.Record, 2)
	decoded := make(chan preparedBatch, 2)
	errc := make(chan error, 3)

	go func() { // read
		defer close(raw)
		batch := make([]events.Record, 0, size)
		err := log.Follow(ctx, from, func(r events.Record) error {
			if !opts.UntilTime.IsZero() && r.Time.After(opts.UntilTime) {
				return errDone
			}
			batch = append(batch, r)
			if len(batch) == size || r.Seq >= target {
				select {
				case raw <- batch:
				case <-ctx.Done():
					return ctx.Err()
				}
				batch = make([]events.Record, 0, size)
			}
			if r.Seq >= target {
				return errDone
			}
			return nil
		})
		if len(batch) > 0 && errors.Is(err, errDone) {
			select {
			case raw <- batch:
			case <-ctx.Done():
			}
		}
		if !errors.Is(err, errDone) {
			errc <- fmt.Errorf("replay: read log: %w", err)
		}
	}()

	go func() { // decode and hash, in parallel parts
		defer close(decoded)
		workers := max(1, runtime.GOMAXPROCS(0))
		for batch := range raw {
			out := make([]events.Decoded, len(batch))
			prep := make([]projections.Prepared, len(batch))
			errs := make([]error, workers)
			var wg sync.WaitGroup
			chunk := (len(batch) + workers - 1) / workers
			for w := range workers {
				lo, hi := w*chunk, min((w+1)*chunk, len(batch))
				if lo >= hi {
					break
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := lo; i < hi; i++ {
						d, err := events.DecodeRecord(batch[i])
						if err != nil {
							errs[w] = fmt.Errorf("replay: apply seq %d: %w", batch[i].Seq, err)
							return
						}
						if prep[i], err = projections.Prepare(d); err != nil {
							errs[w] = fmt.Errorf("replay: %w", err)
							return
						}
						out[i] = d
					}
				}()
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				errc <- err
				return
			}
			select {
			case decoded <- preparedBatch{out, prep}:
			case <-ctx.Done():
				return
			}
		}
	}()

	for b := range decoded { // apply, in order
		if err := store.ApplyPrepared(b.recs, b.prep); err != nil {
			return err
		}
		stats.Applied += uint64(len(b.recs))
		stats.Checkpoint = b.recs[len(b.recs)-1].Seq
		if opts.Progress != nil {
			opts.Progress(stats.Applied, target)
		}
	}
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}
