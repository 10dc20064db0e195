package events

import (
	"context"
	"strings"
	"time"
)

// Message is one event to append to the log.
type Message struct {
	Subject string
	// ID is the event id; the log dedupes on it (Nats-Msg-Id), so a retried append after a
	// lost acknowledgement does not store a second event.
	ID   string
	Data []byte
	// ExpectFilter, when set, makes the append fail with ErrConflict unless the last
	// sequence stored on this subject filter is ExpectSeq (0: nothing stored yet). It is
	// how commands get optimistic concurrency per aggregate.
	ExpectFilter string
	ExpectSeq    uint64
}

// Record is a message as stored in the log.
type Record struct {
	Seq     uint64    // stream sequence, from 1, without gaps
	Subject string    // keyreg.<ws>.<aggregate>.<id>.<event>
	MsgID   string    // the event id
	Time    time.Time // when the log stored it
	Data    []byte    // the CloudEvent JSON
}

// Appender appends events.
type Appender interface {
	// Append stores msgs atomically and in order: all of them or none. It returns the
	// sequence of each. It returns an error wrapping ErrConflict when an expectation
	// fails, and one wrapping ErrUnavailable when the log cannot take msgs now. If the
	// first message's id is already stored (a retry after a lost acknowledgement), it
	// stores nothing and returns the sequences stored before.
	Append(ctx context.Context, msgs []Message) ([]uint64, error)
}

// GroupAppender is a log that can append the events of several commands in one write
// (group commit: one fsync for many commands).
type GroupAppender interface {
	// AppendGroup appends each of groups as Append would, one after the other in order,
	// and returns one result per group. Each group stays atomic; its expectations are
	// checked against the log as the groups before it left it; a group whose expectation
	// fails gets an error wrapping ErrConflict (and a group that fails otherwise, its
	// error) without failing the others; dedupe of a group whose first id is stored works
	// as in Append.
	AppendGroup(ctx context.Context, groups [][]Message) []AppendResult
}

// AppendResult is the outcome of one group of AppendGroup: what Append would have
// returned for it.
type AppendResult struct {
	Seqs []uint64
	Err  error
}

// Reader reads the log in order.
type Reader interface {
	// LastSeq returns the sequence of the last stored message, 0 when empty.
	LastSeq(ctx context.Context) (uint64, error)
	// Get returns the message with sequence seq, or an error wrapping ErrNotFound.
	Get(ctx context.Context, seq uint64) (Record, error)
	// Read calls fn for each message matching filter (a NATS subject filter, ">" for
	// all) with sequence from `from` up to the last one stored when Read was called. An
	// error from fn stops the read and is returned.
	Read(ctx context.Context, filter string, from uint64, fn func(Record) error) error
	// Follow calls fn for every message from sequence `from` on, waiting for new ones,
	// until ctx is done (it then returns ctx.Err()) or fn returns an error.
	Follow(ctx context.Context, from uint64, fn func(Record) error) error
}

// NearReader is implemented by a log whose Read, to be exact, asks beyond the nearest copy
// of the log (natslog on a replicated stream ends each Read with a question to the stream
// leader). ReadNear reads the nearest copy only, as Read does otherwise: it is cheaper, and
// may lack the latest acknowledged appends. It suits reads whose use is checked anyway,
// such as a decision whose append expects the versions it read.
type NearReader interface {
	ReadNear(ctx context.Context, filter string, from uint64, fn func(Record) error) error
}

// ReadNear reads r's nearest copy when r is a NearReader, else reads it (Read). Wrappers of
// a log (GroupLog, metrics) pass ReadNear on with it.
func ReadNear(ctx context.Context, r Reader, filter string, from uint64, fn func(Record) error) error {
	if nr, ok := r.(NearReader); ok {
		return nr.ReadNear(ctx, filter, from, fn)
	}
	return r.Read(ctx, filter, from, fn)
}

// Log is an event log: the only source of truth.
type Log interface {
	Appender
	Reader
	Close() error
}

// MatchSubject reports whether subject matches a NATS subject filter with "*" (one token)
// and ">" (one or more trailing tokens) wildcards.
func MatchSubject(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		st, srest, smore := strings.Cut(subject, ".")
		switch {
		case ft == ">":
			return true
		case ft != "*" && ft != st:
			return false
		case !fmore || !smore:
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
