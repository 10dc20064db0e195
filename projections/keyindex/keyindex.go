// Package keyindex is the in-memory index that answers verify: every key of a keyreg
// stream by the digest of its secret, and Verify, the hot path that checks a presented
// secret against it. projections.Store keeps one fed by its projector; a service keeps
// its own fed by the log (package projections/verifier) and gets the same answers.
//
// It imports only events: no Pebble, no NATS.
package keyindex

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyreg/keyreg/events"
)

// Verify result codes.
const (
	CodeValid            = "VALID"
	CodeMalformed        = "MALFORMED"
	CodeNotFound         = "NOT_FOUND"
	CodeRevoked          = "REVOKED"
	CodeExpired          = "EXPIRED"
	CodeIPNotAllowed     = "IP_NOT_ALLOWED"
	CodePermissionDenied = "PERMISSION_DENIED"
	CodeUnavailable      = "UNAVAILABLE" // a verifier that cannot vouch for its freshness (package verifier); never from Index.Verify
)

// VerifyResult is the answer of Verify. KeyID and Workspace are set whenever the secret
// belongs to a key (every code but MALFORMED and NOT_FOUND); Permissions only when Valid.
type VerifyResult struct {
	Valid     bool
	Code      string
	KeyID     string
	Workspace events.Workspace
	// Permissions is shared with the index and must not be modified.
	Permissions []events.Permission
}

// Index holds every key, revoked ones included, by the digest of its current secret and
// of its previous secret after a rotation. The zero value is an empty index, ready to
// use. Verify, Key, Len and Dump are safe for concurrent use with Apply and Put; Apply
// and Put calls must not run concurrently with each other.
type Index struct {
	mu     sync.RWMutex
	byHash map[[32]byte]*entry
	byKey  map[keyRef]*entry
	shared interned // values many keys hold alike, kept once
}

// keyRef is the key of an entry in Index.byKey: its workspace and id, the strings of its
// state (no copy of its own).
type keyRef struct {
	ws events.Workspace
	id string
}

// Verify checks a presented secret for a request from ip that needs permission, at time
// now. The checks run in this order, the first failing one giving the code: MALFORMED (not
// a well-formed secret; nothing is looked up), NOT_FOUND (no key has this secret, or it is
// a rotated-out secret at or after its PreviousValidUntil), REVOKED, EXPIRED (at or after
// ExpiresAt), IP_NOT_ALLOWED (ip outside a non-empty allowlist; IPv4-mapped IPv6 is
// unmapped first; an invalid ip matches no entry), PERMISSION_DENIED (permission not
// granted; an empty permission is not checked). Otherwise the code is VALID. It does not
// allocate.
func (x *Index) Verify(secret string, ip netip.Addr, permission events.Permission, now time.Time) VerifyResult {
	if !events.WellFormedSecret(secret) {
		return VerifyResult{Code: CodeMalformed}
	}
	d := events.SecretDigest(secret)
	x.mu.RLock()
	e := x.byHash[d]
	x.mu.RUnlock()
	if e == nil || (d != e.current && !now.Before(e.previousUntil)) {
		return VerifyResult{Code: CodeNotFound}
	}
	k := &e.state
	r := VerifyResult{KeyID: k.ID, Workspace: k.Workspace}
	switch k.StatusAt(now) {
	case events.StatusActive:
	case events.StatusExpired:
		r.Code = CodeExpired
		return r
	default:
		r.Code = CodeRevoked
		return r
	}
	if !events.AllowlistContains(k.Allowlist, ip) {
		r.Code = CodeIPNotAllowed
		return r
	}
	if permission != "" && !slices.Contains(k.Permissions, permission) {
		r.Code = CodePermissionDenied
		return r
	}
	r.Valid, r.Code, r.Permissions = true, CodeValid, k.Permissions
	return r
}

// Key returns the state of key ws/id as the index holds it, and whether it holds it.
func (x *Index) Key(ws events.Workspace, id string) (events.KeyState, bool) {
	x.mu.RLock()
	e := x.byKey[keyRef{ws, id}]
	x.mu.RUnlock()
	if e == nil {
		return events.KeyState{}, false
	}
	return e.full(), true
}

// Len returns how many keys the index holds.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byKey)
}

