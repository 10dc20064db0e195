package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// SetKeyExpiry sets or clears a key's expiry.
type SetKeyExpiry struct {
	Workspace       string
	KeyID           string
	ExpiresAt       *time.Time // nil clears the expiry; otherwise must be in the future
	ExpectedVersion uint64     // optional (0: any); see ErrPrecondition
	EventID         string     // optional ULID, the event's id; see Handler
	Meta            events.Meta
}

type setKeyExpiry struct {
	ws        events.Workspace
	id        string
	expiresAt *time.Time
	expected  uint64
}

func (c SetKeyExpiry) validate(now time.Time) (setKeyExpiry, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return setKeyExpiry{}, err
	}
	exp, err := parseExpiry(c.ExpiresAt, now)
	if err != nil {
		return setKeyExpiry{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return setKeyExpiry{}, err
	}
	return setKeyExpiry{ws: ws, id: id, expiresAt: exp, expected: c.ExpectedVersion}, nil
}

func (c setKeyExpiry) decide(k events.KeyState) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	if sameTime(c.expiresAt, k.ExpiresAt) {
		return nil, nil
	}
	return []change{keyChange(k, events.KeyExpiryChanged{ExpiresAt: c.expiresAt, Previous: k.ExpiresAt})}, nil
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// SetKeyExpiry sets a key's expiry, or clears it when ExpiresAt is nil. An expired key can
// be given a new expiry, which makes it usable again. Setting the current expiry appends
// nothing and returns the current version.
//
// Errors: *events.ValidationError (fields workspace, key_id, expires_at, event_id);
// events.ErrNotFound; ErrPrecondition; ErrRevoked.
func (h *Handler) SetKeyExpiry(ctx context.Context, cmd SetKeyExpiry) (Result, error) {
	c, err := cmd.validate(h.now())
	if err != nil {
		return Result{}, fmt.Errorf("set key expiry: %w", err)
	}
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, func(k events.KeyState, now time.Time) ([]change, error) {
		return c.decide(k)
	})
	if err != nil {
		return Result{}, fmt.Errorf("set key expiry: %w", err)
	}
	return res, nil
}
