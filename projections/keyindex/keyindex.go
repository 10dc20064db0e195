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
	"hash/maphash"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

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
	// AppliedSeq is the stream sequence the answering view had applied: every change up
	// to it is in the answer. projections/verifier's Verify sets it; Index.Verify, which
	// does not know the stream, leaves it 0.
	AppliedSeq uint64
}

// Index holds every key, revoked ones included, by the digest of its current secret and
// of its previous secret after a rotation. The zero value is an empty index, ready to
// use, that keeps each key's whole state (Key and Each return it); set VerifyOnly before
// first use for one that keeps only what Verify needs, in about a third of the memory.
// Verify, Key, Len, Each and Dump are safe for concurrent use with Apply and Put; Apply
// and Put calls must not run concurrently with each other.
//
// A key is one fixed-size entry (its secret digest, expiry, version, and indexes into the
// lists of workspaces, statuses, permission sets and allowlists, each held once however
// many keys share it); its id is in one byte arena; two open-addressing tables find an
// entry by secret digest and by workspace and id.
type Index struct {
	// VerifyOnly makes the index keep only what Verify needs and Apply folds: a key's id,
	// workspace, permissions, allowlist, status, expiry, secret digests and version. Key,
	// Each and Dump then return states with just these fields (name, creator, times of
	// creation and update and last hash empty), and Apply folds events onto them: the
	// verify answers are the same. Set it before the index is first used.
	VerifyOnly bool

	mu      sync.RWMutex
	seed    maphash.Seed
	chunks  []*[chunkLen]entry // the entries, chunkLen to a chunk: no slack, no copy to grow
	n       uint32             // entries in use
	rest    []*events.KeyState // the whole states, unless VerifyOnly: by entry
	ids     []byte             // the entries' ids, one after the other
	prev    map[uint32]prevDigest
	digests table // refs: entry+1, | refPrev for an entry's previous digest
	keys    table // refs: entry+1

	wss      []events.Workspace
	wsIdx    map[events.Workspace]uint32
	strs     []string // statuses
	strIdx   map[string]uint32
	creators map[string]string
	perms    [][]events.Permission // [0] is nil
	permIdx  map[string]uint32
	allows   [][]netip.Prefix // [0] is nil
	allowIdx map[string]uint32
	buf      []byte
}

// chunkLen is how many entries a chunk holds.
const chunkLen = 4096

// entry returns entry i.
func (x *Index) entry(i uint32) *entry { return &x.chunks[i/chunkLen][i%chunkLen] }

// refPrev marks a digest table reference to an entry's previous digest.
const refPrev = 1 << 31

// entry is the part of a key that Verify reads.
type entry struct {
	current [32]byte // when flagCurrent
	expSec  int64    // ExpiresAt, when flagExpires: Unix seconds and nanoseconds
	version uint64
	idOff   uint32 // the id is ids[idOff:idOff+idLen]
	idLen   uint32
	expNsec int32
	ws      uint32 // index into wss
	perms   uint32 // index into perms
	allow   uint32 // index into allows
	status  uint32 // index into strs
	flags   uint8
}

const (
	flagCurrent uint8 = 1 << iota // SecretHash is a 64-digit lowercase hex digest: current holds it
	flagExpires                   // ExpiresAt is set
	flagActive                    // Status is active
)

// prevDigest is the previous secret of a rotated key and until when it works (Unix
// seconds and nanoseconds: no pointer for the collector to follow).
type prevDigest struct {
	digest    [32]byte
	untilSec  int64
	untilNsec int32
}

// until returns until when the previous secret works.
func (p *prevDigest) until() time.Time { return time.Unix(p.untilSec, int64(p.untilNsec)).UTC() }

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
	return x.VerifyDigest(&d, ip, permission, now)
}

