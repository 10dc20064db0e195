package projections

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keyreg/keyreg/events"
)

// AuditFilter selects the history entries of a workspace for an audit query. The zero
// value selects every entry.
type AuditFilter struct {
	// KeyID, when set, keeps the events of this key only (read from its own index).
	KeyID string
	// Actor, when set, keeps the events caused by this key id.
	Actor string
	// Types, when not empty, keeps the events of these types.
	Types []events.Type
	// Since and Until, when set, keep the events whose time is within [Since, Until]
	// (both inclusive).
	Since, Until time.Time
	// MaxSeq, when not 0, keeps the entries up to this stream sequence.
	MaxSeq uint64
}

func (f AuditFilter) match(h *HistoryEntry) bool {
	return (f.Actor == "" || h.Actor == f.Actor) &&
		(len(f.Types) == 0 || slices.Contains(f.Types, h.Type)) &&
		(f.Since.IsZero() || !h.Time.Before(f.Since)) &&
		(f.Until.IsZero() || !h.Time.After(f.Until))
}

// Audit returns the history entries of workspace ws that match f, with a sequence above
// after, in order, at most limit of them (limit must be > 0). It reads the history
// indexes only; the event bodies are in the log. An unknown workspace or key has no
// entries.
func (s *Store) Audit(ws events.Workspace, f AuditFilter, after uint64, limit int) ([]HistoryEntry, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("audit of %s: limit %d: %w", ws, limit, events.ErrInvalid)
	}
	if strings.ContainsAny(f.KeyID, "/\x00") {
		return nil, events.Invalid("key", f.KeyID, "not a key id")
	}
	p := wsHistoryPrefix(ws)
	if f.KeyID != "" {
		p = historyPrefix(ws, events.AggKey, f.KeyID)
	}
	upper := prefixEnd(p)
	if f.MaxSeq != 0 {
		if f.MaxSeq <= after {
			return nil, nil
		}
		upper = appendSeq(bytes.Clone(p), f.MaxSeq+1)
	}
	if after == ^uint64(0) {
		return nil, nil
	}
	var out []HistoryEntry
	err := s.scan(appendSeq(bytes.Clone(p), after+1), upper, func(key, value []byte) error {
		var h historyValue
		if err := decodeValue(value, &h); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		seq, err := parseSeqSuffix(key)
		if err != nil {
			return err
		}
		e := HistoryEntry{Seq: seq, Type: h.Type, Actor: h.Actor, Time: h.Time, Aggregate: h.Aggregate, ID: h.ID}
		if f.KeyID != "" {
			e.Aggregate, e.ID = events.AggKey, f.KeyID
		}
		if !f.match(&e) {
			return nil
		}
		out = append(out, e)
		if len(out) == limit {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("audit of %s: %w", ws, err)
	}
	return out, nil
}
