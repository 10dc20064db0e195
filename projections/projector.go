package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/keyreg/keyreg/events"
)

// MaxBatch is the most records the Projector applies in one batch.
const MaxBatch = 1000

// Projector follows the log and applies its records to a Store. It is the only writer of a
// live store.
type Projector struct {
	store *Store
	log   events.Reader

	mu      sync.Mutex
	stopped error // why Run returned; nil while running or before
}

// NewProjector returns a projector that applies the records of log to store.
func NewProjector(store *Store, log events.Reader) *Projector {
	return &Projector{store: store, log: log}
}

// Run applies the log's records from the store's checkpoint + 1 on, waiting for new ones,
// until ctx is done (it then returns ctx.Err()) or an error occurs. Records are applied in
// batches of whatever has arrived, up to MaxBatch; how records are grouped never changes
// the views.
//
// Once the store's checkpoint reaches the log's last sequence as it was when Run started,
// Store.Recovered reports false.
//
// Before following, Run refuses a store whose checkpoint is beyond the log's last
// sequence, with an error wrapping ErrAheadOfLog. Other errors come from reading the log
// or from Store.Apply. Run again only after it returned.
func (p *Projector) Run(ctx context.Context) error {
	p.mu.Lock()
	p.stopped = nil
	p.mu.Unlock()
	err := p.run(ctx)
	p.mu.Lock()
	p.stopped = err
	p.mu.Unlock()
	p.store.wake()
	return err
}

func (p *Projector) run(ctx context.Context) error {
	cp := p.store.Checkpoint()
	last, err := p.log.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("projector: read last sequence: %w", err)
	}
	if cp > last {
		return fmt.Errorf("projector: %w: the views are at sequence %d but the log ends at %d: "+
			"the stream was recreated or restored from an older backup; rebuild the views with `keyreg replay`",
			ErrAheadOfLog, cp, last)
	}
	// A store that lost batches in a crash has them back once it reaches last.
	p.store.caughtUp(last)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recs := make(chan events.Record, MaxBatch)
	followErr := make(chan error, 1)
	go func() {
		followErr <- p.log.Follow(ctx, cp+1, func(r events.Record) error {
			select {
			case recs <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		close(recs)
	}()
	stop := func(err error) error {
		cancel()
		for range recs {
		}
		<-followErr
		return err
	}

	batch := make([]events.Record, 0, MaxBatch)
	for {
		r, ok := <-recs
		if !ok {
			err := <-followErr
			switch {
			case err == nil:
				return errors.New("projector: follow log: ended")
			case ctx.Err() != nil && errors.Is(err, ctx.Err()):
				return err
			}
			return fmt.Errorf("projector: follow log: %w", err)
		}
		batch = append(batch[:0], r)
	drain:
		for len(batch) < MaxBatch {
			select {
			case r, ok := <-recs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		if err := p.store.Apply(batch); err != nil {
			return stop(fmt.Errorf("projector: %w", err))
		}
		p.store.caughtUp(last)
	}
}

// Applied returns the stream sequence the views have reached.
func (p *Projector) Applied() uint64 { return p.store.Checkpoint() }

// WaitFor blocks until the views have applied sequence seq (read-your-writes). It returns
// an error wrapping ctx.Err() when ctx is done first, or the error Run stopped with.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	for {
		ch := p.store.waitChan()
		cp := p.store.Checkpoint()
		if cp >= seq {
			return nil
		}
		p.mu.Lock()
		stopped := p.stopped
		p.mu.Unlock()
		if stopped != nil {
			return fmt.Errorf("wait for sequence %d (applied %d): projector stopped: %w", seq, cp, stopped)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for sequence %d (applied %d): %w", seq, cp, ctx.Err())
		case <-ch:
		}
	}
}
