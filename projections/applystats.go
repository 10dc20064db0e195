package projections

import (
	"sync/atomic"
	"time"
)

// ApplyStats sums what Apply has cost since the store was opened: how many batches and
// records it applied, the time spent folding them into a Pebble batch, and the time spent
// committing that batch (its fsync included, unless Options.NoSync). Benchmarks read it
// to split the projector's share of a write.
type ApplyStats struct {
	Batches int64
	Records int64
	Build   time.Duration
	Commit  time.Duration
}

// applyStats is the running ApplyStats of a Store.
type applyStats struct {
	batches, records, build, commit atomic.Int64
}

func (a *applyStats) add(records int, build, commit time.Duration) {
	a.batches.Add(1)
	a.records.Add(int64(records))
	a.build.Add(int64(build))
	a.commit.Add(int64(commit))
}

// ApplyStats returns what Apply has cost so far.
func (s *Store) ApplyStats() ApplyStats {
	return ApplyStats{
		Batches: s.stats.batches.Load(),
		Records: s.stats.records.Load(),
		Build:   time.Duration(s.stats.build.Load()),
		Commit:  time.Duration(s.stats.commit.Load()),
	}
}