// Each calls fn with every key the index holds, revoked ones included, in no particular
// order, until fn returns false. fn must not modify the state's lists. Each holds the index's lock
// only while it collects the entries, so Apply and Put go on while fn runs; each state fn
// sees is whole, as of the collection or later.
func (x *Index) Each(fn func(*events.KeyState) bool) {
	x.mu.RLock()
	entries := make([]*entry, 0, len(x.byKey))
	for _, e := range x.byKey {
		entries = append(entries, e)
	}
	x.mu.RUnlock()
	for _, e := range entries {
		k := e.full()
		if !fn(&k) {
			return
		}
	}
}

// Apply folds one log record into the index, as projections.Store.Apply folds it into
// the key views: an event of a key aggregate updates that key's entry with
// events.KeyState.Apply; a record of any other aggregate is ignored without being
// decoded. A key event at or below the key's version is skipped, so re-applying is
// harmless. It returns an error
// naming the sequence for a record that cannot be decoded or folded (an unknown key event
// type, a subject that does not match the envelope, an event of a key never created); the
// index is then unchanged.
func (x *Index) Apply(r events.Record) error {
	if !isKeySubject(r.Subject) {
		return nil
	}
	d, err := events.DecodeRecord(r)
	if err != nil {
		return fmt.Errorf("apply seq %d: %w", r.Seq, err)
	}
	ws := d.Event.Workspace()
	agg, id := d.Event.Aggregate()
	if err := CheckSubject(r.Subject, ws, agg, id); err != nil {
		return fmt.Errorf("apply seq %d: %w", r.Seq, err)
	}
	x.mu.RLock()
	old := x.byKey[keyRef{ws, id}]
	x.mu.RUnlock()
	var st events.KeyState
	if old != nil {
		if old.state.Version >= r.Seq {
			return nil
		}
		st = old.full() // Apply replaces slices, never changes them in place
	}
	if err := st.Apply(r.Seq, r.Data, d.Event, d.Payload); err != nil {
		return fmt.Errorf("apply seq %d: %w", r.Seq, err)
	}
	if st.ID != id {
		return fmt.Errorf("apply seq %d: key %s/%s: %s before key.created", r.Seq, ws, id, d.Event.Type)
	}
	x.mu.Lock()
	x.putLocked(st)
	x.mu.Unlock()
	return nil
}

// isKeySubject reports whether subject is "keyreg.<ws>.key.<id>.<event>", without
// allocating.
func isKeySubject(subject string) bool {
	rest, ok := strings.CutPrefix(subject, events.SubjectPrefix+".")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ".")
	return ok && strings.HasPrefix(rest, string(events.AggKey)+".")
}

// entry is one key of an Index. Entries are immutable: a change replaces the
// entry, so a reader may use one after releasing the lock.
//
// To keep a million keys in little memory, an entry's state does not keep the hex
// SecretHash and PreviousHash that its digests hold (full restores them), and its
// workspace, status, creator, permissions and allowlist are shared with the other
// entries that hold the same (interned).
type entry struct {
	state         events.KeyState // SecretHash and PreviousHash cleared when the digests hold them
	current       [32]byte
	previous      [32]byte
	hasCurrent    bool
	hasPrevious   bool
	previousUntil time.Time
}

func newEntry(k events.KeyState) *entry {
	e := &entry{state: k}
	e.hasCurrent = decodeDigest(&e.current, k.SecretHash)
	if k.PreviousHash != "" && k.PreviousValidUntil != nil {
		e.hasPrevious = decodeDigest(&e.previous, k.PreviousHash)
		e.previousUntil = *k.PreviousValidUntil
	}
	if e.hasCurrent {
		e.state.SecretHash = ""
	}
	if e.hasPrevious {
		e.state.PreviousHash = ""
	}
	return e
}

// full returns the entry's state whole, its hex hashes restored.
func (e *entry) full() events.KeyState {
	k := e.state
	if e.hasCurrent {
		k.SecretHash = hex.EncodeToString(e.current[:])
	}
	if e.hasPrevious {
		k.PreviousHash = hex.EncodeToString(e.previous[:])
	}
	return k
}

