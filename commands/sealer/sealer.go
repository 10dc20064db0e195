package sealer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// Defaults of the sealer.
const (
	DefaultEveryEvents = 1000
	DefaultInterval    = time.Minute
	DefaultLeaseTTL    = 30 * time.Second
)

// LeaseKey names the sealer's lease: whoever holds it is the one sealer of the stream.
const LeaseKey = "sealer"

// Tree reads the audit Merkle tree of the views (one leaf per stream message applied) and
// the latest checkpoint they applied. The projections' Pebble store satisfies it.
type Tree interface {
	// TreeSize is the number of leaves: the last stream sequence the views applied.
	TreeSize() int64
	// TreeHash is the root hash of the first n leaves; it fails when n > TreeSize.
	TreeHash(n int64) (tlog.Hash, error)
	// SealedCheckpoint is the latest checkpoint applied: the zero state when none.
	SealedCheckpoint(ctx context.Context) (events.CheckpointState, error)
}

// Waiter waits until the views have applied the stream up to seq, or ctx is done (its
// error then). The projector satisfies it.
type Waiter interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// Views returns the views the sealer reads now and what waits for them; they may change
// between calls (a rebuilt generation swapped in). The Waiter may be nil for views that
// are not being applied (the sealer then does not wait).
type Views func() (Tree, Waiter)

// Lease is the lease one sealer at a time holds (commands.Lease).
type Lease = commands.Lease

