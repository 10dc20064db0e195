package projections

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// Apply applies log records in order and writes every view change, index change and the
// new checkpoint in one Pebble batch, synced unless Options.NoSync or LazySync. Records at or below
// the checkpoint are skipped, so re-applying is harmless. After the batch commits, the
// Verify index is updated and then the checkpoint advances.
//
// It returns an error wrapping ErrGap when a record's sequence is not the one after the
// last applied, ErrReadOnly on a read-only store, events.ErrClosed after Close, or an
// error naming the sequence of a record that cannot be decoded or folded (an unknown type,
// a subject that does not match the envelope, an event for an aggregate that was never
// created). On error nothing of the batch is written.
func (s *Store) Apply(recs []events.Record) error {
	ds := make([]events.Decoded, 0, len(recs))
	last := s.cp.Load()
	for _, r := range recs {
		if r.Seq <= last {
			continue
		}
		d, err := events.DecodeRecord(r)
		if err != nil {
			return fmt.Errorf("apply seq %d: %w", r.Seq, err)
		}
		ds = append(ds, d)
	}
	return s.ApplyDecoded(ds)
}

// ApplyDecoded is Apply for records already decoded (events.DecodeRecord), so that a bulk
// rebuild can decode on other cores while this one applies.
func (s *Store) ApplyDecoded(recs []events.Decoded) error { return s.applyDecoded(recs, nil) }

// ApplyHashed is ApplyDecoded with each record's leaf hash in the audit trees already
// computed: leaves[i] is tlog.RecordHash(recs[i].Data). A bulk rebuild hashes on other
// cores too.
func (s *Store) ApplyHashed(recs []events.Decoded, leaves []tlog.Hash) error {
	if len(leaves) != len(recs) {
		return fmt.Errorf("apply: %d leaf hashes for %d records", len(leaves), len(recs))
	}
	prep := make([]Prepared, len(recs))
	for i := range prep {
		prep[i].leaf = leaves[i]
	}
	return s.applyDecoded(recs, prep)
}

// Prepared is the part of applying a record that depends on that record alone: its leaf
// hash in the audit trees and its history entries. A bulk rebuild prepares records on
// other cores (Prepare) while one applies them in order (ApplyPrepared).
type Prepared struct {
	leaf      tlog.Hash
	subjectOK bool   // the record's subject matches its event (keyindex.CheckSubject)
	history   bool   // the entries below are set
	wsLane    string // the workspace history's lane
	// The per-aggregate and workspace history entries' keys and values, back to back
	// in buf: hist key, hist value, workspace key, workspace value ending at ends[0..3].
	buf  []byte
	ends [4]int
}

// Prepare computes d's Prepared.
func Prepare(d events.Decoded) (Prepared, error) {
	p := Prepared{leaf: tlog.RecordHash(d.Data)}
	e := d.Event
	ws := e.Workspace()
	agg, id := e.Aggregate()
	// A mismatch is left for apply to report, in order.
	p.subjectOK = keyindex.CheckSubject(d.Subject, ws, agg, id) == nil
	h := historyValue{Type: e.Type, Actor: e.Actor, Time: e.Time}
	b := make([]byte, 0, 2*len(ws)+len(agg)+len(id)+2*seqDigits+2*len(e.Type)+2*len(e.Actor)+len(agg)+len(id)+64)
	b = append(b, prefixHistory...)
	b = append(append(b, ws...), '/')
	b = append(append(b, agg...), '/')
	b = append(append(b, id...), '/')
	b = appendSeq(b, d.Seq)
	p.ends[0] = len(b)
	b, err := encodeValue(b, &h)
	if err != nil {
		return p, fmt.Errorf("apply seq %d: %w", d.Seq, err)
	}
	p.ends[1] = len(b)
	b = append(b, prefixWSHistory...)
	b = appendSeq(append(append(b, ws...), '/'), d.Seq)
	p.ends[2] = len(b)
	h.Aggregate, h.ID = agg, id
	if b, err = encodeValue(b, &h); err != nil {
		return p, fmt.Errorf("apply seq %d: %w", d.Seq, err)
	}
	p.ends[3] = len(b)
	p.buf, p.history, p.wsLane = b, true, string(b[p.ends[1]:p.ends[2]-seqDigits])
	return p, nil
}

