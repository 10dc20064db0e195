package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// RevokeKey revokes a key for good. Meta.Reason says why.
type RevokeKey struct {
	Workspace       string
	KeyID           string
	ExpectedVersion uint64 // optional (0: any); see ErrPrecondition
	EventID         string // optional ULID, the event's id; see Handler
	Meta            events.Meta
}

type revokeKey struct {
	ws       events.Workspace
	id       string
	expected uint64
}

func (c RevokeKey) validate() (revokeKey, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return revokeKey{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return revokeKey{}, err
	}
	return revokeKey{ws: ws, id: id, expected: c.ExpectedVersion}, nil
}

func (c revokeKey) decide(k events.KeyState, now time.Time) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	return []change{keyChange(k, events.KeyRevoked{PreviousStatus: k.StatusAt(now)})}, nil
}

// RevokeKey revokes a key; its history is kept. An expired key can be revoked too.
//
// Errors: *events.ValidationError (fields workspace, key_id, event_id); events.ErrNotFound;
// ErrPrecondition; ErrRevoked when the key is already revoked.
func (h *Handler) RevokeKey(ctx context.Context, cmd RevokeKey) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("revoke key: %w", err)
	}
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, c.decide)
	if err != nil {
		return Result{}, fmt.Errorf("revoke key: %w", err)
	}
	return res, nil
}
