package replay_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// heapPeak samples the heap every few milliseconds until stopped, and returns the
// highest runtime.MemStats.HeapInuse seen (garbage included, so it depends on the GC's
// pacing) and the highest live heap, /gc/heap/live:bytes (what the last GC kept).
func heapPeak() (stop func() (inuse, live uint64)) {
	var peak, peakLive atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		if m.HeapInuse > peak.Load() {
			peak.Store(m.HeapInuse)
		}
		metrics.Read(samples)
		if v := samples[0].Value.Uint64(); v > peakLive.Load() {
			peakLive.Store(v)
		}
	}
	wg.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				sample()
			}
		}
	})
	return func() (uint64, uint64) {
		close(done)
		wg.Wait()
		sample()
		return peak.Load(), peakLive.Load()
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// BenchmarkAuditExport exports 10,000 and 100,000 events of one workspace (JetStream log,
// Pebble views) as JSON Lines with inclusion proofs and as CSV, and verifies the JSON
// Lines export offline. It reports the time, the events per second, the output size and
// the peak heap in use during the export (sampled every 5ms) beside the heap in use before
// it, and the peak live heap (what the GC kept): a constant-memory export has the same
// peaks for 10,000 and 100,000 events. The process also runs the embedded NATS server,
// whose message cache grows with what it serves.
func BenchmarkAuditExport(b *testing.B) {
	const total = 100_000
	log := eventstest.NewJetStreamLog(b)
	ctx := context.Background()
	eventstest.Fill(b, log, "bench", total)
	e := newAuditEnv(b, log)
	start := time.Now()
	e.catchUp()
	b.Logf("applied %d events (with the audit tree) in %s", total, time.Since(start).Round(time.Millisecond))
	cp, err := e.seal(ctx, total)
	if err != nil {
		b.Fatal(err)
	}
	x := replay.Exporter{Log: log, Store: e.store, Seal: e.seal}
	for _, n := range []uint64{10_000, total} {
		for _, format := range []string{replay.FormatJSONL, replay.FormatCSV} {
			b.Run(fmt.Sprintf("events=%d/%s", n, format), func(b *testing.B) {
				q := replay.ExportQuery{Workspace: "bench", Format: format, Filter: projections.AuditFilter{MaxSeq: n}}
				var peak, live, base uint64
				var out int64
				var took time.Duration
				for b.Loop() {
					runtime.GC()
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					base = max(base, m.HeapInuse)
					stop := heapPeak()
					w := &countingWriter{}
					t0 := time.Now()
					stats, err := x.Export(ctx, w, q)
					took += time.Since(t0)
					p, l := stop()
					peak, live = max(peak, p), max(live, l)
					if err != nil {
						b.Fatal(err)
					}
					if uint64(stats.Events) != n || (format == replay.FormatJSONL && stats.Checkpoint.TreeSize != cp.TreeSize) {
						b.Fatalf("exported %d events with checkpoint %d", stats.Events, stats.Checkpoint.TreeSize)
					}
					out = w.n
				}
				b.ReportMetric(float64(n)*float64(b.N)/took.Seconds(), "events/s")
				b.ReportMetric(float64(out)/1e6, "MB-out")
				b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
				b.ReportMetric(float64(live)/(1<<20), "peak-live-MiB")
				b.ReportMetric(float64(base)/(1<<20), "heap-before-MiB")
			})
		}
	}
	b.Run(fmt.Sprintf("events=%d/verify", total), func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "export.jsonl")
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x.Export(ctx, f, replay.ExportQuery{Workspace: "bench"}); err != nil {
			b.Fatal(err)
		}
		f.Close()
		var peak, live uint64
		var took time.Duration
		for b.Loop() {
			runtime.GC()
			f, _ := os.Open(path)
			stop := heapPeak()
			t0 := time.Now()
			sum, err := replay.VerifyExport(f, replay.VerifyOptions{Keys: []string{e.vkey}})
			took += time.Since(t0)
			p, l := stop()
			peak, live = max(peak, p), max(live, l)
			f.Close()
			if err != nil || sum.Events != total {
				b.Fatalf("verify: %+v, %v", sum, err)
			}
		}
		b.ReportMetric(float64(total)*float64(b.N)/took.Seconds(), "events/s")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(live)/(1<<20), "peak-live-MiB")
	})
}
