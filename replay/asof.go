package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// Cut is a point in the log: the records up to stream sequence Seq, or, when Seq is 0,
// the changes made at or before Time. A change is made at its event's time (the time a
// history shows), which is a little before the log stores it (events.Record.Time), so
// an as_of time copied from a history includes that change. The zero Cut is not valid.
type Cut struct {
	Seq  uint64
	Time time.Time
}

// ParseCut parses an as_of value: a stream sequence (decimal, at least 1) or an RFC 3339
// time. It returns an *events.ValidationError for field field.
func ParseCut(field, s string) (Cut, error) {
	s = strings.TrimSpace(s)
	if s != "" && strings.Trim(s, "0123456789") == "" {
		seq, err := strconv.ParseUint(s, 10, 64)
		if err != nil || seq == 0 {
			return Cut{}, events.Invalid(field, s, "a stream sequence must be a number from 1")
		}
		return Cut{Seq: seq}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Cut{}, events.Invalid(field, s, "must be an RFC 3339 time (e.g. 2026-01-02T15:04:05Z) or a stream sequence")
	}
	return Cut{Time: t.UTC()}, nil
}

// String formats the cut as ParseCut reads it.
func (c Cut) String() string {
	if c.Seq != 0 {
		return strconv.FormatUint(c.Seq, 10)
	}
	return c.Time.Format(time.RFC3339Nano)
}

// MaxStoreDelay bounds how long after its event's time a change reaches the log (the
// command decides, then appends with retries). A time cut reads records stored up to this
// long after it, to find changes made before it but stored after it.
const MaxStoreDelay = time.Minute

// includes reports whether the record is at or before the cut, and past whether it and
// every later record are beyond it. d is the record decoded.
func (c Cut) includes(r events.Record, d events.Decoded) (in, past bool) {
	if c.Seq != 0 {
		return r.Seq <= c.Seq, r.Seq > c.Seq
	}
	if !r.Time.After(c.Time) {
		return true, false // stored by then, so made by then
	}
	return !d.Event.Time.After(c.Time), r.Time.After(c.Time.Add(MaxStoreDelay))
}

