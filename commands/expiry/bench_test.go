package expiry_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/expiry"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// BenchmarkScan100k measures one scan of 100,000 keys in Pebble views, every one with an
// expiry: "NoneDue" (expiries a year away: the scan only reads), and "AllDone" (every key
// within a threshold, its warning appended by an earlier scan: the scan reads and looks
// each notice up in memory). It reports the scan's time per key.
func BenchmarkScan100k(b *testing.B) {
	for _, c := range []struct {
		name string
		in   time.Duration
	}{{"NoneDue", 365 * 24 * time.Hour}, {"AllDone", 20 * 24 * time.Hour}} {
		b.Run(c.name, func(b *testing.B) {
			const n = 100_000
			ctx := context.Background()
			log := events.NewMemLog()
			now := time.Now().UTC()
			exp := now.Add(c.in)
			var msgs []events.Message
			add := func(agg events.Aggregate, id string, p events.Payload) {
				e, err := events.NewEvent("acme", agg, id, p, events.Meta{}, "", now)
				if err != nil {
					b.Fatal(err)
				}
				data, _ := e.Encode()
				msgs = append(msgs, events.Message{Subject: events.Subject("acme", agg, id, e.Type), ID: e.ID, Data: data})
			}
			add(events.AggWorkspace, "acme", events.WorkspaceCreated{Name: "acme"})
			for range n {
				add(events.AggKey, events.NewID(), events.KeyCreated{Name: "k", Permissions: []events.Permission{"users.track"},
					SecretHash: events.HashSecret(events.NewID()), ExpiresAt: &exp})
				if len(msgs) >= 1000 {
					if _, err := log.Append(ctx, msgs); err != nil {
						b.Fatal(err)
					}
					msgs = msgs[:0]
				}
			}
			if _, err := log.Append(ctx, msgs); err != nil {
				b.Fatal(err)
			}
			store, err := projections.Open(b.TempDir(), projections.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			var batch []events.Record
			err = log.Read(ctx, ">", 1, func(r events.Record) error {
				if batch = append(batch, r); len(batch) == 1000 {
					err := store.Apply(batch)
					batch = batch[:0]
					return err
				}
				return nil
			})
			if err == nil {
				err = store.Apply(batch)
			}
			if err != nil {
				b.Fatal(err)
			}
			// The measured scans call no command (nothing due, or all done): the first
			// scan of AllDone finds every warning appended before (a Duplicate answer).
			var h appendedBefore
			keys := func(fn func(*events.KeyState) bool) error { _, err := store.EachKey(fn); return err }
			thresholds, _ := expiry.ParseWarnings("30d")
			s := expiry.New(thresholds, time.Minute, keys, &h, nil, nil, func() time.Time { return now })
			if c.name == "AllDone" {
				if done, err := s.Scan(ctx); err != nil || done != n {
					b.Fatalf("first scan: %d done, %v", done, err)
				}
				h.calls = 0
			}
			b.ResetTimer()
			for range b.N {
				if _, err := s.Scan(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/key")
			if h.calls != 0 {
				b.Fatalf("the measured scans asked for %d notices", h.calls)
			}
		})
	}
}

// appendedBefore answers every notice as appended before (Duplicate), and counts them.
type appendedBefore struct{ calls int }

func (a *appendedBefore) NoteKeyExpiry(context.Context, commands.NoteKeyExpiry) (commands.Result, error) {
	a.calls++
	return commands.Result{Duplicate: true}, nil
}
