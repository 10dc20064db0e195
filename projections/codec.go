package projections

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/keyreg/keyreg/events"
)

// The views' values are in a compact binary form (format 2; format 1 was JSON). Each value
// is its fields in a fixed order, with no tags:
//
//	uint         unsigned varint
//	string       uvarint length, bytes
//	hash         1, 32 bytes: a hex SHA-256 (64 lower-case hex digits); else 0, string
//	time         0, varint Unix seconds, uvarint nanoseconds: a UTC time; 1, string: any
//	             other, as RFC 3339 text (parsed back as JSON would); 2: a nil *time.Time
//	slice        uvarint count+1, then the items; 0 is a nil slice
//	prefix       uvarint length, netip.Prefix.MarshalBinary
//
// Decoding a value gives exactly what decoding its format-1 JSON gave (TestCodecMatchesJSON
// holds it), so the HTTP API, which encodes the states, answers the same bytes.
const (
	// FormatVersion is the format of the views this code writes and reads, kept under
	// meta/format. Opening views of another format fails with ErrFormat.
	FormatVersion = 2

	keyFormat = "meta/format"

	timeUTC  = 0
	timeText = 1
	timeNil  = 2
)

// ErrFormat means the views were written in another format than FormatVersion: they must
// be rebuilt from the log (keyreg replay), which writes the current format.
var ErrFormat = errors.New("projections: views in another format")

// encodeValue appends the binary form of v, a pointer to a state or a historyValue.
func encodeValue(b []byte, v any) ([]byte, error) {
	var w valueWriter
	w.b = b
	switch v := v.(type) {
	case *events.WorkspaceState:
		w.str(string(v.ID))
		w.str(v.Name)
		if len(v.Permissions) == 0 { // omitempty in format 1: an empty list read back nil
			w.uint(0)
		} else {
			w.uint(uint64(len(v.Permissions)) + 1)
		}
		for _, p := range v.Permissions {
			w.str(string(p.Name))
			w.str(p.Description)
			w.str(p.Group)
			w.str(string(p.Workspace))
		}
		w.time(v.CreatedAt)
		w.str(v.CreatedBy)
		w.head(v.Head)
	case *events.KeyState:
		w.str(v.ID)
		w.str(string(v.Workspace))
		w.str(v.Name)
		w.sliceLen(v.Permissions == nil, len(v.Permissions))
		for _, p := range v.Permissions {
			w.str(string(p))
		}
		w.sliceLen(v.Allowlist == nil, len(v.Allowlist))
		for _, p := range v.Allowlist {
			w.prefix(p)
		}
		w.str(v.Status)
		w.timePtr(v.ExpiresAt)
		w.hash(v.SecretHash)
		w.hash(v.PreviousHash)
		w.timePtr(v.PreviousValidUntil)
		w.time(v.CreatedAt)
		w.str(v.CreatedBy)
		w.time(v.UpdatedAt)
		w.head(v.Head)
	case *events.IdentifierState:
		w.str(v.ID)
		w.str(string(v.Workspace))
		w.str(string(v.Kind))
		w.str(v.Name)
		w.str(v.Platform)
		w.str(v.Status)
		w.time(v.CreatedAt)
		w.str(v.CreatedBy)
		w.time(v.UpdatedAt)
		w.head(v.Head)
	case *events.NameClaimState:
		w.str(v.Holder)
		w.head(v.Head)
	case *events.CheckpointState:
		w.uint(v.TreeSize)
		w.hash(v.RootHash)
		w.str(v.Note)
		w.time(v.SealedAt)
		w.uint(v.Version)
		w.hash(v.LastHash)
	case *historyValue:
		w.str(string(v.Type))
		w.str(v.Actor)
		w.time(v.Time)
		w.str(string(v.Aggregate))
		w.str(v.ID)
	default:
		return b, fmt.Errorf("encode %T: no binary form", v)
	}
	return w.b, w.err
}

