// Package storetest is the test suite every events.Log implementation must pass:
// ordering, reads by filter and from a sequence, optimistic concurrency, dedupe of retried
// appends, atomic multi-message appends, and following from a sequence.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// Run runs the suite; newLog returns a fresh, empty log for each subtest.
func Run(t *testing.T, newLog func(t *testing.T) events.Log) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l events.Log)
	}{
		{"Empty", testEmpty},
		{"AppendOrder", testAppendOrder},
		{"ReadFilter", testReadFilter},
		{"ReadFrom", testReadFrom},
		{"Conflict", testConflict},
		{"DedupeRetry", testDedupeRetry},
		{"DedupeRetryAfterConflict", testDedupeRetryAfterConflict},
		{"AtomicBatch", testAtomicBatch},
		{"AtomicBatchDedupe", testAtomicBatchDedupe},
		{"Follow", testFollow},
		{"FollowFromSequence", testFollowFromSequence},
		{"ConcurrentExpect", testConcurrentExpect},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newLog(t)) })
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func msg(agg, id, event string) events.Message {
	subj := "keyreg.acme." + agg + "." + id + "." + event
	return events.Message{Subject: subj, ID: events.NewID(), Data: []byte(`{"subject":"` + subj + `"}`)}
}

func expect(m events.Message, filter string, seq uint64) events.Message {
	m.ExpectFilter, m.ExpectSeq = filter, seq
	return m
}

func mustAppend(t *testing.T, l events.Log, msgs ...events.Message) []uint64 {
	t.Helper()
	seqs, err := l.Append(ctx(t), msgs)
	if err != nil {
		t.Fatalf("append %s: %v", msgs[0].Subject, err)
	}
	if len(seqs) != len(msgs) {
		t.Fatalf("append returned %d sequences for %d messages", len(seqs), len(msgs))
	}
	return seqs
}

