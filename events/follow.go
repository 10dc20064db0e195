package events

import (
	"context"
	"fmt"
	"time"
)

// SubjectFollower is a Reader that can follow only the messages on a subject filter, so
// that a follower of one workspace or one key reads nothing else.
type SubjectFollower interface {
	// FollowSubject is Follow restricted to the messages on filter (a NATS subject
	// filter; "" or ">" for all).
	FollowSubject(ctx context.Context, filter string, from uint64, fn func(Record) error, opts ...FollowOption) error
}

// FollowOption changes how a follower reads (FollowSubject, FollowFilter).
type FollowOption func(*FollowConfig)

// FollowConfig is what FollowOptions set. A SubjectFollower reads it with
// NewFollowConfig.
type FollowConfig struct {
	MaxMsgs int // messages fetched ahead of fn
}

// NewFollowConfig returns the configuration of a follower given opts: DefaultFollowBuffer
// changed by each option in turn.
func NewFollowConfig(opts ...FollowOption) FollowConfig {
	fc := FollowConfig{MaxMsgs: DefaultFollowBuffer}
	for _, o := range opts {
		o(&fc)
	}
	return fc
}

// DefaultFollowBuffer is how many messages a follower fetches ahead of fn by default:
// many, for throughput (the projector, a rebuild).
const DefaultFollowBuffer = 1024

// SmallFollowBuffer is how many messages a follower given FollowSmallBuffer fetches ahead.
const SmallFollowBuffer = 64

// FollowSmallBuffer makes a follower fetch at most SmallFollowBuffer messages ahead of fn.
// It is for followers that many clients open and that go at a client's pace (event
// streams): with the default buffer, each one from an old sequence holds 1,024 messages
// in memory. (No byte limit: one below the largest message would stall the follower.)
func FollowSmallBuffer() FollowOption {
	return func(c *FollowConfig) { c.MaxMsgs = SmallFollowBuffer }
}

// FollowFilter calls fn for every message on filter with sequence from `from` on, waiting
// for new ones, like Reader.Follow: until ctx is done (it then returns ctx.Err()) or fn
// returns an error. It uses r's FollowSubject when r is a SubjectFollower, and otherwise
// follows everything and skips the messages filter does not match.
// The options apply to a SubjectFollower only.
func FollowFilter(ctx context.Context, r Reader, filter string, from uint64, fn func(Record) error, opts ...FollowOption) error {
	if sf, ok := r.(SubjectFollower); ok {
		return sf.FollowSubject(ctx, filter, from, fn, opts...)
	}
	if filter == "" || filter == ">" {
		return r.Follow(ctx, from, fn)
	}
	return r.Follow(ctx, from, func(rec Record) error {
		if !MatchSubject(filter, rec.Subject) {
			return nil
		}
		return fn(rec)
	})
}

// SeqAtTime returns the sequence of the first message the log stored at or after t, or
// LastSeq+1 when there is none (the next message's). It searches by time with about
// log2(LastSeq) Gets, relying on stored times never decreasing along the sequence.
func SeqAtTime(ctx context.Context, r Reader, t time.Time) (uint64, error) {
	last, err := r.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	lo, hi := uint64(1), last+1 // the answer is in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		rec, err := r.Get(ctx, mid)
		if err != nil {
			return 0, fmt.Errorf("events: seek to %s: %w", t.Format(time.RFC3339Nano), err)
		}
		if rec.Time.Before(t) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}
