package natslog

import (
	"context"
	"errors"
	"fmt"
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

// FollowSubject implements events.SubjectFollower with an ordered consumer filtered on the
// server, which recovers from gaps and reconnects by itself. The consumer is deleted when
// it returns, and expires on the server FollowInactiveThreshold after its client is gone.
func (l *Log) FollowSubject(ctx context.Context, filter string, from uint64, fn func(events.Record) error, opts ...events.FollowOption) error {
	fc := events.NewFollowConfig(opts...)
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: FollowInactiveThreshold}
	if filter != "" && filter != ">" {
		cfg.FilterSubjects = []string{filter}
	}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, it, err := l.orderedConsumer(ctx, cfg, fc.MaxMsgs)
	if err != nil {
		return fmt.Errorf("natslog: follow from %d: %w", from, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer func() {
		it.Stop()
		// Delete the consumer now rather than when it expires. Its name changes when it
		// recreates itself; a name that is already gone is harmless.
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if info := cons.CachedInfo(); info != nil {
			l.js.DeleteConsumer(dctx, events.StreamName, info.Name)
		}
	}()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nats.ErrConnectionClosed) {
				return events.ErrClosed
			}
			return fmt.Errorf("natslog: follow: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("natslog: follow: %w", err)
		}
		r := events.Record{Seq: meta.Sequence.Stream, Subject: msg.Subject(), MsgID: msg.Headers().Get(jetstream.MsgIDHeader), Time: meta.Timestamp.UTC(), Data: msg.Data()}
		if err := fn(r); err != nil {
			return err
		}
	}
}
