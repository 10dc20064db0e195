package verifier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// requestTry is how long one try of a JetStream API request of a named consumer waits.
const requestTry = 2 * time.Second

// named follows the stream through a consumer of a fixed name (Options.ConsumerName),
// which it creates itself and recreates, under the same name, from the first event the
// verifier lacks whenever it cannot vouch for the order of what it receives.
type named struct {
	v    *Verifier
	js   jetstream.JetStream
	name string
	done chan struct{} // closed when run has returned and deleted the consumer

	mu     sync.Mutex
	it     jetstream.MessagesContext // the current pull, stopped by halt
	halted bool
}

// open deletes any consumer of the name, creates it from the first event the verifier
// lacks, and starts pulling from it.
func (n *named) open(ctx context.Context) (jetstream.MessagesContext, error) {
	what := fmt.Sprintf("verifier: consumer %s on %s", n.name, n.v.stream)
	err := n.request(ctx, func(ctx context.Context) error {
		if err := n.js.DeleteConsumer(ctx, n.v.stream, n.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: delete before create: %w", what, err)
	}
	var cons jetstream.Consumer
	err = n.request(ctx, func(ctx context.Context) (err error) {
		cons, err = n.js.CreateConsumer(ctx, n.v.stream, jetstream.ConsumerConfig{
			Name:              n.name,
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       n.v.applied.Load() + 1,
			AckPolicy:         jetstream.AckNonePolicy,
			InactiveThreshold: ConsumerInactiveThreshold,
			MemoryStorage:     true,
			Replicas:          1,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: create: %w", what, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullHeartbeat(consumerHeartbeat),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return nil, fmt.Errorf("%s: pull: %w", what, err)
	}
	return it, nil
}

// request runs one JetStream API request on the consumer, a few seconds at a time until
// ctx ends. The server answers a request its NATS user may not publish with no reply but
// an asynchronous permissions violation: when a try times out and the connection's last
// error is such a violation for this consumer, request returns it at once, saying which
// names a confined subscriber may use.
func (n *named) request(ctx context.Context, do func(context.Context) error) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, requestTry)
		err := do(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		last := n.js.Conn().LastError()
		if errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), "."+n.v.stream+"."+n.name) {
			return fmt.Errorf("%w (a confined subscriber NAME may use only the consumer names NAME-1 … NAME-N of keyreg subscriber add NAME)", last)
		}
	}
}

// setIter makes it the current pull; it stops it at once if the verifier was halted.
func (n *named) setIter(it jetstream.MessagesContext) {
	n.mu.Lock()
	n.it = it
	halted := n.halted
	n.mu.Unlock()
	if halted {
		it.Stop()
	}
}

// halt stops the current pull and makes run return; it does not wait.
func (n *named) halt() {
	n.mu.Lock()
	n.halted = true
	it := n.it
	n.mu.Unlock()
	if it != nil {
		it.Stop()
	}
}

// run applies the messages of it, and after a gap, a missed heartbeat or the consumer's
// loss recreates the consumer (retrying with backoff) and goes on, until the verifier
// stops or the connection closes. It then deletes the consumer and closes n.done.
func (n *named) run(ctx context.Context, it jetstream.MessagesContext) {
	defer close(n.done)
	defer func() {
		if n.js.Conn().IsClosed() {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.js.DeleteConsumer(dctx, n.v.stream, n.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			n.report(fmt.Errorf("verifier: delete consumer %s: %w", n.name, err))
		}
	}()
	for {
		err := n.pull(it)
		it.Stop()
		if n.isHalted() || ctx.Err() != nil {
			return
		}
		if n.js.Conn().IsClosed() {
			n.v.stop(ErrClosed)
			return
		}
		n.report(fmt.Errorf("verifier: consumer %s: %w; recreating it from sequence %d", n.name, err, n.v.applied.Load()+1))
		backoff := 100 * time.Millisecond
		for {
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			it, err = n.open(octx)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || n.js.Conn().IsClosed() {
				n.v.stop(ErrClosed)
				return
			}
			n.report(err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, 2*time.Second)
		}
		n.setIter(it)
	}
}

// pull applies the messages of it in order and returns why it must be recreated: an error
// of the pull (missed heartbeats, the consumer deleted, the pull stopped), or a message
// out of the consumer's order.
func (n *named) pull(it jetstream.MessagesContext) error {
	for want := uint64(1); ; want++ {
		m, err := it.Next()
		if err != nil {
			return err
		}
		md, err := m.Metadata()
		if err != nil {
			n.v.stop(fmt.Errorf("verifier: %w", err))
			return err
		}
		if md.Sequence.Consumer != want {
			return fmt.Errorf("gap: delivery %d, want %d", md.Sequence.Consumer, want)
		}
		n.v.apply(m, md)
	}
}

func (n *named) isHalted() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.halted
}

func (n *named) report(err error) {
	if n.v.onError != nil {
		n.v.onError(err)
	}
}