func readAll(t *testing.T, l events.Log, filter string, from uint64) []events.Record {
	t.Helper()
	var out []events.Record
	if err := l.Read(ctx(t), filter, from, func(r events.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatalf("read %s from %d: %v", filter, from, err)
	}
	return out
}

func lastSeq(t *testing.T, l events.Log) uint64 {
	t.Helper()
	n, err := l.LastSeq(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func testEmpty(t *testing.T, l events.Log) {
	if n := lastSeq(t, l); n != 0 {
		t.Fatalf("LastSeq of an empty log = %d, want 0", n)
	}
	if recs := readAll(t, l, ">", 1); len(recs) != 0 {
		t.Fatalf("read %d records from an empty log", len(recs))
	}
	if _, err := l.Get(ctx(t), 1); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("Get(1) on an empty log: %v, want ErrNotFound", err)
	}
}

func testAppendOrder(t *testing.T, l events.Log) {
	var sent []events.Message
	for i := range 20 {
		m := msg("key", fmt.Sprintf("K%d", i%3), "created")
		sent = append(sent, m)
		seqs := mustAppend(t, l, m)
		if seqs[0] != uint64(i+1) {
			t.Fatalf("append %d got sequence %d, want %d", i, seqs[0], i+1)
		}
	}
	recs := readAll(t, l, ">", 1)
	if len(recs) != len(sent) {
		t.Fatalf("read %d records, want %d", len(recs), len(sent))
	}
	for i, r := range recs {
		m := sent[i]
		if r.Seq != uint64(i+1) || r.Subject != m.Subject || r.MsgID != m.ID || string(r.Data) != string(m.Data) {
			t.Fatalf("record %d = {%d %s %s %s}, want {%d %s %s %s}", i, r.Seq, r.Subject, r.MsgID, r.Data, i+1, m.Subject, m.ID, m.Data)
		}
		if r.Time.IsZero() || time.Since(r.Time) > time.Minute {
			t.Fatalf("record %d has time %v", i, r.Time)
		}
		g, err := l.Get(ctx(t), r.Seq)
		if err != nil || g.Subject != r.Subject || g.MsgID != r.MsgID || string(g.Data) != string(r.Data) {
			t.Fatalf("Get(%d) = %+v, %v; want %+v", r.Seq, g, err, r)
		}
	}
	if n := lastSeq(t, l); n != 20 {
		t.Fatalf("LastSeq = %d, want 20", n)
	}
}

func testReadFilter(t *testing.T, l events.Log) {
	mustAppend(t, l, msg("key", "A", "created"))
	mustAppend(t, l, msg("key", "B", "created"))
	mustAppend(t, l, msg("key", "A", "renamed"))
	mustAppend(t, l, msg("identifier", "A", "registered"))
	recs := readAll(t, l, "keyreg.acme.key.A.*", 1)
	if len(recs) != 2 || recs[0].Seq != 1 || recs[1].Seq != 3 {
		t.Fatalf("read key A: %+v, want sequences 1 and 3", recs)
	}
	if recs := readAll(t, l, "keyreg.acme.key.>", 1); len(recs) != 3 {
		t.Fatalf("read keyreg.acme.key.>: %d records, want 3", len(recs))
	}
	if recs := readAll(t, l, "keyreg.other.>", 1); len(recs) != 0 {
		t.Fatalf("read another workspace: %d records, want 0", len(recs))
	}
}

func testReadFrom(t *testing.T, l events.Log) {
	for range 1200 { // more than one direct-get batch
		mustAppendQuiet(t, l, msg("key", "A", "renamed"))
	}
	recs := readAll(t, l, ">", 700)
	if len(recs) != 501 || recs[0].Seq != 700 || recs[500].Seq != 1200 {
		t.Fatalf("read from 700: %d records, first %d", len(recs), recs[0].Seq)
	}
	for i, r := range recs {
		if r.Seq != uint64(700+i) {
			t.Fatalf("record %d has sequence %d, want %d", i, r.Seq, 700+i)
		}
	}
	// An error from fn stops the read.
	stop := errors.New("stop here")
	n := 0
	err := l.Read(ctx(t), ">", 1, func(events.Record) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("read stopped by fn: err %v after %d records, want %v after 3", err, n, stop)
	}
}

func mustAppendQuiet(t *testing.T, l events.Log, m events.Message) {
	t.Helper()
	if _, err := l.Append(ctx(t), []events.Message{m}); err != nil {
		t.Fatal(err)
	}
}

func testConflict(t *testing.T, l events.Log) {
	f := "keyreg.acme.key.A.*"
	mustAppend(t, l, expect(msg("key", "A", "created"), f, 0))
	mustAppend(t, l, msg("key", "B", "created")) // another aggregate does not interfere
	mustAppend(t, l, expect(msg("key", "A", "renamed"), f, 1))
	before := lastSeq(t, l)
	for _, stale := range []uint64{0, 1, 2, 99} {
		_, err := l.Append(ctx(t), []events.Message{expect(msg("key", "A", "revoked"), f, stale)})
		if !errors.Is(err, events.ErrConflict) {
			t.Fatalf("append expecting %d (actual 3): %v, want ErrConflict", stale, err)
		}
	}
	if after := lastSeq(t, l); after != before {
		t.Fatalf("conflicting appends changed the log: %d -> %d", before, after)
	}
	mustAppend(t, l, expect(msg("key", "A", "revoked"), f, 3))
}

func testDedupeRetry(t *testing.T, l events.Log) {
	m := msg("key", "A", "created")
	first := mustAppend(t, l, m)
	again := mustAppend(t, l, m) // the acknowledgement of the first was "lost"
	if again[0] != first[0] {
		t.Fatalf("retried append got sequence %d, first got %d", again[0], first[0])
	}
	if n := lastSeq(t, l); n != 1 {
		t.Fatalf("LastSeq after a retried append = %d, want 1", n)
	}
}

func testDedupeRetryAfterConflict(t *testing.T, l events.Log) {
	f := "keyreg.acme.key.A.*"
	mustAppend(t, l, expect(msg("key", "A", "created"), f, 0))
	m := expect(msg("key", "A", "renamed"), f, 1)
	first := mustAppend(t, l, m)
	// The retry's expectation is now stale; it must still be recognized as a duplicate.
	again, err := l.Append(ctx(t), []events.Message{m})
	if err != nil || again[0] != first[0] {
		t.Fatalf("retry of an applied append: %v, %v; want [%d], nil", again, err, first[0])
	}
	if n := lastSeq(t, l); n != 2 {
		t.Fatalf("LastSeq = %d, want 2", n)
	}
	// Even after later events of the aggregate, the retry finds the stored message.
	mustAppend(t, l, expect(msg("key", "A", "revoked"), f, 2))
	again, err = l.Append(ctx(t), []events.Message{m})
	if err != nil || again[0] != first[0] {
		t.Fatalf("retry after later events: %v, %v; want [%d], nil", again, err, first[0])
	}
	if n := lastSeq(t, l); n != 3 {
		t.Fatalf("LastSeq = %d, want 3", n)
	}
}

func testAtomicBatch(t *testing.T, l events.Log) {
	fa, fn := "keyreg.acme.identifier.A.*", "keyreg.acme.name.segment-x.*"
	seqs := mustAppend(t, l, expect(msg("identifier", "A", "registered"), fa, 0), expect(msg("name", "segment-x", "claimed"), fn, 0))
	if seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("batch sequences %v, want [1 2]", seqs)
	}
	// Second message's expectation fails: neither is stored.
	_, err := l.Append(ctx(t), []events.Message{
		expect(msg("identifier", "B", "registered"), "keyreg.acme.identifier.B.*", 0),
		expect(msg("name", "segment-x", "claimed"), fn, 0),
	})
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("batch with a stale expectation: %v, want ErrConflict", err)
	}
	if n := lastSeq(t, l); n != 2 {
		t.Fatalf("a failed batch stored messages: LastSeq %d, want 2", n)
	}
	if recs := readAll(t, l, "keyreg.acme.identifier.B.*", 1); len(recs) != 0 {
		t.Fatalf("a failed batch stored %d messages of B", len(recs))
	}
}

