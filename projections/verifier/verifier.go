// Package verifier lets a service verify keyreg keys locally, with no network call per
// request. A Verifier loads the latest snapshot of the verify index that keyreg serve keeps
// (see WriteSnapshot; Options.NoSnapshot, or no usable snapshot: none), follows keyreg's
// KEYREG stream over a NATS connection from the event after it (or from the first event),
// folds every key event into an in-memory index, and answers Verify as keyreg's own
// POST /v1/verify does: the same keyindex.Index, fed by the same fold
// (events.KeyState.Apply), so the same codes in the same order, for every workspace.
//
// It connects as a confined subscriber (keyreg subscriber add billing: NATS user billing,
// inbox prefix _INBOX.billing, consumer names billing-1 … billing-N) and follows through
// the consumer named Options.ConsumerName, which it creates, recreates from the first event
// it lacks after a gap, a missed heartbeat or the consumer's loss, and deletes on Close:
//
//	nc, _ := nats.Connect("nats://keyreg.internal:4222", nats.UserInfo("billing", password),
//		nats.CustomInboxPrefix("_INBOX.billing"), nats.MaxReconnects(-1))
//	v, err := verifier.Start(ctx, nc, verifier.Options{ConsumerName: "billing-1"}) // returns once caught up
//	defer v.Close()
//	r := v.Verify(secret, clientIP, "users.track", time.Now())
//	if !r.Valid { ... r.Code ... }
//
// Without ConsumerName it follows with a nats.go ordered consumer, whose server-chosen
// names a confined subscriber may not use: that needs a NATS user with unconfined consumer
// rights.
//
// It fails closed: once it has stopped following the stream (Close, a closed connection,
// an event it cannot apply), or when it has not confirmed for longer than Options.MaxLag
// that it holds every event of the stream (the server unreachable, a stalled consumer),
// Verify answers UNAVAILABLE (Valid false) instead of answering from a state that may have
// been revoked since. Lag, CaughtUpAt, Applied and Err say how far behind it is and why.
//
// With ConsumerName, a confined subscriber's rights (natsserver.ConfinedPermissions) are
// enough: stream info, and create, info, delete and next of its own consumer names.
//
// It imports events, projections/keyindex and nats.go; never Pebble, the NATS server,
// commands, replay or cmd.
package verifier

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// ErrClosed is returned by WaitFor and Err after Close, and after the NATS connection
// closed.
var ErrClosed = errors.New("verifier: closed")

// DefaultMaxLag is the bound on staleness of Options{}: see Options.MaxLag.
const DefaultMaxLag = 5 * time.Second

// Options configure Start. The zero value follows events.StreamName from its first event
// and answers UNAVAILABLE when it lags more than DefaultMaxLag.
type Options struct {
	// Stream is the JetStream stream to follow; "" means events.StreamName.
	Stream string
	// MaxLag bounds how stale an answer may be. The verifier asks the stream for its last
	// sequence every MaxLag/4; once it has applied that sequence, it knows it held every
	// event stored when it asked (CaughtUpAt). When a Verify's now is more than MaxLag
	// after that moment, Verify answers UNAVAILABLE until the verifier confirms again.
	// 0 means DefaultMaxLag; a negative value sets no bound (answers may then go stale
	// without limit while the connection is down, until it closes).
	MaxLag time.Duration
	// OnError, when set, is called with the transient errors of the consumer (missed
	// heartbeats, reconnects, a consumer deleted from under it); the verifier recovers
	// from them by itself. It must not block.
	OnError func(error)
	// ConsumerName, when set, makes the verifier follow through a consumer of exactly this
	// name, which it creates itself, instead of an ordered consumer (whose server-chosen
	// name changes on every reset). Set it to one of the names of a confined subscriber
	// (keyreg subscriber add NAME: NAME-1 … NAME-N), which may create, consume and delete
	// only those. The verifier deletes any consumer of that name, creates it anew from
	// the first event it lacks (in memory, no acknowledgements, expiring
	// ConsumerInactiveThreshold after its client is gone), and on a gap, a missed
	// heartbeat or the consumer deleted from under it, deletes and recreates it from
	// there again, so it applies every event once, in order. Close deletes it. Two
	// verifiers must not share a name: each would delete the other's consumer.
	ConsumerName string
	// NoSnapshot makes the verifier read the stream from its first event instead of
	// starting from the latest snapshot of the verify index that keyreg serve keeps in
	// SnapshotStream (see WriteSnapshot). Without it, a verifier loads that snapshot and
	// follows the stream from the sequence after it; when there is none, or it cannot be
	// read, is corrupt, of another format or of another stream, it reports why to OnError
	// and reads the stream from its first event.
	NoSnapshot bool
}

