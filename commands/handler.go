package commands

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyreg/keyreg/events"
)

// DefaultMaxRetries is how many times a command is retried after an append conflict
// when Handler.MaxRetries is 0.
const DefaultMaxRetries = 20

// Handler runs commands against an event log. Only Log is required; the other fields have
// defaults. A Handler is safe for concurrent use, and must not be copied after first use:
// it remembers the workspaces it has seen exist (workspaces are never deleted), so that
// creating keys and identifiers does not read the workspace every time.
//
// Each command validates its input first (an *events.ValidationError naming the field
// and the bad value; nothing is read or appended), reads the state it needs, decides, and
// appends all its events in one atomic append that expects every aggregate it touches to
// be at the version read. When that expectation fails it starts again from a fresh read,
// up to MaxRetries times, then returns an error wrapping events.ErrConflict. Errors of the
// log and the context are returned wrapped.
//
// Idempotency: a command's EventID, when set, must be a ULID (the HTTP layer can derive
// one from an Idempotency-Key, e.g. from a hash of workspace, caller and key). It is the id
// of the command's first event, and thus the log's dedupe id; the command's other events
// get the following ULIDs. A command run again with the same EventID appends nothing and
// returns the first run's Result with Duplicate set, even if the aggregate has changed
// since. Creation commands use the EventID as the new aggregate's id.
type Handler struct {
	Log events.Log
	// State reads aggregates; nil means LogState{Log}. A State that may lag behind the log
	// (the views) must implement FreshReader, as ViewState does: a decision on its reads
	// stands only when the append's expectations check it (see decideChecked); others are
	// decided on its Fresh reads. The first retry after a conflict reads its Near side
	// when it is a NearReader (ViewState on a replicated log), later ones its Fresh reads.
	State StateReader
	// Now is the clock; nil means time.Now. Event times are UTC, truncated to microseconds.
	Now func() time.Time
	// Rand is the source of key secrets; nil means crypto/rand.Reader.
	Rand io.Reader
	// MaxRetries bounds the retries after an append conflict; 0 means DefaultMaxRetries,
	// a negative value means no retry.
	MaxRetries int
	// Checkpoints reads the latest audit checkpoint for SealCheckpoint, and may lag (the
	// views); nil means State when that is a CheckpointReader (ViewState is), else
	// LogState{Log}.
	Checkpoints CheckpointReader
	// MaxKeysPerWorkspace and MaxIdentifiersPerWorkspace bound how many keys and
	// identifiers a workspace holds, revoked and retired ones included (they stay, with
	// their history); 0 means no limit. CreateKey and RegisterIdentifier refuse one more
	// with a *QuotaError. The limit holds exactly, under concurrent creations on any
	// number of nodes: see tally.
	MaxKeysPerWorkspace        int
	MaxIdentifiersPerWorkspace int

	workspaces sync.Map // events.Workspace -> events.WorkspaceState, of existing workspaces
	tallies    sync.Map // subject filter -> *tally, for quotas
}

// Result is what a successful command returns.
type Result struct {
	// ID is the id of the workspace, key or identifier the command was about.
	ID string
	// Version is that aggregate's version after the command: the stream sequence of its
	// last event.
	Version uint64
	// Seq is the stream sequence of the last event the command appended. A reader that
	// has applied the log up to Seq sees the command's effect (read-your-writes). For a
	// no-op it is Version.
	Seq uint64
	// Secret is the new key secret, set by CreateKey and RotateKey only, and shown once:
	// it is empty for a Duplicate.
	Secret string
	// Duplicate reports that the log already held the command's EventID: nothing was
	// appended, and ID, Version and Seq are those of the earlier command.
	Duplicate bool
}

// String formats r without the secret, so a logged Result never leaks it.
func (r Result) String() string {
	secret := ""
	if r.Secret != "" {
		secret = " secret=<redacted>"
	}
	return fmt.Sprintf("{id=%s version=%d seq=%d%s duplicate=%t}", r.ID, r.Version, r.Seq, secret, r.Duplicate)
}

// change is one event a command decided on: payload for aggregate agg/id of ws, to be
// appended only if that aggregate is still at version expect (the stream sequence of its
// last event, 0 when it has none). prevHash is the hash of that last event. expectFilter,
// when set, replaces the aggregate's filter in that expectation (see quota).
type change struct {
	ws           events.Workspace
	agg          events.Aggregate
	id           string
	payload      events.Payload
	expect       uint64
	prevHash     string
	expectFilter string
}

// target is the aggregate that gets a command's first event; the command's Result is
// about it.
type target struct {
	ws  events.Workspace
	agg events.Aggregate
	id  string
}

