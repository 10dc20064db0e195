// Package expiry warns of keys' expiries in the log: a Scanner looks through the keys of
// the views every interval and appends, through commands.Handler.NoteKeyExpiry,
// keyreg.key.expiring.v1 once per configured threshold as a key comes within it of its
// expiry, and keyreg.key.expired.v1 once it passes it. A key already within several
// thresholds when first scanned gets one warning per threshold at once (largest first); a
// key already expired gets the expired notice alone.
//
// Each notice is appended once, across restarts and nodes: its event id is derived from the
// key, its expiry and the threshold (commands.ExpiryNoticeID), and the command looks for
// it among the key's events before appending, with the expected-sequence check of the
// append keeping two nodes from both appending it. Run scans only while it holds a lease
// of its own (LeaseKey), so one node does the work.
//
// expiry depends on events and commands only: it must not import projections, replay,
// cmd, or a NATS package.
package expiry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// LeaseKey names the scanner's lease: whoever holds it scans.
const LeaseKey = "expiry"

// Defaults.
const (
	DefaultWarnings = "30d,7d,1d"
	DefaultInterval = time.Minute
	DefaultLeaseTTL = 30 * time.Second
)

// Threshold is one warning threshold: how long before a key's expiry it is warned of, and
// how the flag wrote it ("7d").
type Threshold struct {
	D    time.Duration
	Text string
}

// ParseWarnings parses a comma-separated list of thresholds: a number of days ("7d") or a
// Go duration ("36h", "90m"), each positive. The empty list turns warnings off. The
// result is sorted largest first, without duplicates.
func ParseWarnings(s string) ([]Threshold, error) {
	var out []Threshold
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var d time.Duration
		var err error
		if days, ok := strings.CutSuffix(f, "d"); ok {
			var n int64
			n, err = strconv.ParseInt(days, 10, 64)
			if err == nil && (n <= 0 || n > 3650) {
				err = errors.New("out of range")
			}
			d = time.Duration(n) * 24 * time.Hour
		} else {
			d, err = time.ParseDuration(f)
		}
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q is not a positive duration such as 30d, 7d or 36h", f)
		}
		if !slices.ContainsFunc(out, func(t Threshold) bool { return t.D == d }) {
			out = append(out, Threshold{D: d, Text: f})
		}
	}
	slices.SortFunc(out, func(a, b Threshold) int { return int(b.D/time.Second) - int(a.D/time.Second) })
	return out, nil
}

// Keys calls fn with every key of the views (revoked ones included) until fn returns
// false (projections.Store.EachKey, without the checkpoint).
type Keys func(fn func(*events.KeyState) bool) error

// Notifier appends expiry notices (commands.Handler).
type Notifier interface {
	NoteKeyExpiry(ctx context.Context, c commands.NoteKeyExpiry) (commands.Result, error)
}

// Lease is the lease one scanner at a time holds (commands.Lease).
type Lease = commands.Lease

// Scanner appends expiry notices. Create it with New.
type Scanner struct {
	thresholds []Threshold
	interval   time.Duration
	keys       Keys
	notes      Notifier
	lease      Lease // nil: always scan
	logger     *slog.Logger
	now        func() time.Time
	// done holds the ids of the notices due at the last scan that were appended (or found
	// appended): they are not asked for again while they stay due.
	done map[string]bool
}

// New returns a scanner of keys every interval (0: DefaultInterval) for thresholds; lease
// may be nil (a single node); now nil means time.Now.
func New(thresholds []Threshold, interval time.Duration, keys Keys, notes Notifier, lease Lease, logger *slog.Logger, now func() time.Time) *Scanner {
	if interval <= 0 {
		interval = DefaultInterval
	}
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Scanner{thresholds: thresholds, interval: interval, keys: keys, notes: notes, lease: lease, logger: logger, now: now, done: map[string]bool{}}
}

// notice is one notice due.
type notice struct {
	cmd     commands.NoteKeyExpiry
	id      string
	version uint64 // the key's version in the views when found due
}

// due returns the notices due at now for k, in the order they are to be appended.
func (s *Scanner) due(k *events.KeyState, now time.Time) []notice {
	if k.Status != events.StatusActive || k.ExpiresAt == nil {
		return nil
	}
	exp := k.ExpiresAt.UTC()
	mk := func(t Threshold) notice {
		return notice{cmd: commands.NoteKeyExpiry{Workspace: string(k.Workspace), KeyID: k.ID, ExpiresAt: exp, Threshold: t.D, ThresholdText: t.Text,
			Meta: events.Meta{Reason: "expiry notice"}}, id: commands.ExpiryNoticeID(k.Workspace, k.ID, exp, t.D), version: k.Version}
	}
	if !now.Before(exp) {
		return []notice{mk(Threshold{})}
	}
	var out []notice
	for _, t := range s.thresholds { // largest first
		if !now.Before(exp.Add(-t.D)) {
			out = append(out, mk(t))
		}
	}
	return out
}

// Scan appends the notices due now that were not appended yet, and returns how many it
// found done (appended now, or found appended before). A notice that fails is
// logged and asked for again at the next scan.
func (s *Scanner) Scan(ctx context.Context) (int, error) {
	now := s.now()
	var todo []notice
	due := map[string]bool{}
	err := s.keys(func(k *events.KeyState) bool {
		for _, n := range s.due(k, now) {
			due[n.id] = true
			if !s.done[n.id] {
				todo = append(todo, n)
			}
		}
		return ctx.Err() == nil
	})
	if err != nil {
		return 0, fmt.Errorf("expiry: read keys: %w", err)
	}
	for id := range s.done { // forget what is no longer due (expiry changed, key revoked)
		if !due[id] {
			delete(s.done, id)
		}
	}
	asked := 0
	for _, n := range todo {
		if err := ctx.Err(); err != nil {
			return asked, err
		}
		res, err := s.notes.NoteKeyExpiry(ctx, n.cmd)
		switch {
		case errors.Is(err, commands.ErrRevoked), errors.Is(err, events.ErrNotFound):
			s.done[n.id] = true
		case err != nil:
			s.logger.Warn("expiry: append a notice", "workspace", n.cmd.Workspace, "key", n.cmd.KeyID, "threshold", n.cmd.ThresholdText, "err", err)
		case res.Duplicate || res.Version > n.version:
			// Appended now or before. A notice the command found not due (the key's
			// expiry changed, or the clock disagrees) is asked for again while due.
			s.done[n.id] = true
			asked++
		}
	}
	return asked, nil
}

// Run scans every interval while it holds the lease (always, without a lease) until ctx
// is done; it then releases the lease and returns nil.
func (s *Scanner) Run(ctx context.Context) error {
	if s.lease == nil {
		s.lead(ctx)
		return nil
	}
	commands.RunLeased(ctx, s.lease, s.logger, commands.LeaseJob{Name: "expiry",
		Holding: "this node appends the expiry notices", Lost: "another node appends the notices"}, nil, s.lead)
	return nil
}

// lead scans at once, then every interval, until ctx is done or the lease is lost. What
// it remembers of notices already appended starts empty each time.
func (s *Scanner) lead(ctx context.Context) error {
	clear(s.done) // another node may have moved on while this one did not hold the lease: ask the log again
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	var renew <-chan time.Time
	if s.lease != nil {
		t := time.NewTicker(s.lease.TTL() / 3)
		defer t.Stop()
		renew = t.C
	}
	scan := func() {
		if _, err := s.Scan(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("expiry: scan", "err", err)
		}
	}
	scan()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew:
			if err := s.lease.Renew(ctx); err != nil {
				return err
			}
		case <-tick.C:
			scan()
		}
	}
}
