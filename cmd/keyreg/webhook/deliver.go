package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
)

// fetchWait is how long a worker's pull waits for a message before asking again. It is
// short because a pull outlives a node that stops: a message the server hands to it then
// waits out the consumer's AckWait before another node (or this one, restarted) gets it.
const fetchWait = 5 * time.Second

// work delivers webhook st's events until ctx ends, starting again after a failure of
// the stream (the consumer, the secret) with a growing pause.
func (m *Manager) work(ctx context.Context, st events.WebhookState) {
	pause := time.Second
	for {
		err := m.deliverAll(ctx, st)
		if ctx.Err() != nil {
			return
		}
		m.logger.Warn("webhook: delivery stopped; starting again", "webhook", st.ID, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 30*time.Second)
	}
}

// consumerConfig is webhook st's durable consumer: the workspace's events from the one
// after the registration, one outstanding at a time (stream order; a failing event holds
// the next ones back), redelivered when no answer came within the attempt's time. The
// AckWait is also how long an event handed to a node that stopped (a restart) waits.
func (m *Manager) consumerConfig(st events.WebhookState) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(st.ID),
		Description:   "keyreg webhook " + st.ID + " of workspace " + string(st.Workspace),
		FilterSubject: events.WorkspaceFilter(st.Workspace),
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   st.Registered + 1,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       m.cfg.Timeout + 10*time.Second, // one attempt, its record and its ack
		MaxDeliver:    -1,
		MaxAckPending: 1,
		Replicas:      0, // the stream's
	}
}

// deliverAll pulls webhook st's events one at a time and delivers each, until ctx ends
// or the stream fails.
func (m *Manager) deliverAll(ctx context.Context, st events.WebhookState) error {
	key, err := m.key(ctx, st.ID)
	if err != nil {
		return err
	}
	// Another node that saw the webhook's removal first may have deleted the consumer:
	// making it again would start over from the registration.
	if removed, err := m.removed(ctx, st); err != nil || removed {
		if removed {
			<-ctx.Done() // this node's manager stops the worker when it sees the removal
		}
		return err
	}
	cons, err := m.js.CreateOrUpdateConsumer(ctx, events.StreamName, m.consumerConfig(st))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", ConsumerName(st.ID), err)
	}
	for {
		fctx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				continue
			}
			return err
		}
		for msg := range batch.Messages() {
			m.deliver(ctx, st, key, msg)
		}
		cancel()
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// removed reports whether the log holds the removal of webhook st.
func (m *Manager) removed(ctx context.Context, st events.WebhookState) (bool, error) {
	removed := false
	err := m.log.Read(ctx, events.AggregateFilter(st.Workspace, events.AggWebhook, st.ID), st.Version, func(r events.Record) error {
		if e, err := events.Decode(r.Data); err == nil && e.Type == events.TypeWebhookRemoved {
			removed = true
		}
		return nil
	})
	return removed, err
}

// deliver makes one attempt to deliver msg and acknowledges it: done when delivered (or
// not for this webhook), again after a pause when it failed, never again once RetryFor has
// passed.
func (m *Manager) deliver(ctx context.Context, st events.WebhookState, key []byte, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		m.logger.Warn("webhook: message without metadata", "webhook", st.ID, "err", err)
		msg.Nak()
		return
	}
	e, err := events.Decode(msg.Data())
	if err != nil || !events.WebhookWants(st.Types, e.Type) {
		m.ack(ctx, st, msg)
		return
	}
	attempt := int(meta.NumDelivered)
	start := time.Now()
	status, err := m.post(ctx, st.URL, key, e.ID, msg.Data())
	d := Delivery{EventID: e.ID, Type: string(e.Type), Sequence: meta.Sequence.Stream, Attempt: attempt,
		StatusCode: status, At: start.UTC(), DurationMS: time.Since(start).Milliseconds()}
	switch {
	case err == nil && status >= 200 && status < 300:
		d.Outcome = "delivered"
		m.record(ctx, st.ID, d)
		m.ack(ctx, st, msg)
		return
	case ctx.Err() != nil:
		// Stopped under way (a shutdown, the webhook removed): whether it arrived is not
		// known; another node, or this one after a restart, delivers it again.
		msg.Nak()
		return
	case err != nil:
		d.Error = err.Error()
	default:
		d.Error = "the receiver answered " + strconv.Itoa(status) + " " + http.StatusText(status)
	}
	delay, ok := m.retryAfter(attempt)
	if !ok {
		d.Outcome = "failed"
		d.Error += "; given up after " + strconv.Itoa(attempt) + " attempts over " + m.cfg.RetryFor.String()
		m.record(ctx, st.ID, d)
		m.logger.Warn("webhook: gave up an event", "webhook", st.ID, "event", e.ID, "attempts", attempt, "err", d.Error)
		if err := msg.TermWithReason("webhook delivery given up"); err != nil {
			m.logger.Warn("webhook: acknowledge", "webhook", st.ID, "err", err)
		}
		return
	}
	next := time.Now().Add(delay).UTC()
	d.Outcome, d.NextRetry = "retrying", &next
	m.record(ctx, st.ID, d)
	if err := msg.NakWithDelay(delay); err != nil {
		m.logger.Warn("webhook: schedule retry", "webhook", st.ID, "err", err)
	}
}

// ack acknowledges msg and waits for the server to confirm, so that a delivered event is
// not delivered again after a restart; a failed acknowledgement only means it may be.
func (m *Manager) ack(ctx context.Context, st events.WebhookState, msg jetstream.Msg) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := msg.DoubleAck(actx); err != nil {
		m.logger.Warn("webhook: acknowledge", "webhook", st.ID, "err", err)
	}
}

// retryAfter returns the pause before the attempt after failed attempt number attempt
// (1 for the first): RetryMin, doubling each time, at most RetryMax. It reports false when
// that attempt would come more than RetryFor after the first: then the event is given up.
func (m *Manager) retryAfter(attempt int) (time.Duration, bool) {
	return Backoff(m.cfg.RetryMin, m.cfg.RetryMax, m.cfg.RetryFor, attempt)
}

// Backoff is the retry schedule: after failed attempt number attempt (1 for the first),
// the next comes min, 2*min, 4*min, ... later, never more than max apart. It reports false
// once the next attempt would come more than retryFor after the first.
func Backoff(min, max, retryFor time.Duration, attempt int) (time.Duration, bool) {
	var elapsed, delay time.Duration
	for i := 1; i <= attempt; i++ {
		delay = min
		for j := 1; j < i && delay < max; j++ {
			delay *= 2
		}
		delay = minDuration(delay, max)
		elapsed += delay
	}
	return delay, elapsed <= retryFor
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// maxAnswer is how much of a receiver's answer is read (and dropped) before the
// connection is reused.
const maxAnswer = 64 << 10

// post makes one delivery: the event as its body (the CloudEvent, as the stream holds
// it), signed with key as Standard Webhooks says. It returns the answer's status.
func (m *Manager) post(ctx context.Context, url string, key []byte, id string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := time.Now().Unix()
	req.Header.Set("Content-Type", "application/cloudevents+json")
	req.Header.Set("User-Agent", "keyreg-webhooks/1")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", Sign(key, id, ts, body))
	resp, err := m.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	return resp.StatusCode, nil
}
