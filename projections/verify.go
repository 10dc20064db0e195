package projections

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
	CodeUnavailable      = "UNAVAILABLE" // a verifier that cannot vouch for its freshness (package verifier); never from Store.Verify
)

// VerifyResult is the answer of Verify. KeyID and Workspace are set whenever the secret
// belongs to a key (every code but MALFORMED and NOT_FOUND); Permissions only when Valid.
type VerifyResult struct {
	Valid     bool
	Code      string
	KeyID     string
	Workspace events.Workspace
	// Permissions is shared with the store and must not be modified.
	Permissions []events.Permission
}

// Verify checks a presented secret for a request from ip that needs permission, at time
// now. The checks run in this order, the first failing one giving the code: MALFORMED (not
// a well-formed secret; nothing is looked up), NOT_FOUND (no key has this secret, or it is
// a rotated-out secret at or after its PreviousValidUntil), REVOKED, EXPIRED (at or after
// ExpiresAt), IP_NOT_ALLOWED (ip outside a non-empty allowlist; IPv4-mapped IPv6 is
// unmapped first; an invalid ip matches no entry), PERMISSION_DENIED (permission not
// granted; an empty permission is not checked). Otherwise the code is VALID.
//
// Verify reads an in-memory index that Apply updates before advancing the checkpoint, so
// it is as fresh as the views. It does not allocate.
func (s *Store) Verify(secret string, ip netip.Addr, permission events.Permission, now time.Time) VerifyResult {
	return s.verify.Verify(secret, ip, permission, now)
}

// KeyIndex is the in-memory index that Verify reads: every key, revoked ones included, by
// the digest of its current secret and of its previous secret after a rotation. The
// Store keeps one fed by its projector; a service can keep its own fed by the log (see
// package verifier) and get the same answers. The zero value is an empty index, ready to
// use. Verify, Key and Len are safe for concurrent use with Apply; Apply calls must not
// run concurrently with each other.
type KeyIndex struct {
	mu     sync.RWMutex
	byHash map[[32]byte]*verifyEntry
	byKey  map[string]*verifyEntry // by view key "key/<ws>/<id>"
}

// Verify checks a secret exactly as Store.Verify does (same checks, same order, same
// codes) against the keys of the index. It does not allocate.
func (x *KeyIndex) Verify(secret string, ip netip.Addr, permission events.Permission, now time.Time) VerifyResult {
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
func (x *KeyIndex) Key(ws events.Workspace, id string) (events.KeyState, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e := x.byKey[string(keyKey(ws, id))]
	if e == nil {
		return events.KeyState{}, false
	}
	return e.state, true
}

// Len returns how many keys the index holds.
func (x *KeyIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byKey)
}

// Apply folds one log record into the index, as the Store's Apply folds it into the key
// views: an event of a key aggregate updates that key's entry with events.KeyState.Apply;
// a record of any other aggregate is ignored without being decoded. A key event at or
// below the key's version is skipped, so re-applying is harmless. It returns an error
// naming the sequence for a record that cannot be decoded or folded (an unknown key event
// type, a subject that does not match the envelope, an event of a key never created); the
// index is then unchanged.
func (x *KeyIndex) Apply(r events.Record) error {
	if !isKeySubject(r.Subject) {
		return nil
	}
	d, err := events.DecodeRecord(r)
	if err != nil {
		return fmt.Errorf("apply seq %d: %w", r.Seq, err)
	}
	ws := d.Event.Workspace()
	agg, id := d.Event.Aggregate()
	if err := checkSubject(r.Subject, ws, agg, id); err != nil {
		return fmt.Errorf("apply seq %d: %w", r.Seq, err)
	}
	vk := string(keyKey(ws, id))
	x.mu.RLock()
	old := x.byKey[vk]
	x.mu.RUnlock()
	var st events.KeyState
	if old != nil {
		if old.state.Version >= r.Seq {
			return nil
		}
		st = old.state // Apply replaces slices, never changes them in place
	}
	if err := st.Apply(r.Seq, r.Data, d.Event, d.Payload); err != nil {
		return fmt.Errorf("apply seq %d: %w", r.Seq, err)
	}
	if st.ID != id {
		return fmt.Errorf("apply seq %d: key %s/%s: %s before key.created", r.Seq, ws, id, d.Event.Type)
	}
	x.mu.Lock()
	x.putLocked(vk, st)
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

// verifyEntry is one key of a KeyIndex. Entries are immutable: a change replaces the
// entry, so a reader may use one after releasing the lock.
type verifyEntry struct {
	state         events.KeyState
	current       [32]byte
	previous      [32]byte
	hasCurrent    bool
	hasPrevious   bool
	previousUntil time.Time
}

func newVerifyEntry(k events.KeyState) *verifyEntry {
	e := &verifyEntry{state: k}
	e.hasCurrent = decodeDigest(&e.current, k.SecretHash)
	if k.PreviousHash != "" && k.PreviousValidUntil != nil {
		e.hasPrevious = decodeDigest(&e.previous, k.PreviousHash)
		e.previousUntil = *k.PreviousValidUntil
	}
	return e
}

func decodeDigest(dst *[32]byte, h string) bool {
	n, err := hex.Decode(dst[:], []byte(h))
	return err == nil && n == len(dst)
}

// load builds the index from the key views.
func (x *KeyIndex) load(s *Store) error {
	x.byHash = map[[32]byte]*verifyEntry{}
	x.byKey = map[string]*verifyEntry{}
	return s.scanPrefix([]byte(prefixKey), func(key, value []byte) error {
		var k events.KeyState
		if err := json.Unmarshal(value, &k); err != nil {
			return fmt.Errorf("load verify index: %s: %w", key, err)
		}
		x.putLocked(string(key), k)
		return nil
	})
}

// update replaces the entries of the given keys, by view key.
func (x *KeyIndex) update(keys map[string]*events.KeyState) {
	if len(keys) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for vk, k := range keys {
		x.putLocked(vk, *k)
	}
}

func (x *KeyIndex) putLocked(viewKey string, k events.KeyState) {
	if x.byKey == nil {
		x.byHash, x.byKey = map[[32]byte]*verifyEntry{}, map[string]*verifyEntry{}
	}
	if old := x.byKey[viewKey]; old != nil {
		if old.hasCurrent && x.byHash[old.current] == old {
			delete(x.byHash, old.current)
		}
		if old.hasPrevious && x.byHash[old.previous] == old {
			delete(x.byHash, old.previous)
		}
	}
	e := newVerifyEntry(k)
	x.byKey[viewKey] = e
	if e.hasPrevious {
		x.byHash[e.previous] = e
	}
	if e.hasCurrent {
		x.byHash[e.current] = e
	}
}