// ApplyPrepared is ApplyDecoded with prep[i] = Prepare(recs[i]) computed ahead.
func (s *Store) ApplyPrepared(recs []events.Decoded, prep []Prepared) error {
	if len(prep) != len(recs) {
		return fmt.Errorf("apply: %d prepared records for %d records", len(prep), len(recs))
	}
	return s.applyDecoded(recs, prep)
}

func (s *Store) applyDecoded(recs []events.Decoded, prep []Prepared) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("apply: %w", events.ErrClosed)
	}
	start := time.Now()
	last := s.cp.Load()
	first := last
	t := newTxn(s)
	defer t.b.Close()
	for i, d := range recs {
		r := d.Record
		switch {
		case r.Seq <= last:
			continue
		case r.Seq != last+1:
			return fmt.Errorf("apply seq %d: %w after seq %d", r.Seq, ErrGap, last)
		}
		if s.opts.ReadOnly {
			return fmt.Errorf("apply seq %d: %w", r.Seq, ErrReadOnly)
		}
		var p *Prepared
		if prep != nil {
			p = &prep[i]
		}
		if err := t.apply(d, p); err != nil {
			return fmt.Errorf("apply seq %d: %w", r.Seq, err)
		}
		var leaf tlog.Hash
		if p != nil {
			leaf = p.leaf
		} else {
			leaf = tlog.RecordHash(r.Data)
		}
		if err := t.addLeaf(r, leaf); err != nil {
			return fmt.Errorf("apply seq %d: %w", r.Seq, err)
		}
		if err := t.addWorkspaceLeaf(d.Event.Workspace(), r, leaf); err != nil {
			return fmt.Errorf("apply seq %d: %w", r.Seq, err)
		}
		last = r.Seq
	}
	if last == s.cp.Load() {
		return nil
	}
	if err := t.flush(last); err != nil {
		return fmt.Errorf("apply up to seq %d: %w", last, err)
	}
	wo := pebble.Sync
	if s.opts.NoSync || s.opts.LazySync {
		wo = pebble.NoSync
	}
	built := time.Now()
	if err := t.b.Commit(wo); err != nil {
		return fmt.Errorf("apply up to seq %d: commit: %w", last, err)
	}
	s.stats.add(int(last-first), built.Sub(start), time.Since(built))
	if s.bulk != nil {
		if err := s.bulk.commit(t, s.db); err != nil {
			return fmt.Errorf("apply up to seq %d: %w", last, err)
		}
	}
	s.updateIndex(t.keys)
	s.setCheckpoint(last)
	return nil
}

// txn is one Apply: a batch and the aggregate states it changed, by view key. States are
// read once from the DB, folded in memory and written once by flush; index changes go to
// the batch as each event is applied (later writes to a key shadow earlier ones).
type txn struct {
	s          *Store
	b          *pebble.Batch
	workspaces map[string]*events.WorkspaceState
	keys       map[string]*events.KeyState
	idents     map[string]*events.IdentifierState
	claims     map[string]*events.NameClaimState
	tree       treeTxn     // the audit tree's hashes written in this batch
	buf        []byte      // scratch for encoding index values (Pebble's Set copies them)
	bulk       bulkEntries // in a bulk rebuild, the lanes' entries of this batch
}

func newTxn(s *Store) *txn {
	t := &txn{
		s:          s,
		b:          s.db.NewBatch(),
		workspaces: map[string]*events.WorkspaceState{},
		keys:       map[string]*events.KeyState{},
		idents:     map[string]*events.IdentifierState{},
		claims:     map[string]*events.NameClaimState{},
	}
	if s.bulk != nil { // the trees so far are in bulkLoad, not (yet) in the DB
		t.tree.started = true
		t.tree.top = s.bulk.top.clone()
		t.bulk, s.bulk.stage = s.bulk.stage, bulkEntries{}
	}
	return t
}

