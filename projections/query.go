package projections

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/keyreg/keyreg/events"
)

// get decodes the value of key into v; events.ErrNotFound when absent.
func (s *Store) get(key []byte, v any) error { return get(s.db, key, v) }

func get(r pebble.Reader, key []byte, v any) error {
	b, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return events.ErrNotFound
	}
	if err != nil {
		return err
	}
	defer closer.Close()
	return decodeValue(b, v)
}

// getErr returns err of the read of what (a "workspace", "key" or "identifier") id of ws:
// events.ErrNotFound becomes an *events.NotFoundError that says what was not found.
func getErr(err error, what, id string, ws events.Workspace) error {
	if err == events.ErrNotFound {
		return events.NotFound(what, id, ws)
	}
	return fmt.Errorf("get %s %s/%s: %w", what, ws, id, err)
}

// Workspace returns a workspace's state, or an error wrapping events.ErrNotFound. ctx is unused;
// it is there for the commands' state-reader interface.
func (s *Store) Workspace(ctx context.Context, ws events.Workspace) (events.WorkspaceState, error) {
	var st events.WorkspaceState
	if err := s.get(workspaceKey(ws), &st); err != nil {
		return events.WorkspaceState{}, getErr(err, "workspace", string(ws), "")
	}
	return st, nil
}

// Workspaces returns the workspaces with an id after after ("": from the first), ordered
// by id, at most limit of them (no limit when limit <= 0).
func (s *Store) Workspaces(after events.Workspace, limit int) ([]events.WorkspaceState, error) {
	var out []events.WorkspaceState
	p := []byte(prefixWorkspace)
	err := s.scan(pageStart(p, string(after)), prefixEnd(p), func(key, value []byte) error {
		if limit > 0 && len(out) == limit {
			return errStop
		}
		var st events.WorkspaceState
		if err := decodeValue(value, &st); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		out = append(out, st)
		return nil
	})
	if err != nil && err != errStop {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return out, nil
}

// Key returns a key's state, or an error wrapping events.ErrNotFound. The stored Status is
// active or revoked; use StatusAt for expiry. ctx is unused; it is there for the commands'
// state-reader interface.
func (s *Store) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	var st events.KeyState
	if err := s.get(keyKey(ws, id), &st); err != nil {
		return events.KeyState{}, getErr(err, "key", id, ws)
	}
	return st, nil
}

// KeyFilter selects keys. The zero value selects all.
type KeyFilter struct {
	// Status, when set, keeps the keys whose StatusAt(At) is this status (active,
	// revoked or expired).
	Status string
	// At is the time expiry is judged at; zero means now.
	At time.Time
	// After, when set, keeps the keys with an id after it: the id of the last key of the
	// previous page.
	After string
	// Limit, when positive, is the most keys returned.
	Limit int
}

// Keys returns the keys of a workspace that match f, ordered by id (so by creation time
// for ULIDs). An unknown workspace has no keys.
func (s *Store) Keys(ws events.Workspace, f KeyFilter) ([]events.KeyState, error) {
	at := f.At
	if at.IsZero() {
		at = time.Now()
	}
	var out []events.KeyState
	p := keyPrefix(ws)
	err := s.scan(pageStart(p, f.After), prefixEnd(p), func(key, value []byte) error {
		if f.Limit > 0 && len(out) == f.Limit {
			return errStop
		}
		var st events.KeyState
		if err := decodeValue(value, &st); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		if f.Status == "" || st.StatusAt(at) == f.Status {
			out = append(out, st)
		}
		return nil
	})
	if err != nil && err != errStop {
		return nil, fmt.Errorf("list keys of %s: %w", ws, err)
	}
	return out, nil
}

// Identifier returns an identifier's state (active or retired), or an error wrapping
// events.ErrNotFound. ctx is unused; it is there for the commands' state-reader interface.
func (s *Store) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	var st events.IdentifierState
	if err := s.get(identifierKey(ws, id), &st); err != nil {
		return events.IdentifierState{}, getErr(err, "identifier", id, ws)
	}
	return st, nil
}

// IdentifierFilter selects identifiers. The zero value selects every active one.
type IdentifierFilter struct {
	Kind       events.Kind // only this kind; all when empty
	NamePrefix string      // only names starting with it, ignoring case (events.FoldName)
	// After, when set, keeps the identifiers after this position: the IdentifierCursor of
	// the last identifier of the previous page.
	After string
	// Limit, when positive, is the most identifiers returned.
	Limit int
}

// IdentifierCursor is the position of identifier s in the order of Identifiers (kind,
// folded name, id), for IdentifierFilter.After.
func IdentifierCursor(s events.IdentifierState) string {
	return string(s.Kind) + "/" + events.FoldName(s.Name) + string(identNameSeparator) + s.ID
}

// ValidIdentifierCursor reports whether c has the form of an IdentifierCursor.
func ValidIdentifierCursor(c string) bool {
	kind, rest, ok := strings.Cut(c, "/")
	if _, err := events.ParseKind(kind); !ok || err != nil {
		return false
	}
	i := strings.LastIndexByte(rest, identNameSeparator)
	if i < 0 {
		return false
	}
	_, err := events.ParseID("after", rest[i+1:])
	return err == nil
}