func (t target) filter() string { return events.AggregateFilter(t.ws, t.agg, t.id) }

// holds reports whether subject is that of an event of t.
func (t target) holds(subject string) bool {
	s, err := events.ParseSubject(subject)
	return err == nil && s.Workspace == t.ws && s.Aggregate == t.agg && s.ID == t.id
}

// attempt reads the state a command needs and decides. It returns the changes to append,
// none for a no-op, in which case res is the command's result.
type attempt func(ctx context.Context, now time.Time) (changes []change, res Result, err error)

func (h *Handler) state() StateReader {
	if h.State != nil {
		return h.State
	}
	return LogState{Log: h.Log}
}

// workspace reads a workspace's state, from memory once it is known to exist.
func (h *Handler) workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	if s, ok := h.workspaces.Load(ws); ok {
		return s.(events.WorkspaceState), nil
	}
	s, err := h.stateOf(ctx).Workspace(ctx, ws)
	if err == nil && s.Exists() {
		h.workspaces.Store(ws, s)
	}
	return s, err
}

func (h *Handler) now() time.Time {
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	return now().UTC().Truncate(time.Microsecond)
}

func (h *Handler) maxRetries() int {
	switch {
	case h.MaxRetries == 0:
		return DefaultMaxRetries
	case h.MaxRetries < 0:
		return 0
	}
	return h.MaxRetries
}

// newSecret returns a fresh key secret and its hash.
func (h *Handler) newSecret() (secret, hash string, err error) {
	r := h.Rand
	if r == nil {
		r = rand.Reader
	}
	var b [32]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", "", fmt.Errorf("generate secret: %w", err)
	}
	secret = events.FormatSecret(b)
	return secret, events.HashSecret(secret), nil
}

// execute runs a command: decide, append all its events in one atomic append, and retry
// from a fresh read when an expectation fails. The first event's id is eventID (a new
// ULID when empty) in every attempt. With an eventID, each attempt first looks for that id
// among home's events, so a command run again returns the earlier result instead of
// acting twice.
func (h *Handler) execute(ctx context.Context, home target, eventID string, meta events.Meta, decide attempt) (Result, error) {
	firstID := eventID
	if firstID == "" {
		firstID = events.NewID()
	}
	for try := 0; ; try++ {
		if eventID != "" {
			res, found, err := h.findStored(ctx, home, eventID, nil)
			if err != nil || found {
				return res, err
			}
		}
		now := h.now()
		// A retry follows a conflict: the state read last time was stale, so read fresher:
		// the log's nearest copy after the first conflict, exactly after more.
		changes, res, err := h.decideChecked(ctx, decide, now, tier(min(try, int(tierExact))))
		if err != nil {
			return Result{}, err
		}
		if len(changes) == 0 {
			return res, nil
		}
		msgs, err := messages(changes, firstID, meta, now)
		if err != nil {
			return Result{}, err
		}
		seqs, err := h.Log.Append(ctx, msgs)
		if errors.Is(err, events.ErrConflict) {
			if try >= h.maxRetries() {
				return Result{}, fmt.Errorf("%d attempts: %w", try+1, err)
			}
			if err := sleep(ctx, backoff(try)); err != nil {
				return Result{}, err
			}
			continue
		}
		if err != nil {
			// The events may be stored even so (a lost acknowledgement), or a concurrent
			// run of the same command may have stored its own: look before failing.
			if res, found, ferr := h.findStored(ctx, home, firstID, msgs[0].Data); ferr == nil && found {
				return res, nil
			}
			return Result{}, err
		}
		if eventID != "" {
			// A concurrent run of the same command may have stored its events first: the
			// log then returned their sequences and stored nothing of ours.
			rec, err := h.Log.Get(ctx, seqs[0])
			if err != nil {
				return Result{}, err
			}
			if !bytes.Equal(rec.Data, msgs[0].Data) {
				return h.storedResult(ctx, home, rec, nil)
			}
		}
		res.Seq = seqs[len(seqs)-1]
		for i, c := range changes {
			if c.agg == home.agg && c.id == home.id {
				res.Version = seqs[i]
			}
		}
		return res, nil
	}
}