// ConsumerInactiveThreshold is how long the server keeps the named consumer of
// Options.ConsumerName after its verifier is gone without Close.
const ConsumerInactiveThreshold = 30 * time.Second

// consumerHeartbeat is how often the server confirms a named consumer's pull request is
// alive; two missed in a row make the verifier recreate the consumer.
const consumerHeartbeat = 2 * time.Second

// Verifier is an in-memory verify view of a keyreg stream. Its methods are safe for
// concurrent use.
type Verifier struct {
	index   *keyindex.Index
	fromSeq uint64 // the sequence of the snapshot it started from; 0: none
	applied atomic.Uint64
	stopped atomic.Bool  // set once it stops following: Verify answers UNAVAILABLE
	caught  atomic.Int64 // CaughtUpAt in Unix nanoseconds
	maxLag  time.Duration
	stream  string
	onError func(error)
	cancel  context.CancelFunc // ends the freshness checks and the named consumer's loop

	// halt stops the consumer without waiting, and done is closed once it has stopped
	// (and, with Options.ConsumerName, deleted its consumer).
	halt func()
	done <-chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when applied advances or the verifier stops
	err     error         // why it stopped following; nil while it follows
}

// Start follows the stream on nc from the latest snapshot (or its first event: see
// Options.NoSnapshot) and returns once the verifier has
// applied every event stored when Start was called, so its first answers are as fresh as
// keyreg's own. It returns an error if the stream cannot be read, if an event cannot be
// applied, or if ctx ends first. It does not own nc: Close leaves it open, and closing nc
// stops the verifier (Err then returns ErrClosed).
func Start(ctx context.Context, nc *nats.Conn, opts Options) (*Verifier, error) {
	v := &Verifier{index: &keyindex.Index{}, stream: opts.Stream, onError: opts.OnError, maxLag: opts.MaxLag, changed: make(chan struct{})}
	if v.stream == "" {
		v.stream = events.StreamName
	}
	if v.maxLag == 0 {
		v.maxLag = DefaultMaxLag
	}
	wctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel // set before the consumer starts: stop reads it
	js, err := jetstream.New(nc)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("verifier: %w", err)
	}
	asked := time.Now() // the stream's last sequence below is at least as recent
	s, err := js.Stream(ctx, v.stream)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("verifier: stream %s: %w", v.stream, err)
	}
	last := s.CachedInfo().State.LastSeq
	if !opts.NoSnapshot {
		v.startFromSnapshot(ctx, js, s.CachedInfo())
	}
	if opts.ConsumerName != "" {
		n := &named{v: v, js: js, name: opts.ConsumerName, done: make(chan struct{})}
		it, err := n.open(ctx)
		if err != nil {
			cancel()
			return nil, err
		}
		n.setIter(it)
		v.follow(n.halt, n.done)
		go n.run(wctx, it)
	} else if err := v.followOrdered(ctx, js); err != nil {
		cancel()
		return nil, err
	}
	if err := v.WaitFor(ctx, last); err != nil {
		v.Close()
		return nil, err
	}
	v.caught.Store(asked.UnixNano())
	if v.maxLag > 0 {
		go v.checkFreshness(wctx, s, v.maxLag/4)
	}
	return v, nil
}

