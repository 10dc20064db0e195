package commands

import (
	"context"
	"fmt"

	"github.com/keyreg/keyreg/events"
)

// Default quotas, for servers; a Handler's zero value has no limit.
const (
	DefaultMaxKeysPerWorkspace        = 10_000
	DefaultMaxIdentifiersPerWorkspace = 100_000
)

// tally counts the creation events on one subject filter (every key.created, or every
// identifier.registered, of one workspace) up to stream sequence last.
//
// A creation under a quota appends its first event with the expectation that the last
// creation on the filter is still last: so no concurrent creation, on this node or
// another, can slip in between the count and the append, and a workspace never holds
// more than the quota. The tally's lock is held across decide and append, so this node's
// creations in one workspace take turns rather than conflict (appends are fsynced one at
// a time anyway); another node's creation makes the append conflict, and the retry
// counts the creations stored since.
type tally struct {
	lock   chan struct{} // a mutex that a context can give up waiting for
	filter string
	n      int    // creations on filter up to last
	last   uint64 // sequence of the last of them (0: none yet)
	stale  bool   // count what was stored after last before deciding
}

// tallyOf returns the tally of filter, made on first use (stale, so it is counted).
func (h *Handler) tallyOf(filter string) *tally {
	t, _ := h.tallies.LoadOrStore(filter, &tally{lock: make(chan struct{}, 1), filter: filter, stale: true})
	return t.(*tally)
}

func (t *tally) acquire(ctx context.Context) error {
	select {
	case t.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *tally) release() { <-t.lock }

// check counts the creations stored since the last count when needed, and returns a
// *QuotaError when the workspace already holds limit of them. The caller holds the lock.
func (t *tally) check(ctx context.Context, log events.Reader, ws events.Workspace, what string, limit int) error {
	if t.stale {
		err := log.Read(ctx, t.filter, t.last+1, func(r events.Record) error {
			t.n, t.last = t.n+1, r.Seq
			return nil
		})
		if err != nil {
			return fmt.Errorf("count %s: %w", what, err)
		}
		t.stale = false
	}
	if t.n >= limit {
		return &QuotaError{Workspace: ws, What: what, Limit: limit}
	}
	return nil
}

// quota is the quota of one creation command: nil when there is no limit.
type quota struct {
	h     *Handler
	t     *tally
	ws    events.Workspace
	what  string
	limit int
}

// newQuota returns the quota for creations of type typ (key.created or
// identifier.registered) in ws, or nil when limit is not positive.
func (h *Handler) newQuota(ws events.Workspace, agg events.Aggregate, typ events.Type, what string, limit int) *quota {
	if limit <= 0 {
		return nil
	}
	return &quota{h: h, t: h.tallyOf(events.Subject(ws, agg, "*", typ)), ws: ws, what: what, limit: limit}
}

// run runs a creation under the quota: exec is called with the lock held, and its
// decide calls apply on its creation change.
func (q *quota) run(ctx context.Context, exec func() (Result, error)) (Result, error) {
	if q == nil {
		return exec()
	}
	if err := q.t.acquire(ctx); err != nil {
		return Result{}, err
	}
	defer q.t.release()
	res, err := exec()
	if err == nil && !res.Duplicate {
		// The append expected q.t.last to be the last creation, so ours is the next one.
		q.t.n, q.t.last, q.t.stale = q.t.n+1, res.Version, false
	} else {
		q.t.stale = true
	}
	return res, err
}

// apply checks the quota (counting first, if an earlier attempt may have been overtaken)
// and makes c, the creation's event, expect the last creation counted.
func (q *quota) apply(ctx context.Context, c *change) error {
	if q == nil {
		return nil
	}
	if err := q.t.check(ctx, q.h.Log, q.ws, q.what, q.limit); err != nil {
		return err
	}
	c.expectFilter, c.expect = q.t.filter, q.t.last
	// If this attempt's append conflicts, the next attempt counts again.
	q.t.stale = true
	return nil
}
