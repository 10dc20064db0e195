package commands

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/projections"
)

// BenchmarkStateReads measures, as the stream grows (10 thousand, 100 thousand and 1
// million events by default; KEYREG_BENCH_STREAM_SIZES=10000,...,10000000 for others),
// what a command's read of one key costs and what JetStream's check of an append's
// expectation costs:
//
//   - log: LogState, the old read (every event of the key, from the log);
//   - views: ViewState, the new read (one Pebble get);
//   - views-fresh: ViewState.Fresh, the exact read of a retry or a refusal, with the views
//     caught up and with the views 1,000 events behind;
//   - last-by-subject: a direct get of the last message on a filter, which runs the same
//     server code (store.LoadLastMsg) as the expected-last-subject-sequence check of an
//     append: on the key's own filter, and on the quota tally's workspace-wide filter of
//     key creations; get-by-seq is the round trip alone, for comparison.
//
// The measured key has 100 events at the start of the stream, in workspace acme of 1,000
// keys; the rest of the stream is workspaces of 1,000 keys, each key created and updated
// 4 times. The views hold every event. At the end, the quota filter is measured again on
// a workspace of 10,000 keys (the default quota).
func BenchmarkStateReads(b *testing.B) {
	if testing.Short() {
		b.Skip("short: no JetStream")
	}
	sizes := []int{10_000, 100_000, 1_000_000}
	if s := os.Getenv("KEYREG_BENCH_STREAM_SIZES"); s != "" {
		sizes = sizes[:0]
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("KEYREG_BENCH_STREAM_SIZES: %v", err)
			}
			sizes = append(sizes, n)
		}
	}
	ctx := context.Background()
	emb := eventstest.StartEmbedded(b, b.TempDir())
	store, err := projections.Open(b.TempDir(), projections.Options{}) // as serve opens them
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	f := &filler{b: b, emb: emb, store: store, now: time.Now().UTC().Truncate(time.Microsecond)}
	hot := f.seed()
	views := ViewState{Log: emb.Log, Views: func() Views { return store }}
	fresh := views.Fresh()
	logState := LogState{Log: emb.Log}
	keyFilter := events.AggregateFilter("acme", events.AggKey, hot)
	quotaFilter := events.Subject("acme", events.AggKey, "*", events.TypeKeyCreated)

	read := func(st StateReader) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				k, err := st.Key(ctx, "acme", hot)
				if err != nil || k.Version == 0 {
					b.Fatal(k.Version, err)
				}
			}
		}
	}
	direct := func(req string) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				if _, err := directGet(emb.Conn, req); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	for _, size := range sizes {
		const lag = 1000
		if f.seq+lag > uint64(size) {
			continue
		}
		start := time.Now()
		f.grow(uint64(size)-lag, true)
		f.grow(uint64(size), false) // the views stay 1,000 behind
		b.Logf("stream of %d events built in %v (views at %d)", f.seq, time.Since(start).Round(time.Millisecond), store.Checkpoint())
		b.Run(fmt.Sprintf("events=%d/views-fresh-lag=%d", size, lag), read(fresh))
		f.applyPending()
		// Two rounds, side by side, for the ratios on a busy machine.
		for round := range 2 {
			name := func(what string) string { return fmt.Sprintf("events=%d/round=%d/%s", size, round+1, what) }
			b.Run(name("log"), read(logState))
			b.Run(name("views"), read(views))
			b.Run(name("views-fresh-lag=0"), read(fresh))
			b.Run(name("last-by-subject-key"), direct(fmt.Sprintf(`{"last_by_subj":%q}`, keyFilter)))
			b.Run(name("last-by-subject-quota"), direct(fmt.Sprintf(`{"last_by_subj":%q}`, quotaFilter)))
			b.Run(name("get-by-seq"), direct(fmt.Sprintf(`{"seq":%d}`, f.seq/2)))
		}
	}
	// The quota tally's filter costs what the workspace's keys cost: a workspace at the
	// default quota of 10,000 keys, at the end of the stream.
	for i := range DefaultMaxKeysPerWorkspace {
		list, _ := events.ParseAllowlist([]string{"10.0.0.0/8"})
		f.add("big", events.AggKey, events.NewID(), events.KeyCreated{Name: "k", Allowlist: list, SecretHash: events.HashSecret(fmt.Sprint(i))}, "")
	}
	f.flush()
	bigQuota := events.Subject("big", events.AggKey, "*", events.TypeKeyCreated)
	for round := range 2 {
		b.Run(fmt.Sprintf("events=%d/round=%d/last-by-subject-quota-10000-keys", f.seq, round+1), direct(fmt.Sprintf(`{"last_by_subj":%q}`, bigQuota)))
		b.Run(fmt.Sprintf("events=%d/round=%d/last-by-subject-quota", f.seq, round+1), direct(fmt.Sprintf(`{"last_by_subj":%q}`, quotaFilter)))
	}
}

