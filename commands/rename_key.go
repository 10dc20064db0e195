package commands

import (
	"context"
	"fmt"
	"time"

	"github.com/keyreg/keyreg/events"
)

// RenameKey changes a key's name.
type RenameKey struct {
	Workspace       string
	KeyID           string
	Name            string
	ExpectedVersion uint64 // optional (0: any); see ErrPrecondition
	EventID         string // optional ULID, the event's id; see Handler
	Meta            events.Meta
}

type renameKey struct {
	ws       events.Workspace
	id       string
	name     string
	expected uint64
}

func (c RenameKey) validate() (renameKey, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return renameKey{}, err
	}
	name, err := events.ParseName("name", c.Name)
	if err != nil {
		return renameKey{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return renameKey{}, err
	}
	return renameKey{ws: ws, id: id, name: name, expected: c.ExpectedVersion}, nil
}

func (c renameKey) decide(k events.KeyState) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	if c.name == k.Name {
		return nil, nil
	}
	return []change{keyChange(k, events.KeyRenamed{Name: c.name, Previous: k.Name})}, nil
}

// RenameKey renames a key. Renaming to the current name (after trimming) appends
// nothing and returns the current version.
//
// Errors: *events.ValidationError (fields workspace, key_id, name, event_id);
// events.ErrNotFound; ErrPrecondition; ErrRevoked.
func (h *Handler) RenameKey(ctx context.Context, cmd RenameKey) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("rename key: %w", err)
	}
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, func(k events.KeyState, now time.Time) ([]change, error) {
		return c.decide(k)
	})
	if err != nil {
		return Result{}, fmt.Errorf("rename key: %w", err)
	}
	return res, nil
}
