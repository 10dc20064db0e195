package storetest

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/keyreg/keyreg/events"
)

// RunGroup runs the suite of events.GroupAppender (group commit); newLog returns a fresh,
// empty log for each subtest.
func RunGroup(t *testing.T, newLog func(t *testing.T) events.GroupedLog) {
	tests := []struct {
		name string
		fn   func(t *testing.T, l events.GroupedLog)
	}{
		{"StaleGroup", testGroupStale},
		{"ManyGroups", testGroupMany},
		{"SameAggregate", testGroupSameAggregate},
		{"SameFilter", testGroupSameFilter},
		{"AtomicGroups", testGroupAtomic},
		{"Dedupe", testGroupDedupe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newLog(t)) })
	}
}

// appendGroup appends groups and checks there is one result per group.
func appendGroup(t *testing.T, l events.GroupedLog, groups ...[]events.Message) []events.AppendResult {
	t.Helper()
	res := l.AppendGroup(ctx(t), groups)
	if len(res) != len(groups) {
		t.Fatalf("AppendGroup returned %d results for %d groups", len(res), len(groups))
	}
	return res
}

// wantStored checks that res is a success and that the log holds msgs at its sequences.
func wantStored(t *testing.T, l events.Log, name string, res events.AppendResult, msgs ...events.Message) {
	t.Helper()
	if res.Err != nil || len(res.Seqs) != len(msgs) {
		t.Fatalf("%s: %v, %v; want %d sequences", name, res.Seqs, res.Err, len(msgs))
	}
	for i, m := range msgs {
		r, err := l.Get(ctx(t), res.Seqs[i])
		if err != nil || r.MsgID != m.ID || r.Subject != m.Subject {
			t.Fatalf("%s: message %d at sequence %d is %s %s (%v), want %s %s", name, i, res.Seqs[i], r.MsgID, r.Subject, err, m.ID, m.Subject)
		}
	}
}

func wantConflict(t *testing.T, name string, res events.AppendResult) {
	t.Helper()
	if !errors.Is(res.Err, events.ErrConflict) || res.Seqs != nil {
		t.Fatalf("%s: %v, %v; want ErrConflict", name, res.Seqs, res.Err)
	}
}

// testGroupMany: forty one-message commands in one call (as many concurrent commands
// make), one of them stale: the other thirty-nine are stored in order, the stale one fails
// alone. Logs that batch only from some size on batch these.
func testGroupMany(t *testing.T, l events.GroupedLog) {
	const n, stale = 40, 29
	var groups [][]events.Message
	for i := range n {
		id := fmt.Sprint("K", i)
		m := expect(msg("key", id, "created"), "keyreg.acme.key."+id+".*", 0)
		if i == stale {
			m.ExpectSeq = 7 // nothing is stored on it yet
		}
		groups = append(groups, []events.Message{m})
	}
	res := appendGroup(t, l, groups...)
	var prev uint64
	for i, r := range res {
		if i == stale {
			wantConflict(t, fmt.Sprint("command ", i), r)
			continue
		}
		wantStored(t, l, fmt.Sprint("command ", i), r, groups[i]...)
		if r.Seqs[0] <= prev {
			t.Fatalf("command %d stored at %d, not after %d", i, r.Seqs[0], prev)
		}
		prev = r.Seqs[0]
	}
	if got := lastSeq(t, l); got != n-1 {
		t.Fatalf("LastSeq %d, want %d", got, n-1)
	}
}

// testGroupStale: one stale command among others fails alone; the others are appended in
// order; the stale one then succeeds alone with a fresh expectation.
func testGroupStale(t *testing.T, l events.GroupedLog) {
	fa, fb, fc := "keyreg.acme.key.A.*", "keyreg.acme.key.B.*", "keyreg.acme.key.C.*"
	created := appendGroup(t, l,
		[]events.Message{expect(msg("key", "A", "created"), fa, 0)},
		[]events.Message{expect(msg("key", "B", "created"), fb, 0)},
		[]events.Message{expect(msg("key", "C", "created"), fc, 0)})
	for i, r := range created {
		if r.Err != nil || !slices.Equal(r.Seqs, []uint64{uint64(i + 1)}) {
			t.Fatalf("creation %d: %v, %v; want [%d]", i, r.Seqs, r.Err, i+1)
		}
	}
	a, b, c := expect(msg("key", "A", "renamed"), fa, 1), expect(msg("key", "B", "renamed"), fb, 1), expect(msg("key", "C", "renamed"), fc, 3)
	res := appendGroup(t, l, []events.Message{a}, []events.Message{b}, []events.Message{c})
	wantStored(t, l, "A", res[0], a)
	wantConflict(t, "B, expecting 1 (actual 2)", res[1])
	wantStored(t, l, "C", res[2], c)
	if res[0].Seqs[0] >= res[2].Seqs[0] {
		t.Fatalf("A stored at %d, after C at %d", res[0].Seqs[0], res[2].Seqs[0])
	}
	if n := lastSeq(t, l); n != 5 {
		t.Fatalf("LastSeq %d, want 5: the stale command stored something", n)
	}
	if recs := readAll(t, l, fb, 1); len(recs) != 1 {
		t.Fatalf("B has %d events, want its creation only", len(recs))
	}
	// The stale command, decided again, goes alone.
	b = expect(msg("key", "B", "renamed"), fb, 2)
	wantStored(t, l, "B retried", appendGroup(t, l, []events.Message{b})[0], b)
}