// Config tunes a Sealer.
type Config struct {
	// EveryEvents seals once this many events are not covered by the latest checkpoint;
	// 0 means DefaultEveryEvents, a negative value never.
	EveryEvents int
	// Interval seals when events are not covered and the latest checkpoint (or the
	// sealer's start, if later) is this old; 0 means DefaultInterval, a negative value
	// never.
	Interval time.Duration
	// Poll is how often Run looks; 0 means 250ms (or Interval if shorter).
	Poll time.Duration
	// Now is the clock that Interval is measured with; nil means time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.EveryEvents == 0 {
		c.EveryEvents = DefaultEveryEvents
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
		if c.Interval > 0 {
			c.Poll = min(c.Poll, c.Interval)
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// periodic reports whether the sealer seals by itself at all.
func (c Config) periodic() bool { return c.EveryEvents > 0 || c.Interval > 0 }

// Sealer appends signed checkpoints of the audit tree to the stream: every EveryEvents
// events or every Interval while there are new events (a checkpoint's own event does not
// count), and on demand for exports (Seal). Run seals only while it holds the lease, so
// one sealer runs per stream however many nodes there are; Seal may run on any node, and
// the expected-sequence check of commands.SealCheckpoint keeps two sealers from appending
// the same round.
type Sealer struct {
	cfg    Config
	views  Views
	cmds   *commands.Handler
	key    Key
	lease  Lease // nil: always lead
	logger *slog.Logger

	mu sync.Mutex // one seal at a time on this node

	warnedRetired atomic.Bool // the warning that the key is retired was logged

	roundMu sync.Mutex
	started time.Time // when Run (or New) started: Interval counts from it at the latest
	rounds  uint64    // rounds done by Step
	last    Round     // the latest round
}

// Key is a node's audit key: its private signer and its verifier key.
type Key struct {
	Signer      note.Signer
	VerifierKey string
}

// ErrNotVouched means the log does not vouch for the sealer's key for the tree it would
// sign: the key is not registered (Register) in that tree, or it is retired
// (ErrKeyRetired then too). The sealer signs nothing then.
var ErrNotVouched = errors.New("sealer: the log does not vouch for this node's audit key")

// ErrKeyRetired means the sealer's key was retired: it seals and attests nothing any more,
// and does not take the lease. Wrapped with ErrNotVouched.
var ErrKeyRetired = errors.New("sealer: this node's audit key is retired")

// New returns a sealer appending to log, reading the views that views returns, signing
// with key once the log vouches for it (see Register). lease may be nil (a single node:
// Run always seals); logger nil means slog.Default().
func New(cfg Config, log events.Log, views Views, key Key, lease Lease, logger *slog.Logger) *Sealer {
	if logger == nil {
		logger = slog.Default()
	}
	s := &Sealer{cfg: cfg.withDefaults(), views: views, key: key, lease: lease, logger: logger}
	s.started = s.cfg.Now()
	s.cmds = &commands.Handler{Log: log, Checkpoints: checkpointsOf(views)}
	return s
}

// checkpointsOf reads the latest checkpoint from whichever views serve.
type checkpointsOf Views

func (f checkpointsOf) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	tree, _ := f()
	return tree.SealedCheckpoint(ctx)
}

// Register records the sealer's verifier key in the log as a signer of node (see
// commands.AddSigner), unless it is there already: every node does it on start, so the
// published key set holds each node's key before any of them seals. It returns the
// signer's state.
//
// Errors: commands.ErrSignerRetired (wrapped, with ErrKeyRetired) when the key was
// retired: the node must make a new key; the errors of commands.AddSigner.
func (s *Sealer) Register(ctx context.Context, node string) (events.SignerState, error) {
	_, err := s.cmds.AddSigner(ctx, commands.AddSigner{VerifierKey: s.key.VerifierKey, Node: node,
		Meta: events.Meta{Reason: "audit signer of node " + node}})
	if errors.Is(err, commands.ErrSignerRetired) {
		return events.SignerState{}, fmt.Errorf("%w: %w", ErrKeyRetired, err)
	}
	if err != nil {
		return events.SignerState{}, fmt.Errorf("sealer: register: %w", err)
	}
	return commands.LogState{Log: s.cmds.Log}.Signer(ctx, s.key.VerifierKey)
}

// VerifierKey returns the sealer's verifier key.
func (s *Sealer) VerifierKey() string { return s.key.VerifierKey }

// vouched returns nil if the log vouches for the sealer's key for a checkpoint of the first
// size leaves (events.SignerState.Vouches), read from the log: an error wrapping
// ErrNotVouched (and ErrKeyRetired when retired in that tree) otherwise.
func (s *Sealer) vouched(ctx context.Context, size uint64) error {
	st, err := commands.LogState{Log: s.cmds.Log}.Signer(ctx, s.key.VerifierKey)
	switch {
	case err != nil:
		return fmt.Errorf("sealer: %w", err)
	case st.Vouches(size):
		return nil
	case st.RetiredSeq != 0 && st.RetiredSeq <= size:
		return fmt.Errorf("%w: %w: key %s retired at sequence %d", ErrNotVouched, ErrKeyRetired, s.key.VerifierKey, st.RetiredSeq)
	case !st.Exists():
		return fmt.Errorf("%w: key %s is not registered", ErrNotVouched, s.key.VerifierKey)
	}
	return fmt.Errorf("%w: key %s is registered at sequence %d, after the tree of %d events", ErrNotVouched, s.key.VerifierKey, st.AddedSeq, size)
}

// Seal makes sure a checkpoint covers at least atLeast leaves (stream sequences 1 to
// atLeast) and returns the latest checkpoint once the views have applied it: the latest
// one if it does, else a new one of the whole tree the views hold, after waiting (30s at
// most) for them to reach atLeast. It fails when the views hold fewer than atLeast
// events, with the Waiter's error when they do not get there in time, and with
// commands.SealCheckpoint's errors.
func (s *Sealer) Seal(ctx context.Context, atLeast uint64) (events.CheckpointState, error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tree, w := s.views()
	if w != nil {
		if err := w.WaitFor(wctx, atLeast); err != nil {
			return events.CheckpointState{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The size is read before the latest checkpoint: read after, it could count the event
	// of a checkpoint that another sealer appended meanwhile, which would then be sealed
	// again by a checkpoint of one more leaf.
	size := uint64(max(tree.TreeSize(), 0))
	latest, err := tree.SealedCheckpoint(ctx)
	if err != nil {
		return latest, err
	}
	if latest.Exists() && latest.TreeSize >= atLeast {
		return latest, nil
	}
	if size == 0 || size < atLeast {
		return latest, fmt.Errorf("seal: the views hold %d events, need %d", size, atLeast)
	}
	seq, err := s.append(ctx, tree, size)
	if err != nil {
		return latest, err
	}
	tree, w = s.views()
	if w != nil {
		if err := w.WaitFor(wctx, seq); err != nil {
			return latest, err
		}
	}
	latest, err = tree.SealedCheckpoint(ctx)
	if err == nil && latest.TreeSize >= size {
		s.logger.Debug("sealed audit checkpoint", "tree_size", latest.TreeSize, "seq", latest.Version)
	}
	return latest, err
}

// append signs the checkpoint of the first size leaves of tree and appends it, returning
// the stream sequence of its event.
func (s *Sealer) append(ctx context.Context, tree Tree, size uint64) (uint64, error) {
	if err := s.vouched(ctx, size); err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	root, err := tree.TreeHash(int64(size))
	if err != nil {
		return 0, fmt.Errorf("seal: %w", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(events.FormatCheckpoint(size, root))}, s.key.Signer)
	if err != nil {
		return 0, fmt.Errorf("seal: sign: %w", err)
	}
	res, err := s.cmds.SealCheckpoint(ctx, commands.SealCheckpoint{
		TreeSize: size, RootHash: base64.StdEncoding.EncodeToString(root[:]), Note: string(msg),
		Meta: events.Meta{Reason: "audit checkpoint"},
	})
	if err != nil {
		return 0, err
	}
	return res.Seq, nil
}

// Attest signs the text of an export statement (replay.ExportStatement) with the audit
// key, as a golang.org/x/mod/sumdb/note, and returns the signed note. Audit exports carry
// it so that a verifier holding only the public key can check what the export holds. It
// signs only while the key is registered and not retired (errors wrapping ErrNotVouched
// otherwise).
func (s *Sealer) Attest(text []byte) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := commands.LogState{Log: s.cmds.Log}.Signer(ctx, s.key.VerifierKey)
	switch {
	case err != nil:
		return "", fmt.Errorf("attest: %w", err)
	case st.RetiredSeq != 0:
		return "", fmt.Errorf("attest: %w: %w: key %s retired at sequence %d", ErrNotVouched, ErrKeyRetired, s.key.VerifierKey, st.RetiredSeq)
	case !st.Exists():
		return "", fmt.Errorf("attest: %w: key %s is not registered", ErrNotVouched, s.key.VerifierKey)
	}
	msg, err := note.Sign(&note.Note{Text: string(text)}, s.key.Signer)
	if err != nil {
		return "", fmt.Errorf("attest: sign: %w", err)
	}
	return string(msg), nil
}

// Round is what one look of the sealer at the views found (Step).
type Round struct {
	// Applied is the tree size of the views: the last stream sequence they applied.
	Applied uint64
	// Uncovered counts the events the latest checkpoint does not cover, its own event not
	// counted.
	Uncovered uint64
	// Due reports whether a checkpoint was due; Step then sealed one covering Applied.
	Due bool
	// Sealed is the checkpoint Step sealed when Due (the zero state otherwise).
	Sealed events.CheckpointState
}

// Step looks at the views once and seals a checkpoint if one is due (see Config), as Run
// does at each poll, whether or not this sealer holds the lease. It returns what it found
// and did, and Seal's errors.
func (s *Sealer) Step(ctx context.Context) (Round, error) {
	r, err := s.due(ctx)
	if err == nil && r.Due {
		r.Sealed, err = s.Seal(ctx, r.Applied)
	}
	s.roundMu.Lock()
	s.rounds++
	s.last = r
	s.roundMu.Unlock()
	return r, err
}

// Rounds returns how many rounds Step has done (by Run or directly) and the latest one.
func (s *Sealer) Rounds() (uint64, Round) {
	s.roundMu.Lock()
	defer s.roundMu.Unlock()
	return s.rounds, s.last
}

// due looks at the views: whether a checkpoint is due, and up to which sequence.
func (s *Sealer) due(ctx context.Context) (Round, error) {
	tree, _ := s.views()
	applied := uint64(max(tree.TreeSize(), 0)) // before the checkpoint: see Seal
	latest, err := tree.SealedCheckpoint(ctx)
	if err != nil {
		return Round{}, err
	}
	uncovered := applied - min(latest.TreeSize, applied)
	if latest.Exists() && latest.Version > latest.TreeSize && latest.Version <= applied {
		uncovered-- // the checkpoint's own event
	}
	s.roundMu.Lock()
	since := s.started
	s.roundMu.Unlock()
	if latest.SealedAt.After(since) {
		since = latest.SealedAt
	}
	r := Round{Applied: applied, Uncovered: uncovered}
	switch {
	case uncovered == 0:
	case s.cfg.EveryEvents > 0 && uncovered >= uint64(s.cfg.EveryEvents):
		r.Due = true
	case s.cfg.Interval > 0 && s.cfg.Now().Sub(since) >= s.cfg.Interval:
		r.Due = true
	}
	return r, nil
}

// Run seals checkpoints while it holds the lease (always, without a lease) until ctx is
// done; it then releases the lease and returns nil. Failures to seal are logged and
// retried at the next poll. With neither EveryEvents nor Interval it waits for ctx and
// seals nothing.
func (s *Sealer) Run(ctx context.Context) error {
	s.roundMu.Lock()
	s.started = s.cfg.Now()
	s.roundMu.Unlock()
	if !s.cfg.periodic() {
		<-ctx.Done()
		return nil
	}
	if s.lease == nil {
		s.lead(ctx)
		return nil
	}
	// A retired key must not hold the lease: another node seals.
	commands.RunLeased(ctx, s.lease, s.logger, commands.LeaseJob{Name: "sealer",
		Holding: "this node seals the audit checkpoints", Lost: "another node seals"}, s.retired, s.lead)
	return nil
}

// retired reports whether the log says the sealer's key is retired (false when it cannot
// be read: the seal itself checks again).
func (s *Sealer) retired(ctx context.Context) bool {
	st, err := commands.LogState{Log: s.cmds.Log}.Signer(ctx, s.key.VerifierKey)
	if err == nil && st.RetiredSeq != 0 {
		if s.warnedRetired.Swap(true) {
			return true
		}
		s.logger.Warn("sealer: this node's audit key is retired: it seals nothing; give the node a new key (remove <data>/audit/signing.key and restart it)", "verifier_key", s.key.VerifierKey)
		return true
	}
	return false
}

// lead seals when due until ctx is done or the lease is lost (the renewal's error then).
func (s *Sealer) lead(ctx context.Context) error {
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	var renew <-chan time.Time
	if s.lease != nil {
		t := time.NewTicker(s.lease.TTL() / 3)
		defer t.Stop()
		renew = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew:
			if s.retired(ctx) {
				return ErrKeyRetired // give the lease up: another node seals
			}
			if err := s.lease.Renew(ctx); err != nil {
				return err
			}
		case <-poll.C:
			_, err := s.Step(ctx)
			if errors.Is(err, ErrKeyRetired) && s.lease != nil {
				return err // give the lease up: another node seals
			}
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("sealer: seal an audit checkpoint", "err", err)
			}
		}
	}
}