// VerifyDigest is Verify for a secret known by its digest (events.SecretDigest) alone:
// the same checks from NOT_FOUND on. A caller that must act as a key without keeping its
// secret (the web console's sessions) keeps the digest. It does not allocate.
func (x *Index) VerifyDigest(d *[32]byte, ip netip.Addr, permission events.Permission, now time.Time) VerifyResult {
	x.mu.RLock()
	_, ref := x.findDigest(d)
	if ref == 0 {
		x.mu.RUnlock()
		return VerifyResult{Code: CodeNotFound}
	}
	i := ref&^refPrev - 1
	e := x.entry(i)
	var prev prevDigest
	if ref&refPrev != 0 {
		prev = x.prev[i]
	}
	r := VerifyResult{KeyID: x.idOf(e), Workspace: x.wss[e.ws]}
	flags, expSec, expNsec := e.flags, e.expSec, e.expNsec
	perms, allow := x.perms[e.perms], x.allows[e.allow]
	x.mu.RUnlock()
	if ref&refPrev != 0 && !before(now, prev.untilSec, prev.untilNsec) {
		return VerifyResult{Code: CodeNotFound}
	}
	switch {
	case flags&flagActive == 0:
		r.Code = CodeRevoked
		return r
	case flags&flagExpires != 0 && !before(now, expSec, expNsec):
		r.Code = CodeExpired
		return r
	}
	if !events.AllowlistContains(allow, ip) {
		r.Code = CodeIPNotAllowed
		return r
	}
	if permission != "" && !slices.Contains(perms, permission) {
		r.Code = CodePermissionDenied
		return r
	}
	r.Valid, r.Code, r.Permissions = true, CodeValid, perms
	return r
}

// before reports whether t is before the instant of Unix seconds sec and nanoseconds nsec.
func before(t time.Time, sec int64, nsec int32) bool {
	s := t.Unix()
	return s < sec || (s == sec && int32(t.Nanosecond()) < nsec)
}

// idOf returns the id of e, sharing the arena's bytes (never changed once written).
func (x *Index) idOf(e *entry) string {
	if e.idLen == 0 {
		return ""
	}
	return unsafe.String(&x.ids[e.idOff], int(e.idLen))
}

// findDigest returns the digest table's slot and reference for digest d, or -1 and 0.
func (x *Index) findDigest(d *[32]byte) (int, uint32) {
	if x.digests.n == 0 {
		return -1, 0
	}
	mask := len(x.digests.slots) - 1
	for i := int(maphash.Bytes(x.seed, d[:])) & mask; ; i = (i + 1) & mask {
		r := x.digests.slots[i]
		if r == 0 {
			return -1, 0
		}
		if x.refDigest(r) == *d {
			return i, r
		}
	}
}

// refDigest returns the digest a digest table reference stands for.
func (x *Index) refDigest(r uint32) [32]byte {
	i := r&^refPrev - 1
	if r&refPrev != 0 {
		return x.prev[i].digest
	}
	return x.entry(i).current
}

func (x *Index) digestRefHash(r uint32) uint64 {
	d := x.refDigest(r)
	return maphash.Bytes(x.seed, d[:])
}

// setDigest makes digest d find reference r, in place of any key it found before.
func (x *Index) setDigest(d [32]byte, r uint32) {
	if pos, old := x.findDigest(&d); old != 0 {
		x.digests.slots[pos] = r
		return
	}
	x.digests.add(maphash.Bytes(x.seed, d[:]), r, x.digestRefHash)
}

// dropDigests removes the digests of entry i that still find it.
func (x *Index) dropDigests(i uint32) {
	if e := x.entry(i); e.flags&flagCurrent != 0 {
		if pos, r := x.findDigest(&e.current); r != 0 && r&^refPrev == i+1 {
			x.digests.remove(pos, x.digestRefHash)
		}
	}
	if p, ok := x.prev[i]; ok {
		if pos, r := x.findDigest(&p.digest); r != 0 && r&^refPrev == i+1 {
			x.digests.remove(pos, x.digestRefHash)
		}
		delete(x.prev, i)
	}
}

func (x *Index) keyHash(ws uint32, id string) uint64 {
	return maphash.String(x.seed, id) ^ (uint64(ws)+1)*0x9e3779b97f4a7c15
}

func (x *Index) keyRefHash(r uint32) uint64 {
	e := x.entry(r - 1)
	return x.keyHash(e.ws, x.idOf(e))
}

// findKey returns the entry of key ws/id, and whether there is one.
func (x *Index) findKey(ws events.Workspace, id string) (uint32, bool) {
	w, ok := x.wsIdx[ws]
	if !ok || x.keys.n == 0 {
		return 0, false
	}
	mask := len(x.keys.slots) - 1
	for i := int(x.keyHash(w, id)) & mask; ; i = (i + 1) & mask {
		r := x.keys.slots[i]
		if r == 0 {
			return 0, false
		}
		if e := x.entry(r - 1); e.ws == w && x.idOf(e) == id {
			return r - 1, true
		}
	}
}

// stateOf returns the state of entry i: whole, or as verifyState for a VerifyOnly index.
func (x *Index) stateOf(i uint32) events.KeyState {
	if x.rest == nil {
		return x.verifyState(i)
	}
	e := x.entry(i)
	k := *x.rest[i]
	if e.flags&flagCurrent != 0 {
		k.SecretHash = hex.EncodeToString(e.current[:])
	}
	if p, ok := x.prev[i]; ok {
		k.PreviousHash = hex.EncodeToString(p.digest[:])
	}
	return k
}

