package usage

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections/keyindex"
)

func openTracker(t *testing.T, js jetstream.JetStream, node string) *Tracker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := Open(ctx, js, Options{Node: node, Interval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

func flush(t *testing.T, tr *Tracker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitCount waits until tr's watch shows want VALID verifies of acme/K today.
func waitCount(t *testing.T, tr *Tracker, code string, want uint64, now time.Time) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := tr.Daily("acme", "K", 1, now)[0].Counts[code]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s count of acme/K: %d, want %d", code, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNodesAddUp: two nodes record uses of one key and flush to one bucket: each sees the
// sum, the latest use wins last_used (here both in one flush interval: by its exact time), and a node that restarts (a new Tracker, same node
// name) adds to what it had flushed instead of overwriting it.
func TestNodesAddUp(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	js, err := jetstream.New(e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	a, b := openTracker(t, js, "node-a"), openTracker(t, js, "node-b")
	now := time.Now().UTC().Truncate(24 * time.Hour).Add(12*time.Hour + 30*time.Second) // midday today: no day boundary in the test
	ip1, ip2 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::2")
	for range 3 {
		a.Record("acme", "K", keyindex.CodeValid, ip1, now.Add(-time.Second))
	}
	a.Record("acme", "K", keyindex.CodeIPNotAllowed, ip1, now.Add(-time.Second))
	a.Record("acme", "K", keyindex.CodeNotFound, ip1, now) // names no key: not counted
	for range 2 {
		b.Record("acme", "K", keyindex.CodeValid, ip2, now)
	}
	flush(t, a)
	flush(t, b)
	waitCount(t, a, keyindex.CodeValid, 5, now)
	waitCount(t, b, keyindex.CodeValid, 5, now)
	waitCount(t, b, keyindex.CodeIPNotAllowed, 1, now)
	at, ip, ok := a.LastUsed("acme", "K")
	if !ok || ip != ip2.String() || !at.Equal(now.Truncate(time.Minute)) {
		t.Fatalf("last used: %v %q %v, want %v %s", at, ip, ok, now.Truncate(time.Minute), ip2)
	}
	if _, _, ok := a.LastUsed("acme", "other"); ok {
		t.Fatal("a key never used shows a last use")
	}

	// node-a restarts: its new tracker adds to node-a's entry.
	a.Close()
	a2 := openTracker(t, js, "node-a")
	a2.Record("acme", "K", keyindex.CodeValid, ip1, now)
	flush(t, a2)
	waitCount(t, b, keyindex.CodeValid, 6, now)
	waitCount(t, a2, keyindex.CodeValid, 6, now)

	days := a2.Daily("acme", "K", 3, now)
	if len(days) != 3 || days[2].Date != now.Format(dateLayout) || days[0].Date != now.AddDate(0, 0, -2).Format(dateLayout) {
		t.Fatalf("days: %+v", days)
	}
	if days[0].Counts[keyindex.CodeValid] != 0 || len(days[0].Counts) != len(Outcomes) {
		t.Fatalf("a day without use: %+v", days[0])
	}
}

// TestRecordAllocs: recording a key already noted in the interval allocates nothing.
func TestRecordAllocs(t *testing.T) {
	var r Recorder
	ip, now := netip.MustParseAddr("10.1.2.3"), time.Now()
	r.Record("acme", "K", keyindex.CodeValid, ip, now)
	if n := testing.AllocsPerRun(1000, func() { r.Record("acme", "K", keyindex.CodeValid, ip, now) }); n != 0 {
		t.Fatalf("Record allocates %v times per call", n)
	}
	m := r.take()
	if p := m[Ref{"acme", "K"}]; p == nil || p.days[0].n[0] != 1002 {
		t.Fatalf("recorded: %+v", p)
	}
}

// BenchmarkRecord records uses of one key of 1000, serially and from every core.
func BenchmarkRecord(b *testing.B) {
	var r Recorder
	ip, now := netip.MustParseAddr("10.1.2.3"), time.Now()
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "K" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		r.Record("acme", ids[i], keyindex.CodeValid, ip, now)
	}
	b.Run("Serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Record("acme", ids[500], keyindex.CodeValid, ip, now)
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Record("acme", ids[500], keyindex.CodeValid, ip, now)
			}
		})
	})
}
