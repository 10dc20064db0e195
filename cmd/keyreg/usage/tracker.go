package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
)

// Bucket is the JetStream key-value bucket that holds the keys' use. Its keys are
// "<workspace>.<key id>.<node>", each value one node's Entry of that key: a node writes
// only its own entries, so the counts of several nodes add up.
const Bucket = "KEYREG_USAGE"

// DefaultInterval is how often a Tracker flushes what was recorded (Options.Interval 0).
const DefaultInterval = time.Minute

// MaxInterval bounds Options.Interval: a key's pending uses span at most two days.
const MaxInterval = 24 * time.Hour

// MaxDays is how many days of counts an entry keeps (today included); older days are
// dropped when the entry is next written.
const MaxDays = 90

// finalFlushTimeout bounds the flush on shutdown.
const finalFlushTimeout = 5 * time.Second

// publishWindow is how many writes a flush has in flight at once.
const publishWindow = 256

// dateLayout is the form of a day in Entry.Days (UTC).
const dateLayout = "2006-01-02"

// Entry is one node's record of a key's use, as stored in the bucket.
type Entry struct {
	// LastUsedAt is the start of the flush interval of the key's latest use on the node.
	LastUsedAt time.Time `json:"last_used_at"`
	// LastUsedIP is the end-user address of that use.
	LastUsedIP string `json:"last_used_ip"`
	// LastUsedNanos is the exact time of that use (Unix nanoseconds): it orders the uses
	// of one interval on several nodes, and is never shown.
	LastUsedNanos int64 `json:"last_used_ns"`
	// Days holds the count of verifies per outcome (Outcomes) per UTC day (2006-01-02),
	// for at most the MaxDays latest days.
	Days map[string]map[string]uint64 `json:"days"`
}

func (e *Entry) clone() *Entry {
	c := &Entry{LastUsedAt: e.LastUsedAt, LastUsedIP: e.LastUsedIP, LastUsedNanos: e.LastUsedNanos, Days: make(map[string]map[string]uint64, len(e.Days))}
	for d, m := range e.Days {
		c.Days[d] = maps.Clone(m)
	}
	return c
}

// merge adds what was recorded in p, the use time truncated to interval, and drops the
// days before the MaxDays latest as of now.
func (e *Entry) merge(p *pending, interval time.Duration, now time.Time) {
	if e.Days == nil {
		e.Days = map[string]map[string]uint64{}
	}
	if p.at >= e.LastUsedNanos {
		e.LastUsedAt, e.LastUsedIP, e.LastUsedNanos = time.Unix(0, p.at).UTC().Truncate(interval), ipString(p.ip), p.at
	}
	for _, d := range p.days {
		if d.day == 0 {
			continue
		}
		date := time.Unix(int64(d.day)*86400, 0).UTC().Format(dateLayout)
		m := e.Days[date]
		if m == nil {
			m = map[string]uint64{}
			e.Days[date] = m
		}
		for i, n := range d.n {
			if n > 0 {
				m[Outcomes[i]] += uint64(n)
			}
		}
	}
	oldest := now.UTC().AddDate(0, 0, -(MaxDays - 1)).Format(dateLayout)
	for d := range e.Days {
		if d < oldest {
			delete(e.Days, d)
		}
	}
}

// Options configure Open.
type Options struct {
	// Node names this node in the bucket's keys: letters, digits, '-' and '_'. Keep it
	// across restarts, so that a node adds to its own entries rather than starting new
	// ones (a new name would also count right, in more entries).
	Node string
	// Interval is how often Run flushes (0: DefaultInterval; at most MaxInterval); it
	// is also the precision of last_used_at.
	Interval time.Duration
	// Replicas of the bucket when Open makes it (0: 1): those of the stream.
	Replicas int
	// Logger gets the flushes that fail (nil: slog.Default()).
	Logger *slog.Logger
}

// Tracker records the keys' use in memory (its Recorder), flushes it to the bucket every
// interval (Run), and answers from a watch of the whole bucket, every node's entries.
type Tracker struct {
	Recorder

	opts   Options
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	watch  jetstream.KeyWatcher
	cancel context.CancelFunc // stops the watch
	done   chan struct{}      // closed once the watch has stopped

	mu   sync.RWMutex
	seen map[Ref]map[string]*Entry // by key, by node: the bucket as watched

	// Run's alone.
	own   map[Ref]*Entry // this node's entries as last written or to be written
	dirty map[Ref]struct{}
}

// Open makes the bucket if needed (with opts.Replicas), starts watching it, and returns
// once it holds every entry stored, or an error (ctx's, or the bucket's).
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Tracker, error) {
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Interval < 0 || opts.Interval > MaxInterval {
		return nil, fmt.Errorf("usage: flush interval %s: want more than 0 and at most %s", opts.Interval, MaxInterval)
	}
	if !validToken(opts.Node) {
		return nil, fmt.Errorf("usage: node name %q: want letters, digits, - and _", opts.Node)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "keyreg: the keys' use (last used, daily verify counts), one entry per key and node",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(opts.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("usage bucket %s: %w", Bucket, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("usage bucket %s: watch: %w", Bucket, err)
	}
	t := &Tracker{opts: opts, js: js, kv: kv, watch: w, cancel: cancel, done: make(chan struct{}),
		seen: map[Ref]map[string]*Entry{}, own: map[Ref]*Entry{}, dirty: map[Ref]struct{}{}}
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			cancel()
			w.Stop()
			return nil, fmt.Errorf("usage bucket %s: read: %w", Bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				cancel()
				return nil, fmt.Errorf("usage bucket %s: read: the watch stopped", Bucket)
			}
			if e == nil {
				initial = false
				break
			}
			t.apply(e)
		}
	}
	go func() {
		defer close(t.done)
		for e := range w.Updates() {
			if e != nil {
				t.apply(e)
			}
		}
	}()
	return t, nil
}