// decodeDigest decodes a 64-digit lowercase hex hash into dst; it reports false, leaving
// the hash to be kept as it is, for anything else.
func decodeDigest(dst *[32]byte, h string) bool {
	if len(h) != 2*len(dst) || strings.ToLower(h) != h {
		return false
	}
	n, err := hex.Decode(dst[:], []byte(h))
	return err == nil && n == len(dst)
}

// interned keeps one copy of the values many keys hold alike.
type interned struct {
	strs   map[string]string
	perms  map[string][]events.Permission
	allows map[string][]netip.Prefix
	buf    []byte
}

// state returns k with its workspace, status, creator, permissions and allowlist
// replaced by their shared copies (nil and empty lists stay apart).
func (in *interned) state(k events.KeyState) events.KeyState {
	if in.strs == nil {
		in.strs, in.perms, in.allows = map[string]string{}, map[string][]events.Permission{}, map[string][]netip.Prefix{}
	}
	k.Workspace = events.Workspace(in.str(string(k.Workspace)))
	k.Status = in.str(k.Status)
	k.CreatedBy = in.str(k.CreatedBy)
	if k.Permissions != nil {
		in.buf = in.buf[:0]
		for _, p := range k.Permissions {
			in.buf = append(append(in.buf, p...), 0)
		}
		if p, ok := in.perms[string(in.buf)]; ok {
			k.Permissions = p
		} else {
			in.perms[string(in.buf)] = k.Permissions
		}
	}
	if k.Allowlist != nil {
		in.buf = in.buf[:0]
		for _, p := range k.Allowlist {
			in.buf, _ = p.AppendBinary(in.buf)
		}
		if a, ok := in.allows[string(in.buf)]; ok {
			k.Allowlist = a
		} else {
			in.allows[string(in.buf)] = k.Allowlist
		}
	}
	return k
}

func (in *interned) str(s string) string {
	if v, ok := in.strs[s]; ok {
		return v
	}
	in.strs[s] = s
	return s
}

// Put replaces the entries of the given keys (by their workspace and id) with these
// states, as one change that Verify sees whole: projections.Store puts the keys of each
// batch it applies, and every key of its views when it opens.
func (x *Index) Put(keys ...events.KeyState) {
	if len(keys) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, k := range keys {
		x.putLocked(k)
	}
}

func (x *Index) putLocked(k events.KeyState) {
	if x.byKey == nil {
		x.byHash, x.byKey = map[[32]byte]*entry{}, map[keyRef]*entry{}
	}
	k = x.shared.state(k)
	key := keyRef{k.Workspace, k.ID}
	if old := x.byKey[key]; old != nil {
		if old.hasCurrent && x.byHash[old.current] == old {
			delete(x.byHash, old.current)
		}
		if old.hasPrevious && x.byHash[old.previous] == old {
			delete(x.byHash, old.previous)
		}
	}
	e := newEntry(k)
	x.byKey[key] = e
	if e.hasPrevious {
		x.byHash[e.previous] = e
	}
	if e.hasCurrent {
		x.byHash[e.current] = e
	}
}

// Dump renders the index, one line per secret digest (the digest, the key's current and
// previous digests, until when the previous one works, and the key's state as JSON),
// sorted: two indexes that answer alike dump alike. It is meant for tests.
func (x *Index) Dump() (string, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	lines := make([]string, 0, len(x.byHash))
	for d, e := range x.byHash {
		b, err := json.Marshal(e.full())
		if err != nil {
			return "", err
		}
		lines = append(lines, fmt.Sprintf("%x %x %x %s %s", d, e.current, e.previous, e.previousUntil, b))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n"), nil
}

// CheckSubject checks that a record's subject names the aggregate of its envelope (ws,
// agg, id) and that the workspace and id are ones the views can hold.
func CheckSubject(subject string, ws events.Workspace, agg events.Aggregate, id string) error {
	ps, err := events.ParseSubject(subject)
	if err != nil {
		return err
	}
	if ps.Workspace != ws || ps.Aggregate != agg || ps.ID != id {
		return fmt.Errorf("subject %s does not match event source and subject %s/%s/%s", subject, ws, agg, id)
	}
	if !ws.IsValid() || id == "" || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("subject %s: bad workspace or id", subject)
	}
	return nil
}
