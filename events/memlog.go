package events

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemLog is an in-memory Log with the same semantics as the JetStream one. It is for
// tests and tools; it keeps nothing on disk. The zero value is not usable: call NewMemLog.
type MemLog struct {
	mu      sync.Mutex
	recs    []Record
	ids     map[string]uint64
	changed chan struct{} // closed and replaced on every append
	closed  bool
	now     func() time.Time
}

// NewMemLog returns an empty in-memory log.
func NewMemLog() *MemLog {
	return &MemLog{ids: map[string]uint64{}, changed: make(chan struct{}), now: time.Now}
}

// Append implements Appender.
func (l *MemLog) Append(ctx context.Context, msgs []Message) ([]uint64, error) {
	if len(msgs) == 0 {
		return nil, fmt.Errorf("events: append: no messages")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if _, ok := l.ids[msgs[0].ID]; ok {
		out := make([]uint64, len(msgs))
		for i, m := range msgs {
			seq, ok := l.ids[m.ID]
			if !ok {
				return nil, fmt.Errorf("events: append: message %q is stored but %q of the same append is not", msgs[0].ID, m.ID)
			}
			out[i] = seq
		}
		return out, nil
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.ID == "" || seen[m.ID] {
			return nil, fmt.Errorf("events: append: missing or repeated message id %q", m.ID)
		}
		seen[m.ID] = true
		if _, ok := l.ids[m.ID]; ok {
			return nil, fmt.Errorf("events: append: message id %q already stored", m.ID)
		}
		if m.ExpectFilter != "" {
			if last := l.lastForLocked(m.ExpectFilter); last != m.ExpectSeq {
				return nil, fmt.Errorf("%w: last sequence on %s is %d, expected %d", ErrConflict, m.ExpectFilter, last, m.ExpectSeq)
			}
		}
	}
	now := l.now().UTC()
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		seq := uint64(len(l.recs)) + 1
		l.recs = append(l.recs, Record{Seq: seq, Subject: m.Subject, MsgID: m.ID, Time: now, Data: append([]byte(nil), m.Data...)})
		l.ids[m.ID] = seq
		out[i] = seq
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return out, nil
}

// AppendGroup implements GroupAppender: it appends the groups one after the other.
func (l *MemLog) AppendGroup(ctx context.Context, groups [][]Message) []AppendResult {
	out := make([]AppendResult, len(groups))
	for i, g := range groups {
		out[i].Seqs, out[i].Err = l.Append(ctx, g)
	}
	return out
}

func (l *MemLog) lastForLocked(filter string) uint64 {
	for i := len(l.recs) - 1; i >= 0; i-- {
		if MatchSubject(filter, l.recs[i].Subject) {
			return l.recs[i].Seq
		}
	}
	return 0
}

// LastSeq implements Reader.
func (l *MemLog) LastSeq(ctx context.Context) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.recs)), nil
}

// Get implements Reader.
func (l *MemLog) Get(ctx context.Context, seq uint64) (Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq == 0 || seq > uint64(len(l.recs)) {
		return Record{}, fmt.Errorf("%w: sequence %d", ErrNotFound, seq)
	}
	return l.recs[seq-1], nil
}

// Read implements Reader.
func (l *MemLog) Read(ctx context.Context, filter string, from uint64, fn func(Record) error) error {
	l.mu.Lock()
	recs := l.recs
	l.mu.Unlock()
	if from == 0 {
		from = 1
	}
	for i := from - 1; i < uint64(len(recs)); i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if MatchSubject(filter, recs[i].Subject) {
			if err := fn(recs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// Follow implements Reader.
func (l *MemLog) Follow(ctx context.Context, from uint64, fn func(Record) error) error {
	if from == 0 {
		from = 1
	}
	for {
		l.mu.Lock()
		recs, changed, closed := l.recs, l.changed, l.closed
		l.mu.Unlock()
		if closed {
			return ErrClosed
		}
		for ; from <= uint64(len(recs)); from++ {
			if err := fn(recs[from-1]); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Close implements Log; followers return ErrClosed.
func (l *MemLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.changed)
	}
	return nil
}