// state returns the state stored under key, from the txn's cache or the DB (zero when
// absent), and caches it.
func state[T any](t *txn, cache map[string]*T, key []byte) (*T, error) {
	if st, ok := cache[string(key)]; ok {
		return st, nil
	}
	st := new(T)
	v, closer, err := t.s.db.Get(key)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", key, err)
	default:
		err := decodeValue(v, any(st))
		closer.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
	}
	cache[string(key)] = st
	return st, nil
}

// apply folds d into the txn; p, when not nil, is Prepare(d) or holds its leaf alone.
func (t *txn) apply(d events.Decoded, p *Prepared) error {
	r := d.Record
	e := d.Event
	ws := e.Workspace()
	agg, id := e.Aggregate()
	if p == nil || !p.subjectOK {
		if err := keyindex.CheckSubject(r.Subject, ws, agg, id); err != nil {
			return err
		}
	}
	switch agg {
	case events.AggWorkspace:
		st, err := state(t, t.workspaces, workspaceKey(ws))
		if err != nil {
			return err
		}
		if err := st.Apply(r.Seq, r.Data, e, d.Payload); err != nil {
			return err
		}
	case events.AggKey:
		st, err := state(t, t.keys, keyKey(ws, id))
		if err != nil {
			return err
		}
		before := secretHashes(st)
		if err := st.Apply(r.Seq, r.Data, e, d.Payload); err != nil {
			return err
		}
		if st.ID != id {
			return fmt.Errorf("key %s/%s: %s before key.created", ws, id, e.Type)
		}
		if err := t.indexSecrets(ws, id, before, secretHashes(st)); err != nil {
			return err
		}
	case events.AggIdentifier:
		st, err := state(t, t.idents, identifierKey(ws, id))
		if err != nil {
			return err
		}
		before := identNameKey(st)
		if err := st.Apply(r.Seq, r.Data, e, d.Payload); err != nil {
			return err
		}
		if st.ID != id {
			return fmt.Errorf("identifier %s/%s: %s before identifier.registered", ws, id, e.Type)
		}
		if after := identNameKey(st); after != before {
			if err := t.replace(before, after, nil); err != nil {
				return err
			}
		}
	case events.AggName:
		st, err := state(t, t.claims, nameClaimKey(ws, id))
		if err != nil {
			return err
		}
		if err := st.Apply(r.Seq, r.Data, e, d.Payload); err != nil {
			return err
		}
	case events.AggCheckpoint:
		if err := t.applyCheckpoint(d); err != nil {
			return err
		}
	case events.AggSubscriber:
		// NATS credentials: kept by keyreg serve's NATS users, not in the views (history only).
	case events.AggSigner:
		// Audit signers: read from the log by the sealer and the server (history only).
	case events.AggWebhook:
		// Webhooks: read from the log by the server and its deliverers (history only).
	default:
		return fmt.Errorf("unknown aggregate %q", agg)
	}
	if p != nil && p.history {
		b := p.buf
		if err := t.b.Set(b[:p.ends[0]], b[p.ends[0]:p.ends[1]], nil); err != nil {
			return err
		}
		return t.put(p.wsLane, b[p.ends[1]:p.ends[2]], b[p.ends[2]:p.ends[3]])
	}
	return t.indexHistory(r.Seq, e, ws, agg, id)
}

// secretHashes returns a key's current and previous secret hashes ("" when unset).
func secretHashes(k *events.KeyState) [2]string { return [2]string{k.SecretHash, k.PreviousHash} }