// Interval returns the flush interval.
func (t *Tracker) Interval() time.Duration { return t.opts.Interval }

// apply records one entry of the bucket.
func (t *Tracker) apply(kve jetstream.KeyValueEntry) {
	parts := strings.Split(kve.Key(), ".")
	if len(parts) != 3 {
		return
	}
	var e Entry
	if err := json.Unmarshal(kve.Value(), &e); err != nil {
		t.opts.Logger.Warn("usage: an entry that does not decode", "key", kve.Key(), "err", err)
		return
	}
	k := Ref{events.Workspace(parts[0]), parts[1]}
	t.mu.Lock()
	byNode := t.seen[k]
	if byNode == nil {
		byNode = map[string]*Entry{}
		t.seen[k] = byNode
	}
	byNode[parts[2]] = &e
	t.mu.Unlock()
}

// LastUsed returns when key id of ws was last used, to the flush interval, and from which
// address, over every node's flushed entries; ok is false if no use was flushed.
func (t *Tracker) LastUsed(ws events.Workspace, id string) (at time.Time, ip string, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var latest int64
	for _, e := range t.seen[Ref{ws, id}] {
		if !ok || e.LastUsedNanos > latest {
			at, ip, latest, ok = e.LastUsedAt, e.LastUsedIP, e.LastUsedNanos, true
		}
	}
	return at, ip, ok
}

// Day is one UTC day's verifies of a key: a count for every outcome (Outcomes).
type Day struct {
	Date   string            // 2006-01-02
	Counts map[string]uint64 // every outcome of Outcomes, 0 included
}

// Daily returns the verifies of key id of ws per outcome on each of the days UTC days up
// to now's, oldest first, summed over every node's flushed entries.
func (t *Tracker) Daily(ws events.Workspace, id string, days int, now time.Time) []Day {
	out := make([]Day, days)
	index := make(map[string]int, days)
	today := now.UTC()
	for i := range out {
		d := today.AddDate(0, 0, i-days+1).Format(dateLayout)
		out[i] = Day{Date: d, Counts: make(map[string]uint64, numOutcomes)}
		for _, o := range Outcomes {
			out[i].Counts[o] = 0
		}
		index[d] = i
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, e := range t.seen[Ref{ws, id}] {
		for d, m := range e.Days {
			i, ok := index[d]
			if !ok {
				continue
			}
			for o, n := range m {
				if _, known := out[i].Counts[o]; known {
					out[i].Counts[o] += n
				}
			}
		}
	}
	return out
}

// Run flushes what was recorded every interval until ctx ends, then flushes once more
// (best effort, bounded) and stops watching. It returns nil.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlushTimeout)
			if err := t.Flush(fctx); err != nil {
				t.opts.Logger.Warn("usage: the last flush before shutdown failed: the latest uses are lost", "err", err)
			}
			cancel()
			t.Close()
			return nil
		case <-tick.C:
			if err := t.Flush(ctx); err != nil && ctx.Err() == nil {
				t.opts.Logger.Warn("usage: flush failed; retrying at the next interval", "err", err)
			}
		}
	}
}

// Flush writes this node's entry of every key recorded since the last flush (and of
// those whose last write failed) to the bucket. Only Run (or a caller that does not run
// Run) may call it.
func (t *Tracker) Flush(ctx context.Context) error {
	now := time.Now()
	for k, p := range t.take() {
		e := t.own[k]
		if e == nil {
			e = &Entry{}
			t.mu.RLock()
			if prev := t.seen[k][t.opts.Node]; prev != nil {
				e = prev.clone() // nobody else writes this node's entries
			}
			t.mu.RUnlock()
			t.own[k] = e
		}
		e.merge(p, t.opts.Interval, now)
		t.dirty[k] = struct{}{}
	}
	var errs []error
	type inflight struct {
		k Ref
		f jetstream.PubAckFuture
	}
	batch := make([]inflight, 0, publishWindow)
	wait := func() {
		for _, in := range batch {
			select {
			case <-in.f.Ok():
				delete(t.dirty, in.k)
			case err := <-in.f.Err():
				errs = append(errs, fmt.Errorf("write %s: %w", t.key(in.k), err))
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("write %s: %w", t.key(in.k), ctx.Err()))
			}
		}
		batch = batch[:0]
	}
	for k := range t.dirty {
		if !validToken(string(k.Workspace)) || !validToken(k.ID) {
			delete(t.dirty, k) // no such key can be verified: never expected
			continue
		}
		data, err := json.Marshal(t.own[k])
		if err != nil {
			return err
		}
		f, err := t.js.PublishAsync("$KV."+Bucket+"."+t.key(k), data)
		if err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", t.key(k), err))
			continue
		}
		if batch = append(batch, inflight{k, f}); len(batch) == publishWindow {
			wait()
		}
	}
	wait()
	if len(errs) > 0 {
		return fmt.Errorf("usage: %d of the writes failed, first: %w", len(errs), errs[0])
	}
	return nil
}

// key is the bucket key of this node's entry of k.
func (t *Tracker) key(k Ref) string {
	return string(k.Workspace) + "." + k.ID + "." + t.opts.Node
}

// Close stops watching the bucket; it does not flush (Run does on its way out).
func (t *Tracker) Close() {
	t.cancel()
	t.watch.Stop() // closes the watch's channel: its goroutine ends
	<-t.done
}

// validToken reports whether s is a non-empty token of letters, digits, '-' and '_': a
// part of a bucket key.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// String renders ip for an Entry ("" for the zero address).
func ipString(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	return ip.String()
}