// verifyState returns the fields of entry i's state that a VerifyOnly index keeps (see
// VerifyOnly), the others empty.
func (x *Index) verifyState(i uint32) events.KeyState {
	e := x.entry(i)
	k := events.KeyState{ID: x.idOf(e), Workspace: x.wss[e.ws], Permissions: x.perms[e.perms],
		Allowlist: x.allows[e.allow], Status: x.strs[e.status]}
	k.Version = e.version
	if e.flags&flagExpires != 0 {
		t := time.Unix(e.expSec, int64(e.expNsec)).UTC()
		k.ExpiresAt = &t
	}
	if e.flags&flagCurrent != 0 {
		k.SecretHash = hex.EncodeToString(e.current[:])
	}
	if p, ok := x.prev[i]; ok {
		t := p.until()
		k.PreviousHash, k.PreviousValidUntil = hex.EncodeToString(p.digest[:]), &t
	}
	return k
}

// Key returns the state of key ws/id as the index holds it (see VerifyOnly), and whether
// it holds it.
func (x *Index) Key(ws events.Workspace, id string) (events.KeyState, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	i, ok := x.findKey(ws, id)
	if !ok {
		return events.KeyState{}, false
	}
	return x.stateOf(i), true
}

// Len returns how many keys the index holds.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int(x.n)
}

