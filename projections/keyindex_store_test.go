package projections

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// indexDump renders an index like verifyDump renders a Store's.
func indexDump(t testing.TB, x *keyindex.Index) string {
	t.Helper()
	d, err := x.Dump()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestKeyIndexApplyMatchesStore: a keyindex.Index fed the log record by record (as a service's
// verifier is) holds exactly the Store's Verify index, re-applying changes nothing, and
// both answer every probe alike.
func TestKeyIndexApplyMatchesStore(t *testing.T) {
	log := events.NewMemLog()
	scenario(t, newWriter(log), 200)
	recs := allRecords(t, log)
	s := openMem(t)
	if err := s.Apply(recs); err != nil {
		t.Fatal(err)
	}
	var x keyindex.Index
	for _, r := range recs {
		if err := x.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	want := verifyDump(t, s)
	if got := indexDump(t, &x); got != want {
		t.Fatal("KeyIndex fed by Apply differs from the Store's index")
	}
	for _, r := range recs[len(recs)/2:] {
		if err := x.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := indexDump(t, &x); got != want {
		t.Fatal("re-applying records changed the index")
	}
	if x.Len() != 53 {
		t.Errorf("Len = %d, want 53 keys", x.Len())
	}
	if k, ok := x.Key("acme", "K1"); !ok || k.Name != "ci-main" || k.Version == 0 {
		t.Errorf("Key(acme, K1) = %+v, %v", k, ok)
	}
	if _, ok := x.Key("beta", "K1"); ok {
		t.Error("Key(beta, K1) found a key of another workspace")
	}

	secrets := []string{"", "kr_nope", testSecret("unknown")}
	for _, n := range []string{"k1a", "k1b", "k1c", "k2a", "k3a", "BK00000", "BK00000b", "BK00004b"} {
		secrets = append(secrets, testSecret(n))
	}
	ips := []netip.Addr{{}, netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}
	for _, sec := range secrets {
		for _, ip := range ips {
			for _, perm := range []events.Permission{"", "users.track", "users.export", "admin"} {
				for _, now := range []time.Time{t0, t0.Add(90 * time.Minute), t0.Add(3 * time.Hour)} {
					if a, b := s.Verify(sec, ip, perm, now), x.Verify(sec, ip, perm, now); fmt.Sprint(a) != fmt.Sprint(b) {
						t.Errorf("Verify(%.12s, %s, %q, %s): store %+v, index %+v", sec, ip, perm, now, a, b)
					}
				}
			}
		}
	}
}

// BenchmarkKeyIndexVerify checks a valid secret against an index of about 250 keys fed by
// Apply, as an embedded verifier holds it.
func BenchmarkKeyIndexVerify(b *testing.B) {
	log := events.NewMemLog()
	scenario(b, newWriter(log), 1000)
	var x keyindex.Index
	for _, r := range allRecords(b, log) {
		if err := x.Apply(r); err != nil {
			b.Fatal(err)
		}
	}
	secret := testSecret("BK00000b")
	ip := netip.MustParseAddr("203.0.113.7")
	b.ReportAllocs()
	for b.Loop() {
		if r := x.Verify(secret, ip, "users.track", t0); !r.Valid {
			b.Fatal(r.Code)
		}
	}
}
