package keyindex_test

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func testSecret(name string) string { return events.FormatSecret(sha256.Sum256([]byte(name))) }

// record encodes one event of aggregate agg/id in workspace ws as the log's record seq.
func record(t testing.TB, seq uint64, ws events.Workspace, agg events.Aggregate, id string, p events.Payload) events.Record {
	t.Helper()
	e, err := events.NewEvent(ws, agg, id, p, events.Meta{}, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return events.Record{Seq: seq, Subject: events.Subject(ws, agg, id, p.EventType()), MsgID: e.ID, Data: b}
}

// TestVerifyOrder: each check gives its code only when every earlier check passes, so a
// request that fails several checks gets the code of the first (MALFORMED, NOT_FOUND,
// REVOKED, EXPIRED, IP_NOT_ALLOWED, PERMISSION_DENIED).
func TestVerifyOrder(t *testing.T) {
	var x keyindex.Index
	expires := t0.Add(time.Hour)
	for _, r := range []events.Record{
		record(t, 1, "acme", events.AggKey, "K1", &events.KeyCreated{Name: "k1", Permissions: []events.Permission{"users.track"},
			Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ExpiresAt: &expires, SecretHash: events.HashSecret(testSecret("K1"))}),
		record(t, 2, "acme", events.AggKey, "K2", &events.KeyCreated{Name: "k2", Permissions: []events.Permission{"users.track"},
			Allowlist: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ExpiresAt: &expires, SecretHash: events.HashSecret(testSecret("K2"))}),
		record(t, 3, "acme", events.AggKey, "K2", &events.KeyRevoked{PreviousStatus: events.StatusActive}),
	} {
		if err := x.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	inside, outside := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("192.0.2.1")
	mapped := netip.MustParseAddr("::ffff:10.1.2.3")
	later := t0.Add(2 * time.Hour)
	for _, c := range []struct {
		secret string
		ip     netip.Addr
		perm   events.Permission
		now    time.Time
		want   string
	}{
		{"kr_short", outside, "users.export", later, keyindex.CodeMalformed},
		{testSecret("nobody"), outside, "users.export", later, keyindex.CodeNotFound},
		{testSecret("K2"), outside, "users.export", later, keyindex.CodeRevoked},
		{testSecret("K1"), outside, "users.export", later, keyindex.CodeExpired},
		{testSecret("K1"), outside, "users.export", t0, keyindex.CodeIPNotAllowed},
		{testSecret("K1"), netip.Addr{}, "", t0, keyindex.CodeIPNotAllowed},
		{testSecret("K1"), inside, "users.export", t0, keyindex.CodePermissionDenied},
		{testSecret("K1"), mapped, "users.track", t0, keyindex.CodeValid},
		{testSecret("K1"), inside, "", t0, keyindex.CodeValid},
	} {
		r := x.Verify(c.secret, c.ip, c.perm, c.now)
		if r.Code != c.want || r.Valid != (c.want == keyindex.CodeValid) {
			t.Errorf("Verify(%.12s, %s, %q, %s) = %+v, want %s", c.secret, c.ip, c.perm, c.now, r, c.want)
		}
		if found := c.want != keyindex.CodeMalformed && c.want != keyindex.CodeNotFound; found != (r.KeyID != "") {
			t.Errorf("Verify(%.12s, ...) = %+v: KeyID set %v, want %v", c.secret, r, r.KeyID != "", found)
		}
	}
}

// TestPutMatchesApply: putting the folded states of keys gives the index that applying
// their events gives, and a later Put replaces a key's entry (its old secret no longer
// found).
func TestPutMatchesApply(t *testing.T) {
	recs := []events.Record{
		record(t, 1, "acme", events.AggKey, "K1", &events.KeyCreated{Name: "k1", SecretHash: events.HashSecret(testSecret("a"))}),
		record(t, 2, "acme", events.AggKey, "K1", &events.KeySecretRotated{SecretHash: events.HashSecret(testSecret("b")),
			PreviousHash: events.HashSecret(testSecret("a")), PreviousValidUntil: t0.Add(time.Minute)}),
		record(t, 3, "beta", events.AggKey, "K1", &events.KeyCreated{Name: "other", SecretHash: events.HashSecret(testSecret("c"))}),
	}
	var applied keyindex.Index
	for _, r := range recs {
		if err := applied.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	var put keyindex.Index
	for _, ws := range []events.Workspace{"acme", "beta"} {
		k, ok := applied.Key(ws, "K1")
		if !ok {
			t.Fatalf("Key(%s, K1) not found", ws)
		}
		put.Put(k)
	}
	a, _ := applied.Dump()
	p, _ := put.Dump()
	if a != p || strings.Count(a, "\n") != 2 {
		t.Fatalf("Put gives\n%s\nApply gives\n%s", p, a)
	}
	k, _ := put.Key("acme", "K1")
	k.SecretHash, k.PreviousHash, k.PreviousValidUntil = events.HashSecret(testSecret("d")), "", nil
	put.Put(k)
	for name, want := range map[string]string{"a": keyindex.CodeNotFound, "b": keyindex.CodeNotFound, "c": keyindex.CodeValid, "d": keyindex.CodeValid} {
		if r := put.Verify(testSecret(name), netip.Addr{}, "", t0); r.Code != want {
			t.Errorf("after a Put, secret %s: %s, want %s", name, r.Code, want)
		}
	}
	if put.Len() != 2 {
		t.Errorf("Len = %d, want 2", put.Len())
	}
}

func TestApplyErrors(t *testing.T) {
	var x keyindex.Index
	// Records of other aggregates are not even decoded.
	if err := x.Apply(events.Record{Seq: 1, Subject: "keyreg.acme.identifier.I1.registered", Data: []byte("not json")}); err != nil {
		t.Errorf("a non-key record: %v", err)
	}
	for name, r := range map[string]events.Record{
		"RenameBeforeCreate": record(t, 2, "acme", events.AggKey, "K9", &events.KeyRenamed{Name: "x"}),
		"NotJSON":            {Seq: 3, Subject: "keyreg.acme.key.K1.created", Data: []byte("{")},
		"SubjectMismatch": func() events.Record {
			r := record(t, 4, "acme", events.AggKey, "K1", &events.KeyCreated{Name: "k", SecretHash: events.HashSecret(testSecret("k"))})
			r.Subject = "keyreg.acme.key.K2.created"
			return r
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			err := x.Apply(r)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("seq %d", r.Seq)) {
				t.Fatalf("Apply = %v, want an error naming seq %d", err, r.Seq)
			}
			if x.Len() != 0 {
				t.Fatal("a failed Apply changed the index")
			}
		})
	}
}