// Each calls fn with every key the index holds (see VerifyOnly), revoked ones included,
// in no particular order, until fn returns false. fn must not modify the state's lists.
// Each holds the index's lock only while it collects a few hundred states at a time, so
// Apply and Put go on while fn runs; each state fn sees is whole, as of its collection
// or later.
func (x *Index) Each(fn func(*events.KeyState) bool) {
	batch := make([]events.KeyState, 0, 256)
	for next := 0; ; {
		batch = batch[:0]
		x.mu.RLock()
		for ; next < int(x.n) && len(batch) < cap(batch); next++ {
			batch = append(batch, x.stateOf(uint32(next)))
		}
		x.mu.RUnlock()
		if len(batch) == 0 {
			return
		}
		for i := range batch {
			if !fn(&batch[i]) {
				return
			}
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
	var st events.KeyState
	x.mu.RLock()
	i, ok := x.findKey(ws, id)
	if ok {
		if x.entry(i).version >= r.Seq {
			x.mu.RUnlock()
			return nil
		}
		st = x.stateOf(i) // Apply replaces slices, never changes them in place
	}
	x.mu.RUnlock()
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

// decodeDigest decodes a 64-digit lowercase hex hash into dst; it reports false, leaving
// the hash to be kept as it is, for anything else.
func decodeDigest(dst *[32]byte, h string) bool {
	if len(h) != 2*len(dst) || strings.ToLower(h) != h {
		return false
	}
	var d [32]byte
	if n, err := hex.Decode(d[:], []byte(h)); err != nil || n != len(d) {
		return false
	}
	*dst = d
	return true
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

func (x *Index) init() {
	if x.wsIdx != nil {
		return
	}
	x.seed = maphash.MakeSeed()
	x.prev = map[uint32]prevDigest{}
	x.wsIdx, x.strIdx, x.creators = map[events.Workspace]uint32{}, map[string]uint32{}, map[string]string{}
	x.perms, x.permIdx = [][]events.Permission{nil}, map[string]uint32{}
	x.allows, x.allowIdx = [][]netip.Prefix{nil}, map[string]uint32{}
}

func (x *Index) putLocked(k events.KeyState) {
	x.init()
	i, ok := x.findKey(k.Workspace, k.ID)
	if ok {
		x.dropDigests(i)
	} else {
		if x.n >= refPrev-1 || len(x.ids)+len(k.ID) > math.MaxUint32 {
			panic("keyindex: too many keys")
		}
		ws := x.workspace(k.Workspace)
		i = x.n
		if i%chunkLen == 0 {
			x.chunks = append(x.chunks, new([chunkLen]entry))
		}
		x.n++
		*x.entry(i) = entry{idOff: uint32(len(x.ids)), idLen: uint32(len(k.ID)), ws: ws}
		x.ids = append(x.ids, k.ID...)
		if !x.VerifyOnly {
			x.rest = append(x.rest, nil)
		}
		x.keys.add(x.keyHash(ws, k.ID), i+1, x.keyRefHash)
	}
	e := x.entry(i)
	e.perms, e.allow, e.status = x.permSet(k.Permissions), x.allowlist(k.Allowlist), x.str(k.Status)
	e.version, e.flags, e.current = k.Version, 0, [32]byte{}
	if k.Status == events.StatusActive {
		e.flags |= flagActive
	}
	if k.ExpiresAt != nil {
		e.flags |= flagExpires
		e.expSec, e.expNsec = k.ExpiresAt.Unix(), int32(k.ExpiresAt.Nanosecond())
	} else {
		e.expSec, e.expNsec = 0, 0
	}
	hasCurrent := decodeDigest(&e.current, k.SecretHash)
	hasPrev := false
	if k.PreviousHash != "" && k.PreviousValidUntil != nil {
		var p prevDigest
		if hasPrev = decodeDigest(&p.digest, k.PreviousHash); hasPrev {
			p.untilSec, p.untilNsec = k.PreviousValidUntil.Unix(), int32(k.PreviousValidUntil.Nanosecond())
			x.prev[i] = p
			x.setDigest(p.digest, (i+1)|refPrev)
		}
	}
	if hasCurrent {
		e.flags |= flagCurrent
		x.setDigest(e.current, i+1)
	}
	if x.VerifyOnly {
		return
	}
	k.Workspace, k.Status = x.wss[e.ws], x.strs[e.status]
	k.Permissions, k.Allowlist = x.perms[e.perms], x.allows[e.allow]
	if c, ok := x.creators[k.CreatedBy]; ok {
		k.CreatedBy = c
	} else {
		x.creators[k.CreatedBy] = k.CreatedBy
	}
	if hasCurrent {
		k.SecretHash = ""
	}
	if hasPrev {
		k.PreviousHash = ""
	}
	x.rest[i] = &k
}

// workspace returns the index of ws in x.wss, adding it.
func (x *Index) workspace(ws events.Workspace) uint32 {
	if i, ok := x.wsIdx[ws]; ok {
		return i
	}
	ws = events.Workspace(strings.Clone(string(ws)))
	x.wsIdx[ws] = uint32(len(x.wss))
	x.wss = append(x.wss, ws)
	return x.wsIdx[ws]
}

// str returns the index of s in x.strs, adding it.
func (x *Index) str(s string) uint32 {
	if i, ok := x.strIdx[s]; ok {
		return i
	}
	s = strings.Clone(s)
	x.strIdx[s] = uint32(len(x.strs))
	x.strs = append(x.strs, s)
	return x.strIdx[s]
}

// permSet returns the index of a permission list in x.perms, adding a copy (nil and
// empty lists stay apart).
func (x *Index) permSet(ps []events.Permission) uint32 {
	if ps == nil {
		return 0
	}
	x.buf = append(x.buf[:0], 1)
	for _, p := range ps {
		x.buf = append(append(x.buf, p...), 0)
	}
	if i, ok := x.permIdx[string(x.buf)]; ok {
		return i
	}
	i := uint32(len(x.perms))
	x.permIdx[string(x.buf)] = i
	x.perms = append(x.perms, append(make([]events.Permission, 0, len(ps)), ps...))
	return i
}

// allowlist returns the index of an allowlist in x.allows, adding a copy (nil and empty
// lists stay apart).
func (x *Index) allowlist(as []netip.Prefix) uint32 {
	if as == nil {
		return 0
	}
	x.buf = append(x.buf[:0], 1)
	for _, p := range as {
		x.buf, _ = p.AppendBinary(x.buf)
	}
	if i, ok := x.allowIdx[string(x.buf)]; ok {
		return i
	}
	i := uint32(len(x.allows))
	x.allowIdx[string(x.buf)] = i
	x.allows = append(x.allows, append(make([]netip.Prefix, 0, len(as)), as...))
	return i
}

// Dump renders the index, one line per secret digest (the digest, the key's current and
// previous digests, until when the previous one works, and as JSON the fields of the
// key's state that a VerifyOnly index keeps), sorted: two indexes that answer alike dump
// alike, whether VerifyOnly or not. It is meant for tests.
func (x *Index) Dump() (string, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	lines := make([]string, 0, x.digests.n)
	for _, r := range x.digests.slots {
		if r == 0 {
			continue
		}
		i := r&^refPrev - 1
		b, err := json.Marshal(x.verifyState(i))
		if err != nil {
			return "", err
		}
		p, ok := x.prev[i]
		var until time.Time
		if ok {
			until = p.until()
		}
		lines = append(lines, fmt.Sprintf("%x %x %x %s %s", x.refDigest(r), x.entry(i).current, p.digest, until, b))
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
