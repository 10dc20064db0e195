package projections

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// indexDump renders a KeyIndex like verifyDump renders a Store's.
func indexDump(t testing.TB, x *KeyIndex) string {
	t.Helper()
	s := &Store{}
	s.verify.byHash, s.verify.byKey = x.byHash, x.byKey
	return verifyDump(t, s)
}

// TestKeyIndexApplyMatchesStore: a KeyIndex fed the log record by record (as a service's
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
	var x KeyIndex
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

func TestKeyIndexApplyErrors(t *testing.T) {
	rec := func(seq uint64, ws events.Workspace, agg events.Aggregate, id string, p events.Payload) events.Record {
		e, err := events.NewEvent(ws, agg, id, p, events.Meta{}, "", t0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := e.Encode()
		return events.Record{Seq: seq, Subject: events.Subject(ws, agg, id, p.EventType()), MsgID: e.ID, Data: b}
	}
	var x KeyIndex
	// Records of other aggregates are not even decoded.
	if err := x.Apply(events.Record{Seq: 1, Subject: "keyreg.acme.identifier.I1.registered", Data: []byte("not json")}); err != nil {
		t.Errorf("a non-key record: %v", err)
	}
	for name, r := range map[string]events.Record{
		"RenameBeforeCreate": rec(2, "acme", events.AggKey, "K9", &events.KeyRenamed{Name: "x"}),
		"NotJSON":            {Seq: 3, Subject: "keyreg.acme.key.K1.created", Data: []byte("{")},
		"SubjectMismatch": func() events.Record {
			r := rec(4, "acme", events.AggKey, "K1", &events.KeyCreated{Name: "k", SecretHash: events.HashSecret(testSecret("k"))})
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

// BenchmarkKeyIndexVerify checks a valid secret against an index of about 250 keys fed by
// Apply, as an embedded verifier holds it.
func BenchmarkKeyIndexVerify(b *testing.B) {
	log := events.NewMemLog()
	scenario(b, newWriter(log), 1000)
	var x KeyIndex
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
