package commands

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// BenchmarkWritePathState compares the write path (MeasureUpdates: allowlist updates,
// each waiting for the views as the HTTP API does) with state read from the log
// (LogState) and from the views (ViewState), side by side on one stream that already
// holds 100,000 other events: one client changing one key (its changes 1-100, then
// 101-500) and 64 clients on keys of their own. It reports per write: the wall time, the
// state read and the appends tried (a stale view costs an append).
func BenchmarkWritePathState(b *testing.B) {
	if testing.Short() {
		b.Skip("short: no JetStream")
	}
	ctx := context.Background()
	log := events.NewGroupLog(eventstest.StartEmbedded(b, b.TempDir()).Log)
	eventstest.Fill(b, log, "fill", 100_000)
	store, err := projections.Open(b.TempDir(), projections.Options{})
	if err != nil {
		b.Fatal(err)
	}
	p := projections.NewProjector(store, log)
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			b.Error(err)
		}
		store.Close()
	})
	h := &Handler{Log: log}
	mustWorkspace(b, h, "acme")
	keys := map[string][]string{}
	for _, mode := range []string{"log", "views"} {
		for range 64 {
			keys[mode] = append(keys[mode], mustKey(b, h, "acme").ID)
		}
	}
	if err := p.WaitFor(ctx, lastSeq(b, log)); err != nil { // the views caught up with the fill
		b.Fatal(err)
	}
	state := map[string]StateReader{"log": LogState{Log: log}, "views": ViewState{Log: log, Views: func() Views { return store }}}
	for _, run := range []struct {
		name            string
		clients, writes int
		oneKey          bool
	}{
		{"one key, changes 1-100", 1, 100, true},
		{"one key, changes 101-500", 1, 400, true},
		{"64 clients, own keys", 64, 2000, false},
		{"64 clients, own keys, again", 64, 2000, false},
	} {
		for _, mode := range []string{"log", "views"} {
			b.Run(fmt.Sprintf("%s/%s", run.name, mode), func(b *testing.B) {
				k := keys[mode]
				if run.oneKey {
					k = k[:1]
				}
				var sum WriteStages
				for b.Loop() {
					st, err := MeasureUpdates(ctx, WritePath{Log: log, State: state[mode], Wait: p.WaitFor}, "acme", k, run.clients, run.writes)
					if err != nil {
						b.Fatal(err)
					}
					sum = sum.Add(st)
				}
				per := func(d interface{ Microseconds() int64 }) float64 {
					return float64(d.Microseconds()) / float64(sum.Writes)
				}
				b.ReportMetric(per(sum.Wall), "wall-µs/write")
				b.ReportMetric(per(sum.Read), "read-µs/write")
				b.ReportMetric(float64(sum.Appends)/float64(sum.Writes), "appends/write")
			})
		}
	}
}
