package commands

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/keyreg/keyreg/events"
)

// UpdateAllowlist replaces a key's IP allowlist.
type UpdateAllowlist struct {
	Workspace       string
	KeyID           string
	Allowlist       []string // IP addresses and CIDR prefixes; empty allows any address
	ExpectedVersion uint64   // optional (0: any); see ErrPrecondition
	EventID         string   // optional ULID, the event's id; see Handler
	Meta            events.Meta
}

type updateAllowlist struct {
	ws        events.Workspace
	id        string
	allowlist []netip.Prefix
	expected  uint64
}

func (c UpdateAllowlist) validate() (updateAllowlist, error) {
	ws, id, err := parseKeyRef(c.Workspace, c.KeyID)
	if err != nil {
		return updateAllowlist{}, err
	}
	allow, err := events.ParseAllowlist(c.Allowlist)
	if err != nil {
		return updateAllowlist{}, err
	}
	if err := parseEventID(c.EventID); err != nil {
		return updateAllowlist{}, err
	}
	return updateAllowlist{ws: ws, id: id, allowlist: allow, expected: c.ExpectedVersion}, nil
}

func (c updateAllowlist) decide(k events.KeyState) ([]change, error) {
	if err := checkKey(k, c.ws, c.id, c.expected); err != nil {
		return nil, err
	}
	added, removed := diff(k.Allowlist, c.allowlist, events.ComparePrefix)
	if len(added) == 0 && len(removed) == 0 {
		return nil, nil
	}
	return []change{keyChange(k, events.AllowlistUpdated{
		Allowlist: c.allowlist,
		Previous:  nonNil(slices.Clone(k.Allowlist)),
		Added:     added,
		Removed:   removed,
	})}, nil
}

// UpdateAllowlist replaces a key's allowlist (normalized: see events.ParseAllowlist); the
// event lists the previous list and what was added and removed. Setting the current list
// appends nothing and returns the current version.
//
// Errors: *events.ValidationError (fields workspace, key_id, allowlist, event_id);
// events.ErrNotFound; ErrPrecondition; ErrRevoked.
func (h *Handler) UpdateAllowlist(ctx context.Context, cmd UpdateAllowlist) (Result, error) {
	c, err := cmd.validate()
	if err != nil {
		return Result{}, fmt.Errorf("update allowlist: %w", err)
	}
	res, err := h.updateKey(ctx, c.ws, c.id, cmd.EventID, cmd.Meta, func(k events.KeyState, now time.Time) ([]change, error) {
		return c.decide(k)
	})
	if err != nil {
		return Result{}, fmt.Errorf("update allowlist: %w", err)
	}
	return res, nil
}
