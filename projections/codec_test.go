package projections

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
)

// codecSamples are values of every stored type, covering nil and empty lists, nil and set
// times, UTC and other zones, hex and other hashes, IPv4, IPv6 and IPv4-mapped prefixes.
func codecSamples() []any {
	utc := time.Date(2025, 3, 4, 5, 6, 7, 890123000, time.UTC)
	zoned := time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", 2*3600))
	h := events.Hash([]byte("x"))
	return []any{
		&events.WorkspaceState{},
		&events.WorkspaceState{ID: "acme", Name: "Acme", Permissions: []events.PermissionInfo{}, CreatedAt: utc, CreatedBy: "ROOT", Head: events.Head{Version: 1, LastHash: h}},
		&events.WorkspaceState{ID: "acme", Permissions: []events.PermissionInfo{{Name: "a.b", Description: "d", Group: "workspace", Workspace: "acme"}, {Name: "c.d"}}, CreatedAt: zoned},
		&events.KeyState{},
		&events.KeyState{ID: "K1", Workspace: "acme", Name: "ci ü", Permissions: []events.Permission{}, Allowlist: []netip.Prefix{},
			Status: "active", SecretHash: h, CreatedAt: utc, UpdatedAt: utc, Head: events.Head{Version: 1 << 40, LastHash: h}},
		&events.KeyState{ID: "K2", Permissions: []events.Permission{"users.track", "x"},
			Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::ffff:1.2.3.4/128")},
			Status:    "revoked", ExpiresAt: &zoned, SecretHash: "not-hex", PreviousHash: strings.ToUpper(h), PreviousValidUntil: &utc,
			CreatedAt: time.Unix(0, 0).UTC(), UpdatedAt: utc.Add(-30 * 365 * 24 * time.Hour), Head: events.Head{LastHash: "abc"}},
		&events.IdentifierState{},
		&events.IdentifierState{ID: "I1", Workspace: "acme", Kind: "app", Name: "iOS", Platform: "ios", Status: "retired", CreatedAt: utc, CreatedBy: "A", UpdatedAt: zoned, Head: events.Head{Version: 9, LastHash: h}},
		&events.NameClaimState{},
		&events.NameClaimState{Holder: "I1", Head: events.Head{Version: 3, LastHash: h}},
		&events.CheckpointState{},
		&events.CheckpointState{TreeSize: 99, RootHash: h, Note: "keyreg KEYREG\n99\n", SealedAt: utc, Version: 100, LastHash: h},
		&historyValue{},
		&historyValue{Type: events.TypeKeyCreated, Actor: "ROOT", Time: utc},
		&historyValue{Type: events.TypeKeyCreated, Time: zoned, Aggregate: events.AggKey, ID: "K1"},
	}
}