// indexSecrets moves the secret index of key ws/id from the hashes before to those after.
func (t *txn) indexSecrets(ws events.Workspace, id string, before, after [2]string) error {
	for _, h := range before {
		if h != "" && h != after[0] && h != after[1] {
			if err := t.b.Delete(secretKey(h), nil); err != nil {
				return err
			}
		}
	}
	ref := []byte(string(ws) + "/" + id)
	for _, h := range after {
		if h != "" {
			if err := t.b.Set(secretKey(h), ref, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// replace deletes key before and sets key after to value; "" means none.
func (t *txn) replace(before, after string, value []byte) error {
	if before != "" {
		if err := t.b.Delete([]byte(before), nil); err != nil {
			return err
		}
	}
	if after != "" {
		return t.b.Set([]byte(after), value, nil)
	}
	return nil
}

// HistoryEntry is one event in a history index: enough to filter an audit query without
// reading the log. The event itself is fetched by Seq from the log.
type HistoryEntry struct {
	Seq       uint64           `json:"seq"`
	Type      events.Type      `json:"type"`
	Actor     string           `json:"actor,omitempty"`
	Time      time.Time        `json:"time"`
	Aggregate events.Aggregate `json:"aggregate"`
	ID        string           `json:"id"`
}

// historyValue is the stored value of a history index entry; the sequence is in the key,
// and so are the aggregate and id of a per-aggregate entry.
type historyValue struct {
	Type      events.Type      `json:"type"`
	Actor     string           `json:"actor,omitempty"`
	Time      time.Time        `json:"time"`
	Aggregate events.Aggregate `json:"aggregate,omitempty"`
	ID        string           `json:"id,omitempty"`
}

func (t *txn) indexHistory(seq uint64, e events.Event, ws events.Workspace, agg events.Aggregate, id string) error {
	h := historyValue{Type: e.Type, Actor: e.Actor, Time: e.Time}
	v, err := encodeValue(t.buf[:0], &h)
	if err != nil {
		return err
	}
	if err := t.b.Set(historyKey(ws, agg, id, seq), v, nil); err != nil {
		return err
	}
	h.Aggregate, h.ID = agg, id
	if v, err = encodeValue(v[:0], &h); err != nil {
		return err
	}
	t.buf = v
	return t.put(string(wsHistoryPrefix(ws)), wsHistoryKey(ws, seq), v)
}

// marshal appends h's JSON to b: the same bytes as json.Marshal(h), written by hand
// because history entries are most of what a rebuild writes.
func (h historyValue) marshal(b []byte) ([]byte, error) {
	if y := h.Time.Year(); y < 0 || y > 9999 {
		v, err := json.Marshal(h)
		return append(b, v...), err
	}
	b = append(b, `{"type":`...)
	b = appendJSONString(b, string(h.Type))
	if h.Actor != "" {
		b = append(b, `,"actor":`...)
		b = appendJSONString(b, h.Actor)
	}
	b = append(b, `,"time":"`...)
	b = h.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if h.Aggregate != "" {
		b = append(b, `,"aggregate":`...)
		b = appendJSONString(b, string(h.Aggregate))
	}
	if h.ID != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, h.ID)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s quoted as encoding/json quotes it: plain printable ASCII as
// is, anything else through json.Marshal (which escapes HTML characters too).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			v, _ := json.Marshal(s)
			return append(b, v...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// flush writes the changed states and the checkpoint to the batch.
func (t *txn) flush(cp uint64) error {
	if err := putAll(t, t.workspaces); err != nil {
		return err
	}
	if err := putAll(t, t.keys); err != nil {
		return err
	}
	if err := putAll(t, t.idents); err != nil {
		return err
	}
	if err := putAll(t, t.claims); err != nil {
		return err
	}
	return t.b.Set([]byte(keyCheckpoint), strconv.AppendUint(nil, cp, 10), nil)
}

func putAll[T any](t *txn, states map[string]*T) error {
	for k, st := range states {
		v, err := encodeValue(t.buf[:0], any(st))
		if err != nil {
			return fmt.Errorf("encode %s: %w", k, err)
		}
		t.buf = v
		if err := t.b.Set([]byte(k), v, nil); err != nil {
			return err
		}
	}
	return nil
}