// startFromSnapshot loads the latest snapshot of the verify index, if any, and makes the
// verifier follow the stream from the sequence after it. When the snapshot cannot be used,
// it reports why to OnError and leaves the verifier empty, to read the stream from its
// first event.
func (v *Verifier) startFromSnapshot(ctx context.Context, js jetstream.JetStream, info *jetstream.StreamInfo) {
	// A second try: the server purges a snapshot once it has written the next one, which
	// may happen while this one is read.
	var x *keyindex.Index
	var seq uint64
	var err error
	for range 2 {
		x = &keyindex.Index{}
		if seq, err = loadSnapshot(ctx, js, info, x); err == nil || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if v.onError != nil {
			v.onError(fmt.Errorf("verifier: snapshot not used, reading %s from its first event: %w", v.stream, err))
		}
		return
	}
	v.index, v.fromSeq = x, seq
	v.applied.Store(seq)
}

// StartedFrom returns the stream sequence of the snapshot the verifier started from, or 0
// when it read the stream from its first event.
func (v *Verifier) StartedFrom() uint64 { return v.fromSeq }

// follow records how to stop the consumer that now follows the stream, stops it at once if
// the verifier stopped already (its first events failed), and stops the verifier once
// the consumer has stopped (Close, an apply error, or the connection closed).
func (v *Verifier) follow(halt func(), done <-chan struct{}) {
	v.mu.Lock()
	v.halt, v.done = halt, done
	stopped := v.err != nil
	v.mu.Unlock()
	if stopped {
		halt()
	}
	go func() {
		<-done
		v.stop(ErrClosed)
	}()
}

// followOrdered follows the stream with an ordered consumer from its first event.
func (v *Verifier) followOrdered(ctx context.Context, js jetstream.JetStream) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from := v.applied.Load(); from > 0 { // started from a snapshot
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cons, err := js.OrderedConsumer(ctx, v.stream, cfg)
	if err != nil {
		return fmt.Errorf("verifier: follow %s: %w%s", v.stream, err, orderedHint(js.Conn()))
	}
	cc, err := cons.Consume(v.handle, jetstream.ConsumeErrHandler(v.consumeError), jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("verifier: follow %s: %w%s", v.stream, err, orderedHint(js.Conn()))
	}
	v.follow(func() { go cc.Stop() }, cc.Closed()) // not from the message handler's goroutine
	return nil
}

// orderedHint explains a failure to create an ordered consumer that the server refused
// for want of permission: a confined subscriber must set Options.ConsumerName.
func orderedHint(nc *nats.Conn) string {
	if last := nc.LastError(); errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), "$JS.API.CONSUMER.") {
		return fmt.Sprintf(" (%v: a confined subscriber must set Options.ConsumerName to one of its consumer names)", last)
	}
	return ""
}

// checkFreshness asks the stream for its last sequence every interval, and once the
// verifier has applied it, records the moment it asked as CaughtUpAt. It returns when the
// verifier stops.
func (v *Verifier) checkFreshness(ctx context.Context, s jetstream.Stream, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		asked := time.Now()
		ictx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		info, err := s.Info(ictx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && v.onError != nil {
				v.onError(fmt.Errorf("verifier: ask %s for its last sequence: %w", v.stream, err))
			}
			continue
		}
		if err := v.WaitFor(ctx, info.State.LastSeq); err != nil {
			return // stopped
		}
		v.caught.Store(asked.UnixNano())
	}
}

// handle applies one message. The consumer calls it for one message at a time, in stream
// order.
func (v *Verifier) handle(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		v.stop(fmt.Errorf("verifier: %w", err))
		return
	}
	v.apply(m, md)
}

// apply applies one message with its metadata, unless it was applied already.
func (v *Verifier) apply(m jetstream.Msg, md *jetstream.MsgMetadata) {
	seq := md.Sequence.Stream
	if seq <= v.applied.Load() {
		return // a redelivery after the consumer was recreated
	}
	r := events.Record{Seq: seq, Subject: m.Subject(), Data: m.Data(), Time: md.Timestamp}
	if err := v.index.Apply(r); err != nil {
		v.stop(fmt.Errorf("verifier: %w", err))
		return
	}
	v.applied.Store(seq)
	v.mu.Lock()
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
}

func (v *Verifier) consumeError(_ jetstream.ConsumeContext, err error) {
	if v.onError != nil {
		v.onError(err)
	}
}