// decodeValue decodes b, written by encodeValue, into v.
func decodeValue(b []byte, v any) error {
	r := valueReader{b: b}
	switch v := v.(type) {
	case *events.WorkspaceState:
		*v = events.WorkspaceState{ID: events.Workspace(r.str()), Name: r.str()}
		if n := r.count(); n > 1 { // an empty list reads back nil, as in format 1
			v.Permissions = make([]events.PermissionInfo, n-1)
			for i := range v.Permissions {
				v.Permissions[i] = events.PermissionInfo{Name: events.Permission(r.str()), Description: r.str(), Group: r.str(), Workspace: events.Workspace(r.str())}
			}
		}
		v.CreatedAt = r.time()
		v.CreatedBy = r.str()
		v.Head = r.head()
	case *events.KeyState:
		*v = events.KeyState{ID: r.str(), Workspace: events.Workspace(r.str()), Name: r.str()}
		if n := r.count(); n > 0 {
			v.Permissions = make([]events.Permission, n-1)
			for i := range v.Permissions {
				v.Permissions[i] = events.Permission(r.str())
			}
		}
		if n := r.count(); n > 0 {
			v.Allowlist = make([]netip.Prefix, n-1)
			for i := range v.Allowlist {
				v.Allowlist[i] = r.prefix()
			}
		}
		v.Status = r.str()
		v.ExpiresAt = r.timePtr()
		v.SecretHash = r.hash()
		v.PreviousHash = r.hash()
		v.PreviousValidUntil = r.timePtr()
		v.CreatedAt = r.time()
		v.CreatedBy = r.str()
		v.UpdatedAt = r.time()
		v.Head = r.head()
	case *events.IdentifierState:
		*v = events.IdentifierState{ID: r.str(), Workspace: events.Workspace(r.str()), Kind: events.Kind(r.str()),
			Name: r.str(), Platform: r.str(), Status: r.str(), CreatedAt: r.time(), CreatedBy: r.str(), UpdatedAt: r.time()}
		v.Head = r.head()
	case *events.NameClaimState:
		*v = events.NameClaimState{Holder: r.str()}
		v.Head = r.head()
	case *events.CheckpointState:
		*v = events.CheckpointState{TreeSize: r.uint(), RootHash: r.hash(), Note: r.str(), SealedAt: r.time(), Version: r.uint(), LastHash: r.hash()}
	case *historyValue:
		*v = historyValue{Type: events.Type(r.str()), Actor: r.str(), Time: r.time(), Aggregate: events.Aggregate(r.str()), ID: r.str()}
	default:
		return fmt.Errorf("decode %T: no binary form", v)
	}
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d bytes left over", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("decode %T: %w", v, r.err)
	}
	return nil
}

