package events

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// payloadSamples are the payloads the fast path decodes, as json.Marshal (and so Encode)
// writes them: nil, empty and full lists, with and without the optional member.
func payloadSamples(t testing.TB) [][]byte {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	nets := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.168.1.7/32")}
	var out [][]byte
	for _, p := range []Payload{
		&KeyCreated{Name: "k", Permissions: []Permission{"users.track", "kpi.dau.data_series"}, Allowlist: nets, SecretHash: HashSecret("s")},
		&KeyCreated{Name: "ключ ü", Permissions: []Permission{}, Allowlist: []netip.Prefix{}, SecretHash: HashSecret("s"), ExpiresAt: &exp},
		&KeyCreated{},
		&AllowlistUpdated{Allowlist: nets, Previous: nets[:1], Added: nets[1:], Removed: []netip.Prefix{}},
		&AllowlistUpdated{},
	} {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestDecodePayloadCanonical checks that each sample, and the payloads of events as
// NewEvent and Encode write them, take the fast path and decode as encoding/json does,
// and that other forms take the general path.
func TestDecodePayloadCanonical(t *testing.T) {
	samples := payloadSamples(t)
	for _, b := range canonicalSamples(t) {
		e, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Type == TypeKeyCreated || e.Type == TypeAllowlistUpdated {
			samples = append(samples, e.Data)
		}
	}
	for _, b := range samples {
		for _, typ := range []Type{TypeKeyCreated, TypeAllowlistUpdated} {
			got, want := newPayload(typ), newPayload(typ)
			if json.Unmarshal(b, want) != nil {
				continue
			}
			// Escaped strings take the general path.
			wantFast := (typ == TypeKeyCreated) == bytes0(b, `{"name":`) && !strings.Contains(string(b), `\`)
			if ok := decodePayloadCanonical(b, got); ok != wantFast {
				t.Fatalf("%s %s: fast path %v, want %v", typ, b, ok, wantFast)
			}
			if wantFast && !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %s: fast decode differs:\n%+v\n%+v", typ, b, got, want)
			}
		}
	}
	for _, b := range []string{
		`{"name":"k","permissions":[],"allowlist":[],"secret_hash":"x"} `,
		`{"permissions":[],"name":"k","allowlist":[],"secret_hash":"x"}`,
		`{"name":"\u006b","permissions":[],"allowlist":[],"secret_hash":"x"}`,
		`{"name":"k","permissions":[],"allowlist":[""],"secret_hash":"x"}`,
		`{"name":"k","permissions":[],"allowlist":["10.0.0.1/33"],"secret_hash":"x"}`,
		`{"name":"k","permissions":[ ],"allowlist":[],"secret_hash":"x"}`,
		`{"allowlist":null,"previous":null,"added":null}`,
		`{"allowlist":null,"previous":null,"added":null,"removed":null,"x":1}`,
	} {
		for _, typ := range []Type{TypeKeyCreated, TypeAllowlistUpdated} {
			if decodePayloadCanonical([]byte(b), newPayload(typ)) {
				t.Errorf("fast path accepted a non-canonical %s: %s", typ, b)
			}
		}
	}
}

func bytes0(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && string(b[:len(prefix)]) == prefix
}

// FuzzDecodePayloadCanonical: whatever the fast path accepts, encoding/json decodes to the
// same payload, and what it refuses leaves the payload untouched.
func FuzzDecodePayloadCanonical(f *testing.F) {
	for _, b := range payloadSamples(f) {
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, b []byte, allow bool) {
		typ := TypeKeyCreated
		if allow {
			typ = TypeAllowlistUpdated
		}
		got := newPayload(typ)
		if !decodePayloadCanonical(b, got) {
			if !reflect.DeepEqual(got, newPayload(typ)) {
				t.Fatalf("refused %s but changed the payload: %+v", b, got)
			}
			return
		}
		want := newPayload(typ)
		if err := json.Unmarshal(b, want); err != nil {
			t.Fatalf("fast path accepted %s, encoding/json: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: fast decode differs:\n%+v\n%+v", b, got, want)
		}
	})
}