// directGet sends a JetStream direct get request to the KEYREG stream and returns the
// sequence of the message it answers.
func directGet(nc *nats.Conn, req string) (uint64, error) {
	m, err := nc.Request("$JS.API.DIRECT.GET."+events.StreamName, []byte(req), 10*time.Second)
	if err != nil {
		return 0, err
	}
	if st := m.Header.Get("Status"); st != "" {
		return 0, fmt.Errorf("direct get %s: %s %s", req, st, m.Header.Get("Description"))
	}
	return strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
}

// filler appends valid events to the stream in atomic batches of 1,000 (without message
// ids, so that the server keeps no dedupe entries) and applies them to the views.
type filler struct {
	b       *testing.B
	emb     *eventstest.Embedded
	store   *projections.Store
	now     time.Time
	seq     uint64 // last sequence appended
	batch   []*nats.Msg
	pending []events.Record // appended, not applied to the views
	ws      int             // filler workspaces made
}

// add appends (in the current batch) one event and returns its hash.
func (f *filler) add(ws events.Workspace, agg events.Aggregate, id string, p events.Payload, prev string) string {
	e, err := events.NewEvent(ws, agg, id, p, events.Meta{Actor: "bench"}, prev, f.now)
	if err != nil {
		f.b.Fatal(err)
	}
	data, err := e.Encode()
	if err != nil {
		f.b.Fatal(err)
	}
	m := nats.NewMsg(events.Subject(ws, agg, id, e.Type))
	m.Data = data
	f.batch = append(f.batch, m)
	f.pending = append(f.pending, events.Record{Seq: f.seq + uint64(len(f.batch)), Subject: m.Subject, Time: f.now, Data: data})
	if len(f.batch) == 1000 {
		f.flush()
	}
	return events.Hash(data)
}

func (f *filler) flush() {
	if len(f.batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ack, err := jetstreamext.PublishMsgBatch(ctx, f.emb.Log.JetStream(), f.batch)
	if err != nil {
		f.b.Fatal(err)
	}
	if ack.Sequence != f.seq+uint64(len(f.batch)) {
		f.b.Fatalf("batch stored up to %d, want %d", ack.Sequence, f.seq+uint64(len(f.batch)))
	}
	f.seq = ack.Sequence
	f.batch = f.batch[:0]
}

// applyPending applies to the views what was appended.
func (f *filler) applyPending() {
	for len(f.pending) > 0 {
		n := min(len(f.pending), 1000)
		if err := f.store.Apply(f.pending[:n]); err != nil {
			f.b.Fatal(err)
		}
		f.pending = f.pending[n:]
	}
	f.pending = nil
}

// seed makes workspace acme with 1,000 keys, the first of them with 99 updates, and
// returns its id.
func (f *filler) seed() string {
	hot := f.workspace("acme", 99)
	f.flush()
	f.applyPending()
	return hot
}

// workspace makes workspace ws with 1,000 keys, each created and updated 4 times, except
// the first, updated hotUpdates times; it returns the first key's id.
func (f *filler) workspace(ws events.Workspace, hotUpdates int) string {
	allow := []events.Permission{"users.track"}
	f.add(ws, events.AggWorkspace, string(ws), events.WorkspaceCreated{Name: string(ws)}, "")
	ids := make([]string, 1000)
	prev := make([]string, len(ids))
	nets := make([][]string, len(ids))
	for i := range ids {
		ids[i] = events.NewID()
		nets[i] = []string{fmt.Sprintf("10.%d.%d.0/24", i%256, i/256)}
		list, _ := events.ParseAllowlist(nets[i])
		prev[i] = f.add(ws, events.AggKey, ids[i], events.KeyCreated{Name: "k", Permissions: allow, Allowlist: list,
			SecretHash: events.HashSecret(fmt.Sprint(ws, i))}, "")
		updates := 4
		if i == 0 {
			updates = hotUpdates
		}
		for range updates {
			prev[i] = f.add(ws, events.AggKey, ids[i], events.AllowlistUpdated{Allowlist: list, Previous: list}, prev[i])
		}
	}
	return ids[0]
}

// grow appends filler workspaces until the stream holds n events (the last one cut short)
// and, if apply, applies them to the views.
func (f *filler) grow(n uint64, apply bool) {
	for f.seq+uint64(len(f.batch)) < n {
		f.ws++
		ws := events.Workspace(fmt.Sprintf("fill%05d", f.ws))
		f.add(ws, events.AggWorkspace, string(ws), events.WorkspaceCreated{Name: string(ws)}, "")
		list, _ := events.ParseAllowlist([]string{"10.0.0.0/8"})
		for i := 0; i < 1000 && f.seq+uint64(len(f.batch)) < n; i++ {
			id := events.NewID()
			prev := f.add(ws, events.AggKey, id, events.KeyCreated{Name: "k", Permissions: []events.Permission{"users.track"},
				Allowlist: list, SecretHash: events.HashSecret(fmt.Sprint(ws, i))}, "")
			for j := 0; j < 4 && f.seq+uint64(len(f.batch)) < n; j++ {
				prev = f.add(ws, events.AggKey, id, events.AllowlistUpdated{Allowlist: list, Previous: list}, prev)
			}
		}
	}
	f.flush()
	if apply {
		f.applyPending()
	}
}
