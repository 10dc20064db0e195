package natslog

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
)

// FollowInactiveThreshold is how long the server keeps the consumer of a follower
// (FollowSubject, Follow) whose client has gone without deleting it, say after a crash or
// a lost connection; nats.go's default is five minutes. A follower that returns deletes
// its consumer at once.
const FollowInactiveThreshold = 5 * time.Second

// FollowPullExpiry and FollowHeartbeat are the pull requests' expiry and idle heartbeat
// of the followers' ordered consumers (a heartbeat must be under half the expiry).
const (
	FollowPullExpiry = 5 * time.Second
	FollowHeartbeat  = time.Second
)

// FollowStartTimeout bounds how long a follower keeps trying to make its consumer while
// the stream cannot answer (a cluster electing a leader, a node busy starting).
const FollowStartTimeout = 2 * time.Minute

// orderedConsumer makes an ordered consumer of cfg and starts pulling from it. While the
// stream cannot answer (see unavailable), it tries again, waiting longer each time, for up
// to FollowStartTimeout: a node starting beside a busy or electing cluster must not stop
// for a consumer that took a few seconds to make.
func (l *Log) orderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig, maxMsgs int) (jetstream.Consumer, jetstream.MessagesContext, error) {
	deadline := time.Now().Add(FollowStartTimeout)
	wait := 100 * time.Millisecond
	for {
		cons, err := l.js.OrderedConsumer(ctx, events.StreamName, cfg)
		if err == nil {
			// Heartbeats every second: an ordered consumer lives on one server, and when
			// that server goes (a cluster node lost) the follower notices two missed
			// heartbeats and makes the consumer again on a live one. With nats.go's
			// defaults (a heartbeat every 15 seconds) the views stood still that long.
			var it jetstream.MessagesContext
			it, err = cons.Messages(jetstream.PullMaxMessages(maxMsgs), jetstream.PullExpiry(FollowPullExpiry), jetstream.PullHeartbeat(FollowHeartbeat))
			if err == nil {
				return cons, it, nil
			}
		}
		if ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) || !errors.Is(unavailable(err), events.ErrUnavailable) ||
			time.Now().Add(wait).After(deadline) {
			return nil, nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// DefaultFollowStallTimeout is Options.FollowStallTimeout's default.
const DefaultFollowStallTimeout = 10 * time.Second

// FollowSubject implements events.SubjectFollower with an ordered consumer filtered on the
// server, which recovers from gaps and reconnects by itself. The consumer is deleted when
// it returns, and expires on the server FollowInactiveThreshold after its client is gone.
//
// A follower also watches its consumer (see watchStall): when it has waited
// Options.FollowStallTimeout for a record while the consumer holds records it has not
// delivered, or cannot say, it makes its consumer again from the record after the last it
// delivered. An ordered consumer on a cluster lives on one server; when that server goes,
// nats.go makes it again by itself, but it was seen, under load, not to, and the views of
// a node stood still for minutes.
func (l *Log) FollowSubject(ctx context.Context, filter string, from uint64, fn func(events.Record) error, opts ...events.FollowOption) error {
	fc := events.NewFollowConfig(opts...)
	next := max(from, 1)
	for {
		cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: FollowInactiveThreshold}
		if filter != "" && filter != ">" {
			cfg.FilterSubjects = []string{filter}
		}
		if next > 1 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, next
		}
		cons, it, err := l.orderedConsumer(ctx, cfg, fc.MaxMsgs)
		if err != nil {
			return fmt.Errorf("natslog: follow from %d: %w", next, err)
		}
		var stalled bool
		next, stalled, err = l.followConsumer(ctx, cons, it, next, fn)
		if !stalled {
			return err
		}
	}
}

// followConsumer hands fn the records of one ordered consumer, starting at next, and
// returns the sequence after the last it handed. stalled says the consumer stood still
// (see watchStall) and the follower should make another from there.
func (l *Log) followConsumer(ctx context.Context, cons jetstream.Consumer, it jetstream.MessagesContext, next uint64, fn func(events.Record) error) (uint64, bool, error) {
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	var waitingSince atomic.Int64 // unix nanoseconds: when the current Next began; 0 outside Next
	var stalled atomic.Bool
	defer func() {
		it.Stop()
		// Delete the consumer now rather than when it expires. Its name changes when it
		// recreates itself; a name that is already gone is harmless. A consumer that
		// stalled may be on a server that is gone: its deletion is not waited for.
		info := cons.CachedInfo()
		if info == nil {
			return
		}
		del := func() {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			l.js.DeleteConsumer(dctx, events.StreamName, info.Name)
		}
		if stalled.Load() {
			go del()
		} else {
			del()
		}
	}()
	wctx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	go l.watchStall(wctx, cons, &waitingSince, func() {
		stalled.Store(true)
		it.Stop()
	})
	for {
		waitingSince.Store(time.Now().UnixNano())
		msg, err := it.Next()
		waitingSince.Store(0)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return next, false, ctx.Err()
			case stalled.Load():
				return next, true, nil
			case errors.Is(err, nats.ErrConnectionClosed):
				return next, false, events.ErrClosed
			}
			return next, false, fmt.Errorf("natslog: follow: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return next, false, fmt.Errorf("natslog: follow: %w", err)
		}
		r := events.Record{Seq: meta.Sequence.Stream, Subject: msg.Subject(), MsgID: msg.Headers().Get(jetstream.MsgIDHeader), Time: meta.Timestamp.UTC(), Data: msg.Data()}
		if err := fn(r); err != nil {
			return next, false, err
		}
		next = r.Seq + 1
	}
}

// watchStall calls stalled when the follower has waited in Next for l.stall while its
// consumer has records pending, or the consumer cannot answer within the attempt timeout
// (its server gone, a reset that hangs). A follower waiting on an idle stream is not
// stalled: its consumer has nothing pending.
func (l *Log) watchStall(ctx context.Context, cons jetstream.Consumer, waitingSince *atomic.Int64, stalled func()) {
	tick := time.NewTicker(l.stall / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		since := waitingSince.Load()
		if since == 0 || time.Since(time.Unix(0, since)) < l.stall {
			continue
		}
		pending, err := l.pending(ctx, cons)
		if ctx.Err() != nil {
			return
		}
		if err != nil || pending > 0 {
			if waitingSince.Load() != since {
				continue // a record came meanwhile
			}
			l.logger.Warn("natslog: a follower's consumer stood still; making it again", "waited", time.Since(time.Unix(0, since)).Round(time.Millisecond), "pending", pending, "error", err)
			stalled()
			return
		}
	}
}

// pending asks the consumer how many records it has not delivered. The ordered consumer
// holds its lock while it recreates itself, so the question is asked aside and given up
// after the attempt timeout.
func (l *Log) pending(ctx context.Context, cons jetstream.Consumer) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.attempt)
	defer cancel()
	type answer struct {
		info *jetstream.ConsumerInfo
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		info, err := cons.Info(ctx)
		ch <- answer{info, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			return 0, a.err
		}
		return a.info.NumPending, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