// testGroupSameAggregate: commands on one aggregate in one call keep their order, and each
// expectation is checked against the log as the commands before it left it.
func testGroupSameAggregate(t *testing.T, l events.GroupedLog) {
	f := "keyreg.acme.key.A.*"
	mustAppend(t, l, expect(msg("key", "A", "created"), f, 0))
	// Two commands decided on version 1: the first wins, the second is stale.
	first, second := expect(msg("key", "A", "renamed"), f, 1), expect(msg("key", "A", "revoked"), f, 1)
	other := expect(msg("key", "B", "created"), "keyreg.acme.key.B.*", 0)
	res := appendGroup(t, l, []events.Message{first}, []events.Message{second}, []events.Message{other})
	wantStored(t, l, "first", res[0], first)
	wantConflict(t, "second, decided on the same version", res[1])
	wantStored(t, l, "other aggregate", res[2], other)
	if res[0].Seqs[0] != 2 || res[2].Seqs[0] != 3 {
		t.Fatalf("sequences %v and %v, want 2 and 3", res[0].Seqs, res[2].Seqs)
	}
	// A command that expects what the one before it leaves holds: the first is stale
	// here, so the second's expectation (version 2) is right.
	stale, fresh := expect(msg("key", "A", "renamed"), f, 1), expect(msg("key", "A", "revoked"), f, 2)
	res = appendGroup(t, l, []events.Message{stale}, []events.Message{fresh})
	wantConflict(t, "stale", res[0])
	wantStored(t, l, "fresh", res[1], fresh)
	// Commands chained on one aggregate without expectations keep their order.
	x, y := msg("key", "A", "noted"), msg("key", "A", "noted")
	res = appendGroup(t, l, []events.Message{x}, []events.Message{y})
	wantStored(t, l, "x", res[0], x)
	wantStored(t, l, "y", res[1], y)
	if res[0].Seqs[0]+1 != res[1].Seqs[0] {
		t.Fatalf("x at %v, y at %v: want y right after x", res[0].Seqs, res[1].Seqs)
	}
}

// testGroupSameFilter: an expectation on a wildcard filter over many aggregates (as a
// quota or a name claim makes) sees the commands before it in the same call.
func testGroupSameFilter(t *testing.T, l events.GroupedLog) {
	f := "keyreg.acme.name.*.claimed"
	one, two := expect(msg("name", "shop", "claimed"), f, 0), expect(msg("name", "sale", "claimed"), f, 0)
	res := appendGroup(t, l, []events.Message{one}, []events.Message{two})
	wantStored(t, l, "first claim", res[0], one)
	wantConflict(t, "second claim on the same filter", res[1])
	// The subject itself as filter: exactly one of two claims of one name wins.
	g := "keyreg.acme.name.winter.claimed"
	a, b := expect(msg("name", "winter", "claimed"), g, 0), expect(msg("name", "winter", "claimed"), g, 0)
	res = appendGroup(t, l, []events.Message{a}, []events.Message{b})
	wantStored(t, l, "claim a", res[0], a)
	wantConflict(t, "claim b", res[1])
}

// testGroupAtomic: a command of several events is all or nothing among others.
func testGroupAtomic(t *testing.T, l events.GroupedLog) {
	fn := "keyreg.acme.name.segment-x.*"
	mustAppend(t, l, expect(msg("name", "segment-x", "claimed"), fn, 0))
	ok1 := []events.Message{
		expect(msg("identifier", "A", "registered"), "keyreg.acme.identifier.A.*", 0),
		expect(msg("name", "segment-a", "claimed"), "keyreg.acme.name.segment-a.*", 0),
	}
	bad := []events.Message{
		expect(msg("identifier", "B", "registered"), "keyreg.acme.identifier.B.*", 0),
		expect(msg("name", "segment-x", "claimed"), fn, 0), // taken
	}
	ok2 := []events.Message{
		expect(msg("identifier", "C", "registered"), "keyreg.acme.identifier.C.*", 0),
		expect(msg("name", "segment-c", "claimed"), "keyreg.acme.name.segment-c.*", 0),
	}
	res := appendGroup(t, l, ok1, bad, ok2)
	wantStored(t, l, "first command", res[0], ok1...)
	wantConflict(t, "command with a taken name", res[1])
	wantStored(t, l, "third command", res[2], ok2...)
	if recs := readAll(t, l, "keyreg.acme.identifier.B.*", 1); len(recs) != 0 {
		t.Fatalf("the failed command stored %d of its events", len(recs))
	}
	if n := lastSeq(t, l); n != 5 {
		t.Fatalf("LastSeq %d, want 5", n)
	}
}

// testGroupDedupe: a retried command (its first id stored) gets the stored sequences and
// stores nothing; so does the second of two runs of one command in one call.
func testGroupDedupe(t *testing.T, l events.GroupedLog) {
	f := "keyreg.acme.key.A.*"
	done := expect(msg("key", "A", "created"), f, 0)
	stored := mustAppend(t, l, done)
	fresh := msg("key", "B", "created")
	twice := msg("key", "C", "created")
	res := appendGroup(t, l, []events.Message{done}, []events.Message{fresh}, []events.Message{twice}, []events.Message{twice})
	if res[0].Err != nil || !slices.Equal(res[0].Seqs, stored) {
		t.Fatalf("retried command: %v, %v; want %v", res[0].Seqs, res[0].Err, stored)
	}
	wantStored(t, l, "fresh command", res[1], fresh)
	wantStored(t, l, "first run", res[2], twice)
	if res[3].Err != nil || !slices.Equal(res[3].Seqs, res[2].Seqs) {
		t.Fatalf("second run: %v, %v; want the first run's %v", res[3].Seqs, res[3].Err, res[2].Seqs)
	}
	if n := lastSeq(t, l); n != 3 {
		t.Fatalf("LastSeq %d, want 3", n)
	}
}
