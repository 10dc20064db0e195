package replay

import (
	"context"
	"errors"
	"fmt"
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
	batch := make([]events.Record, 0, size)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := store.Apply(batch); err != nil {
			return err
		}
		stats.Applied += uint64(len(batch))
		stats.Checkpoint = batch[len(batch)-1].Seq
		batch = batch[:0]
		if opts.Progress != nil {
			opts.Progress(stats.Applied, target)
		}
		return nil
	}
	if from <= target {
		err = log.Follow(ctx, from, func(r events.Record) error {
			if !opts.UntilTime.IsZero() && r.Time.After(opts.UntilTime) {
				return errDone
			}
			batch = append(batch, r)
			if len(batch) == size {
				if err := flush(); err != nil {
					return err
				}
			}
			if r.Seq >= target {
				return errDone
			}
			return nil
		})
		if !errors.Is(err, errDone) {
			return stats, fmt.Errorf("replay: read log: %w", err)
		}
	}
	if err := flush(); err != nil {
		return stats, err
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
