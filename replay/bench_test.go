package replay_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/replay"
)

// BenchmarkReplay measures a full rebuild into Pebble beside a plain drain of the same
// stream with an ordered consumer, and reports both rates and their ratio. It also reports
// the CPU time (user and system, of the whole process, the embedded NATS server included)
// each takes per event, and that ratio: on a machine shared with other work the wall-clock
// ratio moves with the load, the CPU one much less.
//
// The stream has -replay.events events (default 20,000; the figure for the notes is
// taken with -replay.events=1000000). The rebuild runs with Options.GCPercent
// -replay.gc (default 400, as keyreg replay) and Options.BatchSize -replay.batch.
func BenchmarkReplay(b *testing.B) {
	for _, n := range []int{*replayEvents} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			log := eventstest.NewJetStreamLog(b)
			ctx := context.Background()
			eventstest.Fill(b, log, "bench", n)
			var drain, rebuild, drainCPU, rebuildCPU time.Duration
			for i := 0; b.Loop(); i++ {
				start, cpu := time.Now(), cpuTime()
				stop := errors.New("stop")
				seen := 0
				log.Follow(ctx, 1, func(r events.Record) error {
					if seen++; seen == n {
						return stop
					}
					return nil
				})
				drain += time.Since(start)
				drainCPU += cpuTime() - cpu
				start, cpu = time.Now(), cpuTime()
				if _, err := replay.Rebuild(ctx, log, filepath.Join(b.TempDir(), fmt.Sprint(i)), replay.Options{GCPercent: *replayGC, BatchSize: *replayBatch}); err != nil {
					b.Fatal(err)
				}
				rebuild += time.Since(start)
				rebuildCPU += cpuTime() - cpu
			}
			drainRate := float64(n*b.N) / drain.Seconds()
			rebuildRate := float64(n*b.N) / rebuild.Seconds()
			b.ReportMetric(drainRate, "drain-events/s")
			b.ReportMetric(rebuildRate, "replay-events/s")
			b.ReportMetric(rebuildRate/drainRate, "ratio")
			b.ReportMetric(float64(drainCPU.Microseconds())/float64(n*b.N), "drain-cpu-µs/event")
			b.ReportMetric(float64(rebuildCPU.Microseconds())/float64(n*b.N), "replay-cpu-µs/event")
			b.ReportMetric(float64(drainCPU)/float64(rebuildCPU), "cpu-ratio")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var (
	replayEvents = flag.Int("replay.events", 20_000, "events in BenchmarkReplay's stream")
	replayGC     = flag.Int("replay.gc", 400, "BenchmarkReplay's Options.GCPercent, as keyreg replay's")
	replayBatch  = flag.Int("replay.batch", 0, "BenchmarkReplay's Options.BatchSize (0: the default)")
)
