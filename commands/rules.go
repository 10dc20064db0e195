package commands

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keyreg/keyreg/events"
)

// parseEventID checks an optional event id: empty, or a ULID.
func parseEventID(s string) error {
	if s == "" {
		return nil
	}
	_, err := events.ParseID("event_id", s)
	return err
}

// parseExpiry checks an optional expiry is after now and returns it in UTC.
func parseExpiry(t *time.Time, now time.Time) (*time.Time, error) {
	if t == nil {
		return nil, nil
	}
	if !t.After(now) {
		return nil, events.Invalid("expires_at", t.Format(time.RFC3339Nano), "must be in the future")
	}
	u := t.UTC()
	return &u, nil
}

// checkVersion enforces an optional expected version (0: any).
func checkVersion(expected, actual uint64) error {
	if expected != 0 && expected != actual {
		return &PreconditionError{Current: actual, Expected: expected}
	}
	return nil
}

// checkKey checks that key id of ws exists, is at the expected version and is not revoked.
func checkKey(k events.KeyState, ws events.Workspace, id string, expected uint64) error {
	if !k.Exists() {
		return events.NotFound("key", id, ws)
	}
	if err := checkVersion(expected, k.Version); err != nil {
		return fmt.Errorf("key %s: %w", id, err)
	}
	if k.Status == events.StatusRevoked {
		return fmt.Errorf("key %s: %w", id, ErrRevoked)
	}
	return nil
}

// checkIdentifier checks that identifier id of ws exists, is at the expected version and is
// not retired.
func checkIdentifier(s events.IdentifierState, ws events.Workspace, id string, expected uint64) error {
	if !s.Exists() {
		return events.NotFound("identifier", id, ws)
	}
	if err := checkVersion(expected, s.Version); err != nil {
		return fmt.Errorf("identifier %s: %w", id, err)
	}
	if s.Status == events.StatusRetired {
		return fmt.Errorf("identifier %s: %w", id, ErrRetired)
	}
	return nil
}

// keyChange is a change to an existing key.
func keyChange(k events.KeyState, p events.Payload) change {
	return change{ws: k.Workspace, agg: events.AggKey, id: k.ID, payload: p, expect: k.Version, prevHash: k.LastHash}
}

// identifierChange is a change to an existing identifier.
func identifierChange(s events.IdentifierState, p events.Payload) change {
	return change{ws: s.Workspace, agg: events.AggIdentifier, id: s.ID, payload: p, expect: s.Version, prevHash: s.LastHash}
}

// claimID is the id of the name aggregate that claims name for kind.
func claimID(kind events.Kind, name string) string {
	return events.NameClaimID(kind, events.FoldName(name))
}

// claimChange is a claim or release of a name, for identifiers of ws.
func claimChange(ws events.Workspace, kind events.Kind, name string, c events.NameClaimState, p events.Payload) change {
	return change{ws: ws, agg: events.AggName, id: claimID(kind, name), payload: p, expect: c.Version, prevHash: c.LastHash}
}

// unchanged is the result of a command that changes nothing.
func unchanged(id string, version uint64) Result {
	return Result{ID: id, Version: version, Seq: version}
}

// diff returns the elements of next missing from prev (added) and of prev missing from
// next (removed), sorted by compare. Neither is nil.
func diff[T any](prev, next []T, compare func(a, b T) int) (added, removed []T) {
	prev = slices.SortedFunc(slices.Values(prev), compare)
	next = slices.SortedFunc(slices.Values(next), compare)
	added, removed = []T{}, []T{}
	for _, x := range next {
		if _, ok := slices.BinarySearchFunc(prev, x, compare); !ok {
			added = append(added, x)
		}
	}
	for _, x := range prev {
		if _, ok := slices.BinarySearchFunc(next, x, compare); !ok {
			removed = append(removed, x)
		}
	}
	return added, removed
}

// nonNil returns s, or an empty slice for nil, so that payloads encode [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// parseKeyRef checks the workspace and key id of a command on an existing key.
func parseKeyRef(ws, id string) (events.Workspace, string, error) {
	w, err := events.ParseWorkspace(ws)
	if err != nil {
		return "", "", err
	}
	id, err = events.ParseID("key_id", id)
	if err != nil {
		return "", "", err
	}
	return w, id, nil
}

// updateKey runs a command on an existing key: read it, decide, append.
func (h *Handler) updateKey(ctx context.Context, ws events.Workspace, id, eventID string, meta events.Meta,
	decide func(k events.KeyState, now time.Time) ([]change, error)) (Result, error) {
	home := target{ws, events.AggKey, id}
	return h.execute(ctx, home, eventID, meta, func(ctx context.Context, now time.Time) ([]change, Result, error) {
		k, err := h.stateOf(ctx).Key(ctx, ws, id)
		if err != nil {
			return nil, Result{}, err
		}
		changes, err := decide(k, now)
		return changes, unchanged(id, k.Version), err
	})
}

// parseIdentifierRef checks the workspace and identifier id of a command on an existing
// identifier.
func parseIdentifierRef(ws, id string) (events.Workspace, string, error) {
	w, err := events.ParseWorkspace(ws)
	if err != nil {
		return "", "", err
	}
	id, err = events.ParseID("identifier_id", id)
	if err != nil {
		return "", "", err
	}
	return w, id, nil
}