// decideChecked runs decide on reads of tier t: the Handler's State, which may lag behind
// the log (the views), the log's nearest copy, which may lag too, or exact reads. A
// decision on reads that may lag stands only when JetStream will check it: it appends,
// with an expectation on every aggregate it read (workspaces aside: see reads.Workspace),
// at the version read. Any other decision (a refusal, a no-op, a decision that rests on an
// aggregate it does not append to) is made again on exact reads, before anything is
// appended. So a lagging read never makes a wrong decision: it costs an exact read or,
// when the append finds it stale, one retry.
func (h *Handler) decideChecked(ctx context.Context, decide attempt, now time.Time, t tier) ([]change, Result, error) {
	r := h.reads(t)
	changes, res, err := decide(context.WithValue(ctx, readsKey{}, r), now)
	if !r.lagged || (err == nil && len(changes) > 0 && r.covered(changes)) {
		return changes, res, err
	}
	return decide(context.WithValue(ctx, readsKey{}, h.reads(tierExact)), now)
}

// messages encodes changes as one batch. Each aggregate's first message carries the
// expectation; later events of the same aggregate chain their prevhash within the batch.
// Event ids are firstID and its successors (see batchID).
func messages(changes []change, firstID string, meta events.Meta, now time.Time) ([]events.Message, error) {
	msgs := make([]events.Message, len(changes))
	lastHash := map[string]string{} // aggregate filter -> hash of its last event in the batch
	for i, c := range changes {
		filter := events.AggregateFilter(c.ws, c.agg, c.id)
		prev, inBatch := lastHash[filter]
		if !inBatch {
			prev = c.prevHash
		}
		e, err := events.NewEvent(c.ws, c.agg, c.id, c.payload, meta, prev, now)
		if err != nil {
			return nil, err
		}
		if e.ID, err = batchID(firstID, i); err != nil {
			return nil, err
		}
		data, err := e.Encode()
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", e.Type, err)
		}
		msgs[i] = events.Message{Subject: events.Subject(c.ws, c.agg, c.id, e.Type), ID: e.ID, Data: data}
		if !inBatch {
			msgs[i].ExpectFilter, msgs[i].ExpectSeq = filter, c.expect
			if c.expectFilter != "" {
				msgs[i].ExpectFilter = c.expectFilter
			}
		}
		lastHash[filter] = events.Hash(data)
	}
	return msgs, nil
}

// batchID returns the id of the i-th event of a command whose first event has id first:
// the ULID first+i, as a monotonic ULID source would make them. Retries of the command
// thus carry the same ids, and an earlier batch is recognized message by message.
func batchID(first string, i int) (string, error) {
	if i == 0 {
		return first, nil
	}
	id, err := ulid.ParseStrict(first)
	if err != nil {
		return "", fmt.Errorf("event id %q: %w", first, err)
	}
	carry := uint(i)
	for j := len(id) - 1; j >= 0 && carry > 0; j-- {
		sum := uint(id[j]) + carry
		id[j], carry = byte(sum), sum>>8
	}
	return id.String(), nil
}

// errFound stops a read once the wanted record is found.
var errFound = errors.New("found")

// findStored looks for the event with id among home's events. If it is there, it returns
// the result of the command that stored it: a Duplicate unless the event's data is ours.
func (h *Handler) findStored(ctx context.Context, home target, id string, ours []byte) (Result, bool, error) {
	var rec events.Record
	err := h.Log.Read(ctx, home.filter(), 1, func(r events.Record) error {
		if r.MsgID == id {
			rec = r
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) {
		return Result{}, false, fmt.Errorf("look for event %s: %w", id, err)
	}
	if rec.Seq == 0 {
		return Result{}, false, nil
	}
	res, err := h.storedResult(ctx, home, rec, ours)
	return res, err == nil, err
}

// storedResult returns the result of the command whose first event is first: its batch is
// first and the records that follow it with the successive ids (see batchID). It is a
// Duplicate unless first's data is ours.
func (h *Handler) storedResult(ctx context.Context, home target, first events.Record, ours []byte) (Result, error) {
	if !home.holds(first.Subject) {
		return Result{}, fmt.Errorf("event id %s was used by another command: %w", first.MsgID, ErrAlreadyExists)
	}
	res := Result{ID: home.id, Version: first.Seq, Seq: first.Seq, Duplicate: !bytes.Equal(first.Data, ours)}
	for i := 1; ; i++ {
		want, err := batchID(first.MsgID, i)
		if err != nil {
			return Result{}, err
		}
		r, err := h.Log.Get(ctx, first.Seq+uint64(i))
		if errors.Is(err, events.ErrNotFound) {
			break
		}
		if err != nil {
			return Result{}, err
		}
		if r.MsgID != want {
			break
		}
		res.Seq = r.Seq
		if home.holds(r.Subject) {
			res.Version = r.Seq
		}
	}
	return res, nil
}

// backoff returns a random pause before retry number try+1: up to 1ms, doubling up to 32ms.
func backoff(try int) time.Duration {
	return time.Duration(mrand.Int64N(int64(time.Millisecond << min(try, 5))))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
