package natslog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
)

func TestStreamConfig(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	ctx := context.Background()
	s, err := e.Log.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.Storage != jetstream.FileStorage || c.Retention != jetstream.LimitsPolicy || c.Discard != jetstream.DiscardNew ||
		!c.DenyDelete || !c.DenyPurge || c.AllowRollup || !c.AllowDirect || !c.AllowAtomicPublish ||
		len(c.Subjects) != 1 || c.Subjects[0] != "keyreg.>" || c.MaxMsgs != -1 || c.MaxBytes != -1 || c.MaxAge != 0 {
		t.Fatalf("stream config %+v does not match the design", c)
	}
	if _, err := e.Log.Append(ctx, []events.Message{{Subject: "keyreg.a.key.K.created", ID: events.NewID(), Data: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err == nil {
		t.Fatal("purge of the stream was allowed")
	}
	if err := s.DeleteMsg(ctx, 1); err == nil {
		t.Fatal("delete of a message was allowed")
	}
	if n, _ := e.Log.LastSeq(ctx); n != 1 {
		t.Fatalf("LastSeq = %d after refused purge and delete, want 1", n)
	}
}

// TestRestartKeepsEvents stops the server and starts another on the same directory:
// every acknowledged append is still there and the stream is reused.
func TestRestartKeepsEvents(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e := eventstest.StartEmbedded(t, dir)
	var ids []string
	for i := range 50 {
		id := events.NewID()
		ids = append(ids, id)
		if _, err := e.Log.Append(ctx, []events.Message{{Subject: fmt.Sprintf("keyreg.a.key.K%d.created", i), ID: id, Data: []byte("{}")}}); err != nil {
			t.Fatal(err)
		}
	}
	e.Stop()
	e2 := eventstest.StartEmbedded(t, dir)
	var got []string
	if err := e2.Log.Read(ctx, ">", 1, func(r events.Record) error { got = append(got, r.MsgID); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("after restart read %d events, want the %d appended in order", len(got), len(ids))
	}
}

func benchmarkAppend(b *testing.B, l events.Log, publishers, batch int) {
	ctx := context.Background()
	b.ReportAllocs()
	var mu sync.Mutex
	next := 0
	b.ResetTimer()
	var wg sync.WaitGroup
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= b.N {
					mu.Unlock()
					return
				}
				n := min(batch, b.N-next)
				next += n
				mu.Unlock()
				msgs := make([]events.Message, n)
				for i := range msgs {
					msgs[i] = events.Message{Subject: "keyreg.bench.key." + events.NewID() + ".created", ID: events.NewID(), Data: make([]byte, 400)}
				}
				if _, err := l.Append(ctx, msgs); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkAppend measures appends to the JetStream log on an embedded server with fsync
// before every acknowledgement, one at a time, from 16 publishers, and in atomic batches.
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct {
		name              string
		publishers, batch int
	}{{"single", 1, 1}, {"publishers=16", 16, 1}, {"batch=100", 1, 100}} {
		b.Run(c.name, func(b *testing.B) {
			benchmarkAppend(b, eventstest.NewJetStreamLog(b), c.publishers, c.batch)
		})
	}
	b.Run("memlog", func(b *testing.B) { benchmarkAppend(b, events.NewMemLog(), 1, 1) })
}

// BenchmarkFollow measures draining the stream with Follow (an ordered consumer).
func BenchmarkFollow(b *testing.B) {
	l := eventstest.NewJetStreamLog(b)
	ctx := context.Background()
	for done := 0; done < b.N; done += 500 {
		msgs := make([]events.Message, min(500, b.N-done))
		for i := range msgs {
			msgs[i] = events.Message{Subject: "keyreg.bench.key.K.created", ID: events.NewID(), Data: make([]byte, 400)}
		}
		if _, err := l.Append(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	stop := fmt.Errorf("stop")
	n := 0
	if err := l.Follow(ctx, 1, func(events.Record) error {
		if n++; n == b.N {
			return stop
		}
		return nil
	}); err != stop {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