// stop records why the verifier stopped following (the first reason wins), wakes the
// waiters and stops the consumer.
func (v *Verifier) stop(err error) {
	v.stopped.Store(true)
	if v.cancel != nil {
		v.cancel()
	}
	v.mu.Lock()
	if v.err == nil {
		v.err = err
		close(v.changed)
		v.changed = make(chan struct{})
	}
	halt := v.halt
	v.mu.Unlock()
	if halt != nil {
		halt()
	}
}

// Verify checks a presented secret for a request from ip that needs permission (""
// checks none), at time now, against the events applied so far: the same checks, order
// and codes as keyreg's POST /v1/verify (see keyindex.Index.Verify). It answers
// keyindex.CodeUnavailable (Valid false) instead once the verifier has stopped
// following the stream, or when now is more than Options.MaxLag after CaughtUpAt. Every
// answer carries AppliedSeq, the stream sequence the verifier had applied when it
// answered (the answer holds every change up to it; a change applied during the call
// may be in it too), so a service can tell how fresh it was. It makes no network call
// and does not allocate.
func (v *Verifier) Verify(secret string, ip netip.Addr, permission events.Permission, now time.Time) keyindex.VerifyResult {
	applied := v.applied.Load() // read first: the index holds at least this much
	if v.stopped.Load() || (v.maxLag > 0 && now.UnixNano()-v.caught.Load() > int64(v.maxLag)) {
		return keyindex.VerifyResult{Code: keyindex.CodeUnavailable, AppliedSeq: applied}
	}
	r := v.index.Verify(secret, ip, permission, now)
	r.AppliedSeq = applied
	return r
}

// CaughtUpAt returns the last moment at which the verifier is known to have held every
// event of the stream: when it last asked the stream for its last sequence and has since
// applied it.
func (v *Verifier) CaughtUpAt() time.Time { return time.Unix(0, v.caught.Load()) }

// Lag returns how far behind the stream the verifier's answers may be at now: the time
// since CaughtUpAt (0 if that is after now). Verify answers UNAVAILABLE once it exceeds
// Options.MaxLag.
func (v *Verifier) Lag(now time.Time) time.Duration {
	return max(0, now.Sub(v.CaughtUpAt()))
}

// Key returns the state of key ws/id as the verifier knows it.
func (v *Verifier) Key(ws events.Workspace, id string) (events.KeyState, bool) {
	return v.index.Key(ws, id)
}

// Keys returns how many keys the verifier knows, revoked ones included.
func (v *Verifier) Keys() int { return v.index.Len() }

// Applied returns the stream sequence of the last event applied.
func (v *Verifier) Applied() uint64 { return v.applied.Load() }

// Err returns why the verifier stopped following the stream (ErrClosed after Close or
// when the connection closed, or the error of an event it could not apply), or nil while
// it follows. After an error Verify answers UNAVAILABLE: treat it as unhealthy.
func (v *Verifier) Err() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.err
}

// WaitFor blocks until the verifier has applied stream sequence seq, for instance the
// sequence a keyreg write returned (its key's version), so that a following Verify sees
// that write. It returns an error wrapping ctx.Err() when ctx ends first, or the error the
// verifier stopped with.
func (v *Verifier) WaitFor(ctx context.Context, seq uint64) error {
	for {
		v.mu.Lock()
		ch, stopped := v.changed, v.err
		v.mu.Unlock()
		applied := v.applied.Load()
		if applied >= seq {
			return nil
		}
		if stopped != nil {
			return fmt.Errorf("verifier: wait for sequence %d (applied %d): %w", seq, applied, stopped)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verifier: wait for sequence %d (applied %d): %w", seq, applied, ctx.Err())
		case <-ch:
		}
	}
}

// Close stops following the stream; Verify then answers UNAVAILABLE. Calling it again
// does nothing.
func (v *Verifier) Close() error {
	v.stop(ErrClosed)
	v.mu.Lock()
	done := v.done
	v.mu.Unlock()
	if done != nil {
		<-done
	}
	return nil
}

// Dump renders the verifier's index (keyindex.Index.Dump): two verifiers that answer
// alike dump alike. It is meant for tests.
func (v *Verifier) Dump() (string, error) { return v.index.Dump() }
