// Package usage keeps what verify sees of each key's use, outside the event stream: when
// a key was last presented and from which address, and how many verifies of it ended in
// each outcome per day (UTC). Verify records each use in memory (Recorder: no I/O, no
// allocation once a key was seen in the current interval); a Tracker flushes what was
// recorded once per interval to a JetStream key-value bucket of its own (Bucket), one
// entry per key and node, so the counts of several nodes add up and no node overwrites
// another's. Every node watches the bucket and answers from memory.
//
// It belongs to cmd/keyreg: it imports events and nats.go, never the projections or
// the commands.
package usage

import (
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// Outcomes are the verify codes that usage counts: those of a verify that found the key.
// MALFORMED and NOT_FOUND name no key and are not counted.
var Outcomes = []string{
	keyindex.CodeValid, keyindex.CodeRevoked, keyindex.CodeExpired,
	keyindex.CodeIPNotAllowed, keyindex.CodePermissionDenied,
}

const numOutcomes = 5

// outcomeIndex returns the index of code in Outcomes, or -1 if usage does not count it.
func outcomeIndex(code string) int {
	switch code {
	case keyindex.CodeValid:
		return 0
	case keyindex.CodeRevoked:
		return 1
	case keyindex.CodeExpired:
		return 2
	case keyindex.CodeIPNotAllowed:
		return 3
	case keyindex.CodePermissionDenied:
		return 4
	}
	return -1
}

// Ref names a key: its workspace and id.
type Ref struct {
	Workspace events.Workspace
	ID        string
}

// dayCount is the uses of one UTC day (days since the Unix epoch; 0: an unused slot).
type dayCount struct {
	day int32
	n   [numOutcomes]uint32
}

// pending is what was recorded of one key since the last take.
type pending struct {
	mu   sync.Mutex
	at   int64 // Unix nanoseconds of the latest use
	ip   netip.Addr
	days [2]dayCount // a flush interval is at most a day: at most two days at once
}

func (p *pending) add(o int, ip netip.Addr, now time.Time) {
	ns := now.UnixNano()
	day := int32(now.Unix() / 86400)
	p.mu.Lock()
	if ns >= p.at {
		p.at, p.ip = ns, ip
	}
	switch {
	case p.days[0].day == day || p.days[0].day == 0:
		p.days[0].day = day
		p.days[0].n[o]++
	case p.days[1].day == day || p.days[1].day == 0:
		p.days[1].day = day
		p.days[1].n[o]++
	default: // a third day in one interval (the clock jumped): count it in the later slot
		i := 0
		if p.days[1].day > p.days[0].day {
			i = 1
		}
		p.days[i].n[o]++
	}
	p.mu.Unlock()
}

// Recorder notes each verify of a key in memory until a Tracker takes what it noted. Its
// methods are safe for concurrent use; Record never blocks on I/O.
type Recorder struct {
	mu   sync.RWMutex
	keys map[Ref]*pending
}

// Record notes one verify of key id of workspace ws that answered code, for a request
// from ip, at now. Codes that name no key (MALFORMED, NOT_FOUND, UNAVAILABLE) and an
// empty id are ignored. A key already noted since the last take costs no allocation;
// the first use of a key in an interval allocates its entry.
func (r *Recorder) Record(ws events.Workspace, id, code string, ip netip.Addr, now time.Time) {
	o := outcomeIndex(code)
	if o < 0 || id == "" {
		return
	}
	k := Ref{ws, id}
	r.mu.RLock()
	if p := r.keys[k]; p != nil {
		p.add(o, ip, now) // under the read lock: take cannot swap the map meanwhile
		r.mu.RUnlock()
		return
	}
	r.mu.RUnlock()
	r.mu.Lock()
	if r.keys == nil {
		r.keys = map[Ref]*pending{}
	}
	p := r.keys[k]
	if p == nil {
		// The id and workspace may share memory with the index: keep copies.
		p = &pending{}
		r.keys[Ref{events.Workspace(strings.Clone(string(ws))), strings.Clone(id)}] = p
	}
	p.add(o, ip, now)
	r.mu.Unlock()
}

// take returns what was noted since the last take and starts anew. The returned map is
// the caller's: no Record touches it any more.
func (r *Recorder) take() map[Ref]*pending {
	r.mu.Lock()
	m := r.keys
	r.keys = make(map[Ref]*pending, len(m))
	r.mu.Unlock()
	return m
}
