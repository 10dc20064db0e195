package projections

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
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
	if !events.WellFormedSecret(secret) {
		return VerifyResult{Code: CodeMalformed}
	}
	d := events.SecretDigest(secret)
	s.verify.mu.RLock()
	e := s.verify.byHash[d]
	s.verify.mu.RUnlock()
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

// verifyIndex maps secret digests to keys. Entries are immutable: a change replaces the
// entry, so a reader may use one after releasing the lock.
type verifyIndex struct {
	mu     sync.RWMutex
	byHash map[[32]byte]*verifyEntry
	byKey  map[string]*verifyEntry // by view key "key/<ws>/<id>"
}

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
func (x *verifyIndex) load(s *Store) error {
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
func (x *verifyIndex) update(keys map[string]*events.KeyState) {
	if len(keys) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for vk, k := range keys {
		x.putLocked(vk, *k)
	}
}

func (x *verifyIndex) putLocked(viewKey string, k events.KeyState) {
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
