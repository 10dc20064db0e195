package events

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

// decodeGeneral is Decode's general path, without the canonical fast path.
func decodeGeneral(b []byte) (Event, error) {
	var e Event
	err := json.NewDecoder(bytes.NewReader(b)).Decode(&e)
	return e, err
}

func canonicalSamples(t testing.TB) [][]byte {
	var out [][]byte
	for _, meta := range []Meta{{}, {Actor: NewID()}, {Actor: NewID(), ActorIP: "10.0.0.1", RequestID: "r-1", Reason: "rotation after a leak — ü"}} {
		for _, p := range []Payload{
			&KeyCreated{Name: `k "quoted" <b>`, Permissions: []Permission{"users.track"}},
			&AllowlistUpdated{Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			&WorkspaceCreated{Name: "Acme"},
		} {
			for _, prev := range []string{"", Hash([]byte("x"))} {
				e, err := NewEvent("acme", AggKey, NewID(), p, meta, prev, time.Unix(1700000000, 123456000))
				if err != nil {
					t.Fatal(err)
				}
				b, err := e.Encode()
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, b)
			}
		}
	}
	return out
}

// TestDecodeCanonical checks that every event as Encode writes it takes the fast path
// and decodes exactly as encoding/json decodes it.
func TestDecodeCanonical(t *testing.T) {
	for _, b := range canonicalSamples(t) {
		got, ok := decodeCanonical(b)
		if !ok {
			t.Fatalf("the canonical form of an event took the general path:\n%s", b)
		}
		want, err := decodeGeneral(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast decode differs:\n%+v\n%+v", got, want)
		}
	}
	// A non-canonical form (white space, member order, escapes, trailing bytes) takes
	// the general path.
	for _, b := range []string{
		`{"specversion": "1.0","id":"x","source":"keyreg/a","type":"t","subject":"key/x","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{}}`,
		`{"id":"x","specversion":"1.0","source":"keyreg/a","type":"t","subject":"key/x","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{}}`,
		`{"specversion":"1.0","id":"\u0078","source":"keyreg/a","type":"t","subject":"key/x","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{}}`,
		`{"specversion":"1.0","id":"x","source":"keyreg/a","type":"t","subject":"key/x","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{}} `,
		`{"specversion":"1.0","id":"x","source":"keyreg/a","type":"t","subject":"key/x","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{},"actor":""}`,
		`{"specversion":"1.0","id":"x","source":"keyreg/a","type":"t","subject":"key/x","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{"a":}}`,
	} {
		if _, ok := decodeCanonical([]byte(b)); ok {
			t.Errorf("fast path accepted a non-canonical event:\n%s", b)
		}
	}
}

// FuzzDecodeCanonical: whatever the fast path accepts, encoding/json decodes to the same
// event.
func FuzzDecodeCanonical(f *testing.F) {
	for _, b := range canonicalSamples(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeCanonical(b)
		if !ok {
			return
		}
		want, err := decodeGeneral(b)
		if err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v):\n%s", err, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast decode differs:\n%+v\n%+v\n%s", got, want, b)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	data := canonicalSamples(b)[3]
	b.Run("canonical", func(b *testing.B) {
		for b.Loop() {
			if _, err := Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeGeneral(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
