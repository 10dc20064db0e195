package commands

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/keyreg/keyreg/events"
)

// MaxGrace is the longest time a rotated-out secret may stay valid.
const MaxGrace = 30 * 24 * time.Hour

// RotateKey gives a key a new secret.
type RotateKey struct {
	Workspace       string
	KeyID           string
	GraceSeconds    int    // how long the old secret stays valid: 0 to MaxGrace
	ExpectedVersion uint64 // optional (0: any); see ErrPrecondition
	EventID         string // optional ULID, the event's id; see Handler
	Meta            events.Meta
}

type rotateKey struct {
	ws         events.Workspace
	id         string
	grace      time.Duration
	expected   uint64
	secretHash string
}

func (c RotateKey) validate() (rotateKey, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return rotateKey{}, err
	}
	if c.GraceSeconds < 0 || c.GraceSeconds > int(MaxGrace/time.Second) {
		return rotateKey{}, events.Invalid("grace_seconds", strconv.Itoa(c.GraceSeconds), "must be between 0 and %d (30 days)", int(MaxGrace/time.Second))
	}
	if err := parseEventID(c.EventID); err != nil {
		return rotateKey{}, err
	}
	return rotateKey{ws: ws, id: id, grace: time.Duration(c.GraceSeconds) * time.Second, expected: c.ExpectedVersion}, nil
}

func (c rotateKey) decide(k events.KeyState, now time.Time) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	return []change{keyChange(k, events.KeySecretRotated{
		SecretHash:         c.secretHash,
		PreviousHash:       k.SecretHash,
		PreviousValidUntil: now.Add(c.grace),
	})}, nil
}

// RotateKey replaces a key's secret with a new one, returned once in Result.Secret. The
// old secret stays valid for GraceSeconds (until the event time when 0); a secret that was
// still in an earlier grace period stops being valid at once. Running the command again
// with the same EventID returns the earlier Result with Duplicate set and no secret.
//
// Errors: *events.ValidationError (fields workspace, key_id, grace_seconds, event_id);
// events.ErrNotFound; ErrPrecondition; ErrRevoked.
func (h *Handler) RotateKey(ctx context.Context, cmd RotateKey) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("rotate key: %w", err)
	}
	secret, hash, err := h.newSecret()
	if err != nil {
		return Result{}, fmt.Errorf("rotate key: %w", err)
	}
	c.secretHash = hash
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, c.decide)
	if err != nil {
		return Result{}, fmt.Errorf("rotate key: %w", err)
	}
	if !res.Duplicate {
		res.Secret = secret
	}
	return res, nil
}
