package events_test

import (
	"crypto/rand"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	p := &events.AllowlistUpdated{
		Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Previous:  []netip.Prefix{},
		Added:     []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Removed:   []netip.Prefix{},
	}
	meta := events.Meta{Actor: "01JDX3ACTOR", ActorIP: "192.0.2.1", RequestID: "req-1", Reason: "ticket 42"}
	e, err := events.NewEvent("acme", events.AggKey, "01JDX3KEY", p, meta, "abc", now)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"specversion": "1.0", "source": "keyreg/acme", "type": "keyreg.key.allowlist_updated.v1",
		"subject": "key/01JDX3KEY", "time": "2026-11-27T10:00:00.123456Z", "datacontenttype": "application/json",
		"actor": "01JDX3ACTOR", "actorip": "192.0.2.1", "requestid": "req-1", "reason": "ticket 42", "prevhash": "abc",
	}
	for k, v := range want {
		if raw[k] != v {
			t.Errorf("attribute %s = %v, want %v", k, raw[k], v)
		}
	}
	d, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Payload()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("payload round trip: %+v, want %+v", got, p)
	}
	if d.Workspace() != "acme" {
		t.Errorf("Workspace() = %q", d.Workspace())
	}
	if agg, id := d.Aggregate(); agg != events.AggKey || id != "01JDX3KEY" {
		t.Errorf("Aggregate() = %s %s", agg, id)
	}
	if s := events.Subject("acme", events.AggKey, "01JDX3KEY", e.Type); s != "keyreg.acme.key.01JDX3KEY.allowlist_updated" {
		t.Errorf("Subject = %s", s)
	}
}

func TestEveryTypeHasAPayload(t *testing.T) {
	for _, x := range events.Types {
		e := events.Event{SpecVersion: "1.0", ID: "x", Source: "keyreg/a", Type: x.Type, Data: []byte(`{}`)}
		p, err := e.Payload()
		if err != nil {
			t.Fatalf("%s: %v", x.Type, err)
		}
		if p.EventType() != x.Type {
			t.Fatalf("%s decodes to a payload of type %s", x.Type, p.EventType())
		}
		if !strings.HasPrefix(string(x.Type), "keyreg."+string(x.Aggregate)+"."+x.Name+".v") {
			t.Fatalf("type %s does not match aggregate %s and name %s", x.Type, x.Aggregate, x.Name)
		}
	}
	if _, err := (events.Event{Type: "keyreg.key.unknown.v1", Data: []byte(`{}`)}).Payload(); err == nil {
		t.Fatal("an unknown type decoded")
	}
}

func TestSecretFormat(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		var b [32]byte
		rand.Read(b[:])
		s := events.FormatSecret(b)
		if len(s) != events.SecretLen || !strings.HasPrefix(s, "kr_") {
			t.Fatalf("secret %d chars, prefix %q", len(s), s[:3])
		}
		if !events.WellFormedSecret(s) {
			t.Fatalf("a fresh secret is not well formed")
		}
		if seen[s] {
			t.Fatal("repeated secret")
		}
		seen[s] = true
		// Any one changed character breaks the checksum or the alphabet.
		for _, i := range []int{3, 20, len(s) - 1} {
			c := []byte(s)
			c[i] ^= 1
			if events.WellFormedSecret(string(c)) {
				t.Fatalf("secret with character %d changed is still well formed", i)
			}
		}
		if h := events.HashSecret(s); len(h) != 64 || strings.Contains(h, s) || seen[h] {
			t.Fatalf("HashSecret = %q", h)
		}
		seen[events.HashSecret(s)] = true
	}
	for _, bad := range []string{"", "kr_", "xx_" + strings.Repeat("a", 49), "kr_" + strings.Repeat("-", 49)} {
		if events.WellFormedSecret(bad) {
			t.Errorf("WellFormedSecret(%q) = true", bad)
		}
	}
}

func BenchmarkWellFormedSecret(b *testing.B) {
	s := events.FormatSecret([32]byte{1, 2, 3})
	b.ReportAllocs()
	for b.Loop() {
		if !events.WellFormedSecret(s) {
			b.Fatal("not well formed")
		}
	}
}