// ReadableValue returns the value of key as people and tests read it: a state or history
// entry as the JSON that format 1 stored, a leaf index in decimal, a tree hash in hex, and
// any other value as it is.
func ReadableValue(key, value []byte) string {
	var v any
	switch k := string(key); {
	case hasPrefix(k, prefixWorkspace):
		v = new(events.WorkspaceState)
	case hasPrefix(k, prefixKey):
		v = new(events.KeyState)
	case hasPrefix(k, prefixIdentifier):
		v = new(events.IdentifierState)
	case hasPrefix(k, prefixNameClaim):
		v = new(events.NameClaimState)
	case hasPrefix(k, keyLatestCheckpoint), hasPrefix(k, prefixCheckpointBySize):
		v = new(events.CheckpointState)
	case hasPrefix(k, prefixHistory), hasPrefix(k, prefixWSHistory):
		v = new(historyValue)
	case hasPrefix(k, prefixWSTreeSeq):
		if n, w := binary.Uvarint(value); w == len(value) && w > 0 {
			return strconv.FormatUint(n, 10)
		}
	case hasPrefix(k, prefixTree), hasPrefix(k, prefixWSTree):
		return hex.EncodeToString(value)
	}
	if v == nil {
		return string(value)
	}
	if err := decodeValue(value, v); err != nil {
		return fmt.Sprintf("%q (%v)", value, err)
	}
	if h, ok := v.(*historyValue); ok {
		b, err := h.marshal(nil)
		if err == nil {
			return string(b)
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%q (%v)", value, err)
	}
	return string(b)
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// valueWriter appends binary fields to b; the first error sticks.
type valueWriter struct {
	b   []byte
	err error
}

func (w *valueWriter) uint(n uint64) { w.b = binary.AppendUvarint(w.b, n) }

func (w *valueWriter) str(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *valueWriter) sliceLen(isNil bool, n int) {
	if isNil {
		w.uint(0)
		return
	}
	w.uint(uint64(n) + 1)
}

func (w *valueWriter) hash(s string) {
	if len(s) == 64 && isLowerHex(s) {
		w.b = append(w.b, 1)
		w.b, _ = hex.AppendDecode(w.b, []byte(s)) // isLowerHex: cannot fail
		return
	}
	w.b = append(w.b, 0)
	w.str(s)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (w *valueWriter) time(t time.Time) {
	if y := t.Year(); y < 0 || y > 9999 {
		// Format 1 could not hold it either (encoding/json refuses such a time).
		if w.err == nil {
			w.err = fmt.Errorf("time %s: year outside [0,9999]", t)
		}
		return
	}
	if t.Location() == time.UTC {
		w.b = append(w.b, timeUTC)
		w.b = binary.AppendVarint(w.b, t.Unix())
		w.b = binary.AppendUvarint(w.b, uint64(t.Nanosecond()))
		return
	}
	text, err := t.MarshalText()
	if err != nil && w.err == nil {
		w.err = err
	}
	w.b = append(w.b, timeText)
	w.str(string(text))
}

func (w *valueWriter) timePtr(t *time.Time) {
	if t == nil {
		w.b = append(w.b, timeNil)
		return
	}
	w.time(*t)
}

func (w *valueWriter) prefix(p netip.Prefix) {
	b, err := p.MarshalBinary()
	if err != nil && w.err == nil {
		w.err = err
	}
	w.b = append(w.b, byte(len(b)))
	w.b = append(w.b, b...)
}

func (w *valueWriter) head(h events.Head) {
	w.uint(h.Version)
	w.hash(h.LastHash)
}

// valueReader reads binary fields from b; after the first error every read returns zero.
type valueReader struct {
	b   []byte
	err error
}

var errShort = errors.New("value too short")

func (r *valueReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *valueReader) uint() uint64 {
	n, w := binary.Uvarint(r.b)
	if w <= 0 {
		r.fail(errShort)
		return 0
	}
	r.b = r.b[w:]
	return n
}

func (r *valueReader) bytes() []byte {
	n := r.uint()
	if n > uint64(len(r.b)) {
		r.fail(errShort)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *valueReader) str() string { return string(r.bytes()) }

// count reads a slice length: 0 for a nil slice, else the count + 1, at most the bytes
// left (every item takes at least one).
func (r *valueReader) count() uint64 {
	n := r.uint()
	if n > uint64(len(r.b))+1 {
		r.fail(errShort)
		return 0
	}
	return n
}

func (r *valueReader) byte() byte {
	if len(r.b) == 0 {
		r.fail(errShort)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *valueReader) hash() string {
	switch r.byte() {
	case 0:
		return r.str()
	case 1:
		if len(r.b) < 32 {
			r.fail(errShort)
			return ""
		}
		s := hex.EncodeToString(r.b[:32])
		r.b = r.b[32:]
		return s
	}
	r.fail(errors.New("bad hash tag"))
	return ""
}

func (r *valueReader) time() time.Time {
	t, _ := r.anyTime(false)
	return t
}

func (r *valueReader) timePtr() *time.Time {
	t, ok := r.anyTime(true)
	if !ok {
		return nil
	}
	return &t
}

// anyTime reads a time; ok is false for a nil one (allowed when nilOK).
func (r *valueReader) anyTime(nilOK bool) (time.Time, bool) {
	switch r.byte() {
	case timeUTC:
		sec, w := binary.Varint(r.b)
		if w <= 0 {
			r.fail(errShort)
			return time.Time{}, false
		}
		r.b = r.b[w:]
		nsec := r.uint()
		if nsec >= 1e9 {
			r.fail(errors.New("bad nanoseconds"))
			return time.Time{}, false
		}
		return time.Unix(sec, int64(nsec)).UTC(), true
	case timeText:
		var t time.Time
		if err := t.UnmarshalText(r.bytes()); err != nil {
			r.fail(err)
		}
		if _, offset := t.Zone(); offset == 0 {
			// "+00:00" parses as Local where Local is UTC, and is written again as "Z",
			// which parses as UTC: one time, one value.
			t = t.UTC()
		}
		return t, true
	case timeNil:
		if !nilOK {
			r.fail(errors.New("nil time"))
		}
		return time.Time{}, false
	}
	r.fail(errors.New("bad time tag"))
	return time.Time{}, false
}

func (r *valueReader) prefix() netip.Prefix {
	n := int(r.byte())
	if n > len(r.b) {
		r.fail(errShort)
		return netip.Prefix{}
	}
	var p netip.Prefix
	if err := p.UnmarshalBinary(r.b[:n]); err != nil {
		r.fail(err)
		return netip.Prefix{}
	}
	r.b = r.b[n:]
	return p
}

func (r *valueReader) head() events.Head {
	return events.Head{Version: r.uint(), LastHash: r.hash()}
}