// TestCodecMatchesJSON: a value decodes from its binary form exactly as it decoded from
// the JSON of format 1, and ReadableValue shows that JSON.
func TestCodecMatchesJSON(t *testing.T) {
	for _, v := range codecSamples() {
		b, err := encodeValue(nil, v)
		if err != nil {
			t.Fatalf("encode %+v: %v", v, err)
		}
		got := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := decodeValue(b, got); err != nil {
			t.Fatalf("decode %+v: %v", v, err)
		}
		js, err := json.Marshal(v)
		if h, ok := v.(*historyValue); ok {
			js, err = h.marshal(nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		want := reflect.New(reflect.TypeOf(v).Elem()).Interface()
		if err := json.Unmarshal(js, want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("binary round trip differs from JSON's:\n got %#v\nwant %#v", got, want)
		}
		key := map[string]string{"*events.WorkspaceState": "ws/acme", "*events.KeyState": "key/acme/K1", "*events.IdentifierState": "ident/acme/I1",
			"*events.NameClaimState": "nameclaim/acme/x", "*events.CheckpointState": "ckpt/latest", "*projections.historyValue": "hist/acme/key/K1/1"}[reflect.TypeOf(v).String()]
		if r := ReadableValue([]byte(key), b); r != string(js) {
			t.Errorf("ReadableValue(%s) = %s, want %s", key, r, js)
		}
		if len(b) >= len(js) && len(js) > 40 {
			t.Errorf("binary form of %T is %d bytes, its JSON %d", v, len(b), len(js))
		}
		for i := range b { // every truncation is refused
			if err := decodeValue(b[:i], got); err == nil {
				t.Fatalf("%T: decoding %d of %d bytes succeeded", v, i, len(b))
			}
		}
	}
}

// FuzzDecodeValue: decoding arbitrary bytes never panics, and what decodes encodes and
// decodes again to the same value.
func FuzzDecodeValue(f *testing.F) {
	samples := codecSamples()
	for i, v := range samples {
		b, _ := encodeValue(nil, v)
		f.Add(uint8(i), b)
	}
	// Inputs the fuzzer found: a bad prefix after a good length; a list count of 1; a time
	// as text at offset zero.
	f.Add(uint8(79), []byte("\x0200\x00\x00\x03\v00000000000\x010\x05\n0000000000"))
	f.Add(uint8(0), []byte("\x00\x00\x01\x0000\x000\x00\x00"))
	// A time as text with offset +00:00 (Local where Local is UTC; written again as Z).
	f.Add(uint8(14), []byte("\x15000000000000000000000\x00\x01\x190000-01-01T00:00:00+00:00\x03000\x0200"))
	f.Fuzz(func(t *testing.T, i uint8, b []byte) {
		typ := reflect.TypeOf(samples[int(i)%len(samples)]).Elem()
		v := reflect.New(typ).Interface()
		if err := decodeValue(b, v); err != nil {
			return
		}
		again, err := encodeValue(nil, v)
		if err != nil {
			return // a time past year 9999, which format 1 could not hold either
		}
		v2 := reflect.New(typ).Interface()
		if err := decodeValue(again, v2); err != nil || !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-encoded value does not decode the same: %v\n%#v\n%#v", err, v, v2)
		}
	})
}

// TestFormatMarker: a new store is marked with the current format; views without a mark
// (format 1) or of another format are refused with ErrFormat, which names keyreg replay.
func TestFormatMarker(t *testing.T) {
	fs := vfs.NewMem()
	s, err := Open("db", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	log := events.NewMemLog()
	w := newWriter(log)
	scenario(t, w, 0)
	if err := s.Apply(allRecords(t, log)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, tc := range []struct {
		name   string
		mark   []byte // nil: delete the mark
		wantOK bool
	}{{"current", []byte("2"), true}, {"format 1", nil, false}, {"newer", []byte("3"), false}} {
		db, err := pebble.Open("db", &pebble.Options{FS: fs, Logger: quietLogger{}})
		if err != nil {
			t.Fatal(err)
		}
		if tc.mark == nil {
			err = db.Delete([]byte(keyFormat), pebble.Sync)
		} else {
			err = db.Set([]byte(keyFormat), tc.mark, pebble.Sync)
		}
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		for _, ro := range []bool{false, true} {
			s, err := Open("db", Options{FS: fs, ReadOnly: ro})
			if tc.wantOK {
				if err != nil {
					t.Fatalf("%s, read-only %v: %v", tc.name, ro, err)
				}
				s.Close()
				continue
			}
			if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "keyreg replay") {
				t.Fatalf("%s, read-only %v: Open = %v, want ErrFormat naming keyreg replay", tc.name, ro, err)
			}
		}
	}

	// A fresh store carries the mark before anything is applied.
	fresh, err := Open("fresh", Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	var mark []byte
	fresh.Each(func(k, v []byte) error {
		if string(k) == keyFormat {
			mark = bytes.Clone(v)
		}
		return nil
	})
	if string(mark) != "2" {
		t.Fatalf("fresh store's %s = %q, want 2", keyFormat, mark)
	}
}