// At returns the moment of the cut, at which expiry is judged: its Time, or for a
// sequence the time the log stored that record (now when it is beyond the log).
func (c Cut) At(ctx context.Context, log events.Reader) (time.Time, error) {
	if c.Seq == 0 {
		return c.Time, nil
	}
	r, err := log.Get(ctx, c.Seq)
	if errors.Is(err, events.ErrNotFound) {
		return time.Now().UTC(), nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return r.Time, nil
}

var errPastCut = errors.New("replay: past the cut")

// foldUntil calls apply with each record of filter up to the cut, in order.
func foldUntil(ctx context.Context, log events.Reader, filter string, cut Cut,
	apply func(r events.Record, d events.Decoded) error) error {
	err := log.Read(ctx, filter, 1, func(r events.Record) error {
		if cut.Seq != 0 && r.Seq > cut.Seq {
			return errPastCut // without decoding it
		}
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		in, past := cut.includes(r, d)
		if past {
			return errPastCut
		}
		if !in {
			return nil
		}
		return apply(r, d)
	})
	if err != nil && !errors.Is(err, errPastCut) {
		return fmt.Errorf("replay: read %s: %w", filter, err)
	}
	return nil
}

// KeyAsOf returns key id of workspace ws as it was at the cut, folded from its events in
// the log: a key revoked since shows active. It returns an error wrapping
// events.ErrNotFound when the key had not been created by then.
func KeyAsOf(ctx context.Context, log events.Reader, ws events.Workspace, id string, cut Cut) (events.KeyState, error) {
	var st events.KeyState
	err := foldUntil(ctx, log, events.AggregateFilter(ws, events.AggKey, id), cut, func(r events.Record, d events.Decoded) error {
		return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return events.KeyState{}, err
	}
	if !st.Exists() || st.ID == "" {
		return events.KeyState{}, fmt.Errorf("as of %s: %w", cut, events.NotFound("key", id, ws))
	}
	return st, nil
}

// KeysAsOf returns the keys of workspace ws as they were at the cut, ordered by id, from
// one read of the workspace's key events up to the cut. Keys created later are not listed.
func KeysAsOf(ctx context.Context, log events.Reader, ws events.Workspace, cut Cut) ([]events.KeyState, error) {
	keys := map[string]*events.KeyState{}
	filter := events.SubjectPrefix + "." + string(ws) + "." + string(events.AggKey) + ".>"
	err := foldUntil(ctx, log, filter, cut, func(r events.Record, d events.Decoded) error {
		_, id := d.Event.Aggregate()
		st := keys[id]
		if st == nil {
			st = &events.KeyState{}
			keys[id] = st
		}
		return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return nil, err
	}
	out := make([]events.KeyState, 0, len(keys))
	for _, st := range keys {
		if st.Exists() && st.ID != "" {
			out = append(out, *st)
		}
	}
	slices.SortFunc(out, func(a, b events.KeyState) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// IdentifierAsOf returns identifier id of workspace ws as it was at the cut, or an error
// wrapping events.ErrNotFound when it had not been registered by then.
func IdentifierAsOf(ctx context.Context, log events.Reader, ws events.Workspace, id string, cut Cut) (events.IdentifierState, error) {
	var st events.IdentifierState
	err := foldUntil(ctx, log, events.AggregateFilter(ws, events.AggIdentifier, id), cut, func(r events.Record, d events.Decoded) error {
		return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return events.IdentifierState{}, err
	}
	if !st.Exists() || st.ID == "" {
		return events.IdentifierState{}, fmt.Errorf("as of %s: %w", cut, events.NotFound("identifier", id, ws))
	}
	return st, nil
}

// IdentifiersAsOf returns the identifiers of workspace ws that were active at the cut, of
// kind kind (all kinds when empty) and with a folded name starting with the folded
// namePrefix, ordered as projections.Store.Identifiers orders them: by kind, folded name
// and id.
func IdentifiersAsOf(ctx context.Context, log events.Reader, ws events.Workspace, kind events.Kind, namePrefix string, cut Cut) ([]events.IdentifierState, error) {
	ids := map[string]*events.IdentifierState{}
	filter := events.SubjectPrefix + "." + string(ws) + "." + string(events.AggIdentifier) + ".>"
	err := foldUntil(ctx, log, filter, cut, func(r events.Record, d events.Decoded) error {
		_, id := d.Event.Aggregate()
		st := ids[id]
		if st == nil {
			st = &events.IdentifierState{}
			ids[id] = st
		}
		return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
	})
	if err != nil {
		return nil, err
	}
	prefix := events.FoldName(namePrefix)
	type entry struct {
		folded string
		st     events.IdentifierState
	}
	var list []entry
	for _, st := range ids {
		folded := events.FoldName(st.Name)
		if st.Exists() && st.ID != "" && st.Status == events.StatusActive && (kind == "" || st.Kind == kind) && strings.HasPrefix(folded, prefix) {
			list = append(list, entry{folded, *st})
		}
	}
	slices.SortFunc(list, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.st.Kind, b.st.Kind), cmp.Compare(a.folded, b.folded), cmp.Compare(a.st.ID, b.st.ID))
	})
	out := make([]events.IdentifierState, len(list))
	for i, e := range list {
		out[i] = e.st
	}
	return out, nil
}

// View is the keys and identifiers of the log as they were at Cut, folded from their
// events on each read: the point-in-time twin of projections.Store's Key, Keys,
// Identifier and Identifiers, with the same filters, order and errors (an error wrapping
// events.ErrNotFound for what did not exist yet), so one reader serves both.
type View struct {
	Log events.Reader
	Cut Cut
}

// Key returns key id of workspace ws as it was at the cut (see KeyAsOf).
func (v View) Key(ctx context.Context, ws events.Workspace, id string) (events.KeyState, error) {
	return KeyAsOf(ctx, v.Log, ws, id, v.Cut)
}

// Keys returns the keys of workspace ws that existed at the cut and match f, ordered by
// id, as projections.Store.Keys does; f.At is the moment their status is judged at (zero:
// now).
func (v View) Keys(ctx context.Context, ws events.Workspace, f projections.KeyFilter) ([]events.KeyState, error) {
	keys, err := KeysAsOf(ctx, v.Log, ws, v.Cut)
	if err != nil {
		return nil, err
	}
	at := f.At
	if at.IsZero() {
		at = time.Now()
	}
	var out []events.KeyState
	for _, k := range keys {
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		if k.ID > f.After && (f.Status == "" || k.StatusAt(at) == f.Status) {
			out = append(out, k)
		}
	}
	return out, nil
}

// Identifier returns identifier id of workspace ws as it was at the cut (see
// IdentifierAsOf).
func (v View) Identifier(ctx context.Context, ws events.Workspace, id string) (events.IdentifierState, error) {
	return IdentifierAsOf(ctx, v.Log, ws, id, v.Cut)
}

// Identifiers returns the identifiers of workspace ws that were active at the cut and
// match f, in the order of projections.Store.Identifiers (f.After is a
// projections.IdentifierCursor).
func (v View) Identifiers(ctx context.Context, ws events.Workspace, f projections.IdentifierFilter) ([]events.IdentifierState, error) {
	list, err := IdentifiersAsOf(ctx, v.Log, ws, f.Kind, f.NamePrefix, v.Cut)
	if err != nil {
		return nil, err
	}
	// Ordered by cursor, as the live index is: kind, folded name, id.
	slices.SortFunc(list, func(x, y events.IdentifierState) int {
		return strings.Compare(projections.IdentifierCursor(x), projections.IdentifierCursor(y))
	})
	var out []events.IdentifierState
	for _, s := range list {
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
		if projections.IdentifierCursor(s) > f.After {
			out = append(out, s)
		}
	}
	return out, nil
}
