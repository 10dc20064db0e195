package events

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the parsers that take outside input. Each checks properties that must
// hold for every input, not just that nothing panics. .ci/run runs each for a short time;
// `go test` runs their seeds.

func FuzzParseAllowlistEntry(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32", "::ffff:10.1.2.3",
		"::ffff:10.0.0.0/104", "fe80::1%eth0", " 1.2.3.4 ", "1.2.3.4/33", "", "/", "1.2.3.4/", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseAllowlistEntry(s)
		if err != nil {
			if !strings.Contains(err.Error(), "allowlist") {
				t.Fatalf("error does not name the field: %v", err)
			}
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParseAllowlistEntry(%q) = %v: not a valid, masked, unmapped, zoneless prefix", s, p)
		}
		again, err := ParseAllowlistEntry(p.String())
		if err != nil || again != p {
			t.Fatalf("%q parsed to %v, which parses back to %v, %v", s, p, again, err)
		}
		if !AllowlistContains([]netip.Prefix{p}, p.Addr()) {
			t.Fatalf("%v does not contain its own address", p)
		}
	})
}

func FuzzWellFormedSecret(f *testing.F) {
	f.Add("kr_", []byte{})
	f.Add(FormatSecret([32]byte{1, 2, 3}), []byte{1, 2, 3})
	f.Add("kr_0000000000000000000000000000000000000000000000000", bytes.Repeat([]byte{0xff}, 32))
	f.Fuzz(func(t *testing.T, s string, random []byte) {
		if WellFormedSecret(s) && (len(s) != SecretLen || !strings.HasPrefix(s, SecretPrefix)) {
			t.Fatalf("WellFormedSecret(%q) is true for a string of the wrong shape", s)
		}
		var r [32]byte
		copy(r[:], random)
		secret := FormatSecret(r)
		if !WellFormedSecret(secret) {
			t.Fatalf("FormatSecret(%x) = %q is not well formed", r, secret)
		}
		// One changed character is caught by the checksum or the alphabet.
		if len(s) > 0 {
			i := int(s[0]) % (SecretLen - len(SecretPrefix))
			b := []byte(secret)
			c := b[len(SecretPrefix)+i]
			b[len(SecretPrefix)+i] = base62[(base62Value(c)+1+int(s[len(s)-1])%61)%62]
			if WellFormedSecret(string(b)) {
				t.Fatalf("%q with one character changed (%q) still passes", secret, b)
			}
		}
	})
}

func FuzzParseWorkspace(f *testing.F) {
	for _, s := range []string{"acme", "system", "a", "-a", "A", "a.b", "a*", "a>", "a b", strings.Repeat("a", 64), ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ws, err := ParseWorkspace(s)
		if err != nil {
			return
		}
		if !ws.IsValid() || string(ws) != s || strings.ContainsAny(s, ".*> \t\r\n") || len(s) > 63 {
			t.Fatalf("ParseWorkspace(%q) accepted something that is no single NATS subject token", s)
		}
		if p, err := ParseSubject(Subject(ws, AggKey, NewID(), TypeKeyCreated)); err != nil || p.Workspace != ws {
			t.Fatalf("subject of workspace %q does not parse back: %+v, %v", s, p, err)
		}
	})
}

func FuzzParseID(f *testing.F) {
	for _, s := range []string{NewID(), "01JDX3AAAAAAAAAAAAAAAAAAAA", "*", ">", "01jdx3aaaaaaaaaaaaaaaaaaaa", "", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID("key_id", s)
		if err != nil {
			if !strings.Contains(err.Error(), "key_id") {
				t.Fatalf("error does not name the field: %v", err)
			}
			return
		}
		if id != s || len(s) != 26 || strings.ContainsAny(s, ".*> ") {
			t.Fatalf("ParseID accepted %q, which is no canonical ULID subject token", s)
		}
	})
}

func FuzzParseSubject(f *testing.F) {
	f.Add("keyreg.acme.key.01JDX3AAAAAAAAAAAAAAAAAAAA.created")
	f.Add("keyreg.acme.key")
	f.Add("nats.acme.key.x.created")
	f.Add("keyreg....")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseSubject(s)
		if err != nil {
			return
		}
		joined := strings.Join([]string{SubjectPrefix, string(p.Workspace), string(p.Aggregate), p.ID, p.Event}, ".")
		if joined != s {
			t.Fatalf("ParseSubject(%q) = %+v, which joins to %q", s, p, joined)
		}
	})
}

// FuzzDecode feeds the CloudEvents decoder arbitrary bytes: it must refuse or return an
// event that encodes and decodes to itself, and decoding its payload must not panic.
func FuzzDecode(f *testing.F) {
	meta := Meta{Actor: NewID(), ActorIP: "10.0.0.1", RequestID: "r", Reason: "why"}
	for _, p := range []Payload{
		&KeyCreated{Name: "k", Permissions: []Permission{"users.track"}},
		&AllowlistUpdated{Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	} {
		e, err := NewEvent("acme", AggKey, NewID(), p, meta, "", time.Unix(1700000000, 0))
		if err != nil {
			f.Fatal(err)
		}
		b, err := e.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"x","type":"keyreg.key.created.v1","source":"keyreg/acme","data":null}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if e.SpecVersion != SpecVersion || e.ID == "" || e.Type == "" || e.Source == "" {
			t.Fatalf("Decode accepted an event without its required attributes: %+v", e)
		}
		again, err := e.Encode()
		if err != nil {
			return // data that is not valid JSON on its own cannot be re-encoded; refused later
		}
		e2, err := Decode(again)
		if err != nil {
			t.Fatalf("a decoded event does not decode after encoding: %v\n%s", err, again)
		}
		if e2.ID != e.ID || e2.Type != e.Type || e2.Source != e.Source || e2.Subject != e.Subject || !sameData(e.Data, e2.Data) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", e, e2)
		}
		_, _ = e.Payload() // any error is fine; a panic is not
	})
}

// sameData reports whether two events' data are the same JSON value: an absent data
// member encodes as null.
func sameData(a, b []byte) bool {
	null := func(d []byte) bool { return len(d) == 0 || string(d) == "null" }
	return bytes.Equal(a, b) || null(a) && null(b)
}