// Identifiers returns the active identifiers of a workspace that match f, ordered by
// kind, folded name and id. Retired identifiers are not listed.
func (s *Store) Identifiers(ws events.Workspace, f IdentifierFilter) ([]events.IdentifierState, error) {
	snap := s.db.NewSnapshot() // the index and the states, as of one batch
	defer snap.Close()
	var out []events.IdentifierState
	var from []byte
	if f.After != "" {
		from = pageStart(identNamePrefix(ws, "", ""), f.After)
	}
	err := identNames(snap, ws, f.Kind, events.FoldName(f.NamePrefix), from, func(id string) error {
		if f.Limit > 0 && len(out) == f.Limit {
			return errStop
		}
		var st events.IdentifierState
		if err := get(snap, identifierKey(ws, id), &st); err != nil {
			return fmt.Errorf("identifier %s: %w", id, err)
		}
		out = append(out, st)
		return nil
	})
	if err != nil && err != errStop {
		return nil, fmt.Errorf("list identifiers of %s: %w", ws, err)
	}
	return out, nil
}

// identNames calls fn with the identifier id of each name index entry of ws matching kind
// ("" for all) and the folded name prefix, in key order, from key from on (nil: from the
// first). For all kinds it visits each kind's range in turn, seeking past the names that
// do not match.
func identNames(r pebble.Reader, ws events.Workspace, kind events.Kind, folded string, from []byte, fn func(id string) error) error {
	wsPrefix := identNamePrefix(ws, "", "")
	visit := func(key []byte) error {
		_, _, id, err := parseIdentNameKey(wsPrefix, key)
		if err != nil {
			return err
		}
		return fn(id)
	}
	atLeast := func(k []byte) []byte {
		if bytes.Compare(k, from) < 0 {
			return from
		}
		return k
	}
	if kind != "" {
		p := identNamePrefix(ws, kind, folded)
		return scan(r, atLeast(p), prefixEnd(p), func(key, _ []byte) error { return visit(key) })
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: wsPrefix, UpperBound: prefixEnd(wsPrefix)})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.SeekGE(atLeast(wsPrefix)); ok; {
		k, _, _, err := parseIdentNameKey(wsPrefix, it.Key())
		if err != nil {
			return err
		}
		p := identNamePrefix(ws, k, folded)
		for ok = it.SeekGE(atLeast(p)); ok && bytes.HasPrefix(it.Key(), p); ok = it.Next() {
			if err := visit(it.Key()); err != nil {
				return err
			}
		}
		if ok {
			// The first key of the next kind, after "<ws>/<kind>/".
			ok = it.SeekGE(prefixEnd(identNamePrefix(ws, k, "")))
		}
	}
	return it.Error()
}

// NameClaim returns the state of a name claim (id events.NameClaimID(kind, folded name)),
// or an error wrapping events.ErrNotFound when the name was never claimed. A released claim is
// found, with an empty Holder. ctx is unused; it is there for the commands' state-reader
// interface.
func (s *Store) NameClaim(ctx context.Context, ws events.Workspace, claimID string) (events.NameClaimState, error) {
	var st events.NameClaimState
	if err := s.get(nameClaimKey(ws, claimID), &st); err != nil {
		return events.NameClaimState{}, fmt.Errorf("get name claim %s/%s: %w", ws, claimID, err)
	}
	return st, nil
}

// History returns the history entries of one aggregate with a sequence above after, in
// order, at most limit of them (no limit when limit <= 0). An unknown aggregate has no
// history.
func (s *Store) History(ws events.Workspace, agg events.Aggregate, id string, after uint64, limit int) ([]HistoryEntry, error) {
	out, err := s.history(historyPrefix(ws, agg, id), after, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %s %s/%s: %w", agg, ws, id, err)
	}
	for i := range out {
		out[i].Aggregate, out[i].ID = agg, id
	}
	return out, nil
}

// WorkspaceHistory returns the history entries of every aggregate of a workspace with a
// sequence above after, in order, at most limit of them (no limit when limit <= 0).
func (s *Store) WorkspaceHistory(ws events.Workspace, after uint64, limit int) ([]HistoryEntry, error) {
	out, err := s.history(wsHistoryPrefix(ws), after, limit)
	if err != nil {
		return nil, fmt.Errorf("history of workspace %s: %w", ws, err)
	}
	return out, nil
}

var errStop = errors.New("stop")

// pageStart returns the first key of a page of the entries under prefix p that come after
// the entry p+after: p itself when after is empty.
func pageStart(p []byte, after string) []byte {
	if after == "" {
		return p
	}
	return append(append(bytes.Clone(p), after...), 0)
}

func (s *Store) history(p []byte, after uint64, limit int) ([]HistoryEntry, error) {
	if after == ^uint64(0) {
		return nil, nil
	}
	var out []HistoryEntry
	err := s.scan(appendSeq(bytes.Clone(p), after+1), prefixEnd(p), func(key, value []byte) error {
		if limit > 0 && len(out) == limit {
			return errStop
		}
		var h historyValue
		if err := decodeValue(value, &h); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		seq, err := parseSeqSuffix(key)
		if err != nil {
			return err
		}
		out = append(out, HistoryEntry{Seq: seq, Type: h.Type, Actor: h.Actor, Time: h.Time, Aggregate: h.Aggregate, ID: h.ID})
		return nil
	})
	if err != nil && err != errStop {
		return nil, err
	}
	return out, nil
}