func testAtomicBatchDedupe(t *testing.T, l events.Log) {
	batch := []events.Message{
		expect(msg("identifier", "A", "registered"), "keyreg.acme.identifier.A.*", 0),
		expect(msg("name", "segment-x", "claimed"), "keyreg.acme.name.segment-x.*", 0),
	}
	first := mustAppend(t, l, batch...)
	again := mustAppend(t, l, batch...)
	if first[0] != again[0] || first[1] != again[1] {
		t.Fatalf("retried batch got %v, first %v", again, first)
	}
	if n := lastSeq(t, l); n != 2 {
		t.Fatalf("LastSeq after a retried batch = %d, want 2", n)
	}
}

// collect follows l from sequence from until it has n records.
func collect(t *testing.T, l events.Log, from uint64, n int) []events.Record {
	t.Helper()
	got, err := follow(l, from, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// follow follows l from sequence from until it has n records, for 20 seconds at most. It
// reports a failure as an error, so that it may run on a goroutine other than the test's.
func follow(l events.Log, from uint64, n int) ([]events.Record, error) {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []events.Record
	done := errors.New("done")
	err := l.Follow(c, from, func(r events.Record) error {
		got = append(got, r)
		if len(got) == n {
			return done
		}
		return nil
	})
	if !errors.Is(err, done) {
		return got, fmt.Errorf("follow from %d: %v after %d records, want %d", from, err, len(got), n)
	}
	return got, nil
}

func testFollow(t *testing.T, l events.Log) {
	mustAppend(t, l, msg("key", "A", "created"))
	var wg sync.WaitGroup
	wg.Add(1)
	var got []events.Record
	var err error
	go func() {
		defer wg.Done()
		got, err = follow(l, 1, 6)
	}()
	for range 5 {
		time.Sleep(5 * time.Millisecond)
		mustAppend(t, l, msg("key", "A", "renamed"))
	}
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Fatalf("followed record %d has sequence %d", i, r.Seq)
		}
	}
	// Follow returns ctx.Err() when the context ends.
	c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := l.Follow(c, 7, func(events.Record) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("follow past the end returned %v, want context.DeadlineExceeded", err)
	}
}

func testFollowFromSequence(t *testing.T, l events.Log) {
	for range 10 {
		mustAppend(t, l, msg("key", "A", "renamed"))
	}
	got := collect(t, l, 4, 7)
	if got[0].Seq != 4 || got[6].Seq != 10 {
		t.Fatalf("follow from 4: first %d last %d, want 4 and 10", got[0].Seq, got[6].Seq)
	}
}

// testConcurrentExpect races writers on one aggregate; each round exactly one wins.
func testConcurrentExpect(t *testing.T, l events.Log) {
	f := "keyreg.acme.key.A.*"
	mustAppend(t, l, expect(msg("key", "A", "created"), f, 0))
	const writers = 8
	var wins, conflicts atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := l.Append(ctx(t), []events.Message{expect(msg("key", "A", "renamed"), f, 1)})
			switch {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, events.ErrConflict):
				conflicts.Add(1)
			default:
				t.Errorf("append: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 || conflicts.Load() != writers-1 {
		t.Fatalf("%d wins and %d conflicts, want 1 and %d", wins.Load(), conflicts.Load(), writers-1)
	}
	if n := lastSeq(t, l); n != 2 {
		t.Fatalf("LastSeq = %d, want 2", n)
	}
}
