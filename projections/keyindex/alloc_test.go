package keyindex_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// TestVerifyDoesNotAllocate: Index.Verify allocates nothing, for every code it answers
// (a rotated-out secret in its grace period, IPv6 and IPv4-mapped addresses included).
// Not a timed assertion: an allocation count.
func TestVerifyDoesNotAllocate(t *testing.T) {
	var x keyindex.Index
	expires := t0.Add(time.Hour)
	allow := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	for _, r := range []events.Record{
		record(t, 1, "acme", events.AggKey, "K1", &events.KeyCreated{Name: "k1", Permissions: []events.Permission{"users.alias.new", "users.track"},
			Allowlist: allow, ExpiresAt: &expires, SecretHash: events.HashSecret(testSecret("old"))}),
		record(t, 2, "acme", events.AggKey, "K1", &events.KeySecretRotated{SecretHash: events.HashSecret(testSecret("new")),
			PreviousHash: events.HashSecret(testSecret("old")), PreviousValidUntil: t0.Add(time.Minute)}),
		record(t, 3, "acme", events.AggKey, "K2", &events.KeyCreated{Name: "k2", SecretHash: events.HashSecret(testSecret("K2"))}),
		record(t, 4, "acme", events.AggKey, "K2", &events.KeyRevoked{PreviousStatus: events.StatusActive}),
	} {
		if err := x.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	v4, v6, mapped := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.1.2.3")
	for _, c := range []struct {
		name, secret string
		ip           netip.Addr
		perm         events.Permission
		now          time.Time
		want         string
	}{
		{"Valid", testSecret("new"), v4, "users.track", t0, keyindex.CodeValid},
		{"ValidIPv6", testSecret("new"), v6, "", t0, keyindex.CodeValid},
		{"ValidMapped", testSecret("new"), mapped, "users.alias.new", t0, keyindex.CodeValid},
		{"ValidPrevious", testSecret("old"), v4, "users.track", t0, keyindex.CodeValid},
		{"PreviousOver", testSecret("old"), v4, "", t0.Add(time.Minute), keyindex.CodeNotFound},
		{"PermissionDenied", testSecret("new"), v4, "users.delete", t0, keyindex.CodePermissionDenied},
		{"IPNotAllowed", testSecret("new"), netip.MustParseAddr("192.0.2.1"), "", t0, keyindex.CodeIPNotAllowed},
		{"Expired", testSecret("new"), v4, "", expires, keyindex.CodeExpired},
		{"Revoked", testSecret("K2"), v4, "", t0, keyindex.CodeRevoked},
		{"NotFound", testSecret("nobody"), v4, "", t0, keyindex.CodeNotFound},
		{"Malformed", "kr_short", v4, "", t0, keyindex.CodeMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r keyindex.VerifyResult
			allocs := testing.AllocsPerRun(200, func() { r = x.Verify(c.secret, c.ip, c.perm, c.now) })
			if r.Code != c.want {
				t.Fatalf("code %s, want %s", r.Code, c.want)
			}
			if allocs != 0 {
				t.Errorf("Verify allocates %v times per call", allocs)
			}
		})
	}
}
