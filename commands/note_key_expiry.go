package commands

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyreg/keyreg/events"
)

// NoteKeyExpiry records, once, that a key whose expiry is ExpiresAt came within Threshold
// of it (keyreg.key.expiring.v1) or, with Threshold 0, passed it (keyreg.key.expired.v1).
// Its event id is ExpiryNoticeID's: the same notice asked again, on any node and after any
// restart, appends nothing (a Duplicate result), and a key given another expiry gets
// notices of its own.
type NoteKeyExpiry struct {
	Workspace string
	KeyID     string
	ExpiresAt time.Time
	Threshold time.Duration // > 0: the warning's threshold; 0: the key expired
	// ThresholdText is the threshold as configured ("7d"); empty: FormatThreshold(Threshold).
	ThresholdText string
	Meta          events.Meta
}

// ExpiryNoticeID returns the event id of the notice of key id of ws, expiring at expiresAt,
// for threshold (0: the expired notice): a ULID whose time is the moment the notice is due
// and whose random part is derived from its arguments, so it is the same on every node.
func ExpiryNoticeID(ws events.Workspace, id string, expiresAt time.Time, threshold time.Duration) string {
	sum := sha256.Sum256([]byte("keyreg expiry notice\x00" + string(ws) + "\x00" + id + "\x00" +
		expiresAt.UTC().Format(time.RFC3339Nano) + "\x00" + strconv.FormatInt(int64(threshold/time.Second), 10)))
	return derivedID(expiresAt.Add(-threshold), sum)
}

// derivedID returns the ULID of time at (clamped to the ULID range) with the first 10
// bytes of sum as its random part.
func derivedID(at time.Time, sum [32]byte) string {
	ms := max(at.UnixMilli(), 0)
	var id ulid.ULID
	if err := id.SetTime(min(uint64(ms), ulid.MaxTime())); err != nil {
		panic(err) // unreachable: the time is clamped to the range
	}
	copy(id[6:], sum[:10])
	return id.String()
}

// FormatThreshold formats d as the --expiry-warnings flag takes it: whole days as "7d",
// else as time.Duration does ("36h0m0s").
func FormatThreshold(d time.Duration) string {
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

type noteKeyExpiry struct {
	ws        events.Workspace
	id        string
	expiresAt time.Time
	threshold time.Duration
	text      string
}

func (c NoteKeyExpiry) validate() (noteKeyExpiry, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return noteKeyExpiry{}, err
	}
	if c.ExpiresAt.IsZero() {
		return noteKeyExpiry{}, events.Invalid("expires_at", "", "the key's expiry is required")
	}
	if c.Threshold < 0 {
		return noteKeyExpiry{}, events.Invalid("threshold", c.Threshold.String(), "must not be negative")
	}
	text := c.ThresholdText
	if text == "" {
		text = FormatThreshold(c.Threshold)
	}
	return noteKeyExpiry{ws: ws, id: id, expiresAt: c.ExpiresAt.UTC(), threshold: c.Threshold, text: text}, nil
}

// decide appends the notice when it is due: the key still expires at expiresAt, and now
// is within the threshold of it, yet (for a warning) before it. Anything else (an expiry
// changed or cleared since, a warning come too late or too early) is a no-op.
func (c noteKeyExpiry) decide(k events.KeyState, now time.Time) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, 0); err != nil {
		return nil, err
	}
	if k.ExpiresAt == nil || !k.ExpiresAt.Equal(c.expiresAt) {
		return nil, nil
	}
	if c.threshold == 0 {
		if now.Before(c.expiresAt) {
			return nil, nil
		}
		return []change{keyChange(k, events.KeyExpired{ExpiresAt: c.expiresAt})}, nil
	}
	if now.Before(c.expiresAt.Add(-c.threshold)) || !now.Before(c.expiresAt) {
		return nil, nil
	}
	return []change{keyChange(k, events.KeyExpiring{ExpiresAt: c.expiresAt, Threshold: c.text,
		ThresholdSeconds: int64(c.threshold / time.Second)})}, nil
}

// NoteKeyExpiry appends the key's expiry notice if it is due and not appended yet. A
// Result with Duplicate set means it was appended before. A notice that is not due
// (decide) appends nothing and returns the key's version.
//
// Errors: *events.ValidationError (fields workspace, key_id, expires_at, threshold);
// events.ErrNotFound; ErrRevoked (a revoked key gets no notice).
func (h *Handler) NoteKeyExpiry(ctx context.Context, cmd NoteKeyExpiry) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("note key expiry: %w", err)
	}
	id := ExpiryNoticeID(c.ws, c.id, c.expiresAt, c.threshold)
	res, err := h.updateKey(ctx, c.ws, c.id, id, cmd.Meta, c.decide)
	if err != nil {
		return Result{}, fmt.Errorf("note key expiry: %w", err)
	}
	return res, nil
}
