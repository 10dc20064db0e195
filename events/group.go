package events

import (
	"context"
	"sync"
	"time"
)

// GroupLogTimeout bounds one group write of a GroupLog (see groupDeadline).
const GroupLogTimeout = 30 * time.Second

// maxGroup is the most appends a GroupLog writes in one AppendGroup.
const maxGroup = 1024

// GroupedLog is a Log that can append several commands' events in one write.
type GroupedLog interface {
	Log
	GroupAppender
}

// GroupLog is a Log whose concurrent Appends are written together (group commit): an
// Append made while no write is under way is written at once, alone, by its caller (so a
// lone command waits for nothing more than before); the Appends made while a write is
// under way wait for it to end and are then written together, in the order they came,
// with one AppendGroup. Each keeps its own expectations and result, as
// AppendGroup promises. Reads go straight to the log.
//
// A GroupLog runs a goroutine only while it has appends to write. It is safe for
// concurrent use.
type GroupLog struct {
	GroupedLog

	mu      sync.Mutex
	queue   []*pendingAppend
	writing bool // a goroutine is writing the queue
}

type pendingAppend struct {
	ctx  context.Context
	msgs []Message
	res  AppendResult
	done chan struct{}
}

// NewGroupLog returns l with group commit on its appends.
func NewGroupLog(l GroupedLog) *GroupLog {
	return &GroupLog{GroupedLog: l}
}

// ReadNear implements NearReader, passing it on to the wrapped log (see ReadNear).
func (g *GroupLog) ReadNear(ctx context.Context, filter string, from uint64, fn func(Record) error) error {
	return ReadNear(ctx, g.GroupedLog, filter, from, fn)
}

// Queued returns how many appends wait for the write under way to end.
func (g *GroupLog) Queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// Append implements Appender. When no write is under way, it writes msgs at once, itself,
// with ctx, as the log's own Append would. Otherwise it waits its turn: if ctx is done
// before the append is written, it is not written and Append returns ctx.Err(); if ctx
// is done while it is being written, Append returns ctx.Err() and the events may be stored
// or not, as with any append whose answer is lost (an append again with the same ids
// finds them).
func (g *GroupLog) Append(ctx context.Context, msgs []Message) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g.mu.Lock()
	if !g.writing {
		g.writing = true
		g.mu.Unlock()
		res := g.GroupedLog.AppendGroup(ctx, [][]Message{msgs})[0]
		g.mu.Lock()
		if len(g.queue) > 0 {
			go g.write() // what queued meanwhile, as one group
		} else {
			g.writing = false
		}
		g.mu.Unlock()
		return res.Seqs, res.Err
	}
	p := &pendingAppend{ctx: ctx, msgs: msgs, done: make(chan struct{})}
	g.queue = append(g.queue, p)
	g.mu.Unlock()
	select {
	case <-p.done:
		return p.res.Seqs, p.res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// write writes the queue, a group at a time, until it is empty.
func (g *GroupLog) write() {
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		if n == 0 {
			g.writing = false
			g.mu.Unlock()
			return
		}
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		g.mu.Unlock()

		live := batch[:0:0]
		for _, p := range batch {
			if err := p.ctx.Err(); err != nil {
				p.res.Err = err
				close(p.done)
				continue
			}
			live = append(live, p)
		}
		if len(live) == 0 {
			continue
		}
		groups := make([][]Message, len(live))
		for i, p := range live {
			groups[i] = p.msgs
		}
		ctx, cancel := context.WithDeadline(context.Background(), groupDeadline(live))
		res := g.GroupedLog.AppendGroup(ctx, groups)
		cancel()
		for i, p := range live {
			p.res = res[i]
			close(p.done)
		}
	}
}

// groupDeadline is when a group write of live gives up: GroupLogTimeout from now, or
// sooner when every append in it has a deadline before that, as its callers stop waiting
// then. So a write stuck on a stream that lost its leader holds the queue behind it no
// longer than its callers wait.
func groupDeadline(live []*pendingAppend) time.Time {
	limit := time.Now().Add(GroupLogTimeout)
	var latest time.Time
	for _, p := range live {
		d, ok := p.ctx.Deadline()
		if !ok || !d.Before(limit) {
			return limit
		}
		if d.After(latest) {
			latest = d
		}
	}
	return latest
}
