package keyindex_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// benchKeys returns n keys shaped like those of keyreg bench --keys: 26-character ids,
// 100 workspaces, a few permission sets, some with an allowlist and an expiry, a tenth
// rotated with a grace period.
func benchKeys(n int) ([]events.KeyState, []string) {
	keys, secrets := make([]events.KeyState, n), make([]string, n)
	perms := [][]events.Permission{{"users.track"}, {"users.track", "users.alias.new"}, {"keyreg.verify", "users.track"}}
	allow := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for i := range keys {
		secrets[i] = testSecret(fmt.Sprint("bench", i))
		exp := t0.Add(time.Duration(i+1) * time.Hour)
		k := events.KeyState{ID: fmt.Sprintf("01J%023d", i), Workspace: events.Workspace(fmt.Sprintf("ws%03d", i%100)),
			Name: fmt.Sprint("key ", i), Permissions: perms[i%len(perms)], Allowlist: []netip.Prefix{}, Status: events.StatusActive,
			SecretHash: events.HashSecret(secrets[i]), CreatedAt: t0, UpdatedAt: t0, CreatedBy: "admin"}
		k.Version, k.LastHash = uint64(i+1), events.HashSecret(secrets[i])
		if i%4 == 0 {
			k.Allowlist, k.ExpiresAt = allow, &exp
		}
		if i%10 == 0 {
			until := t0.Add(time.Hour)
			k.PreviousHash, k.PreviousValidUntil = events.HashSecret(testSecret(fmt.Sprint("old", i))), &until
		}
		keys[i] = k
	}
	return keys, secrets
}

// BenchmarkIndexBytesPerKey reports the live heap an index of 200,000 keys holds, per key
// (B/key), whole and VerifyOnly: what remains of building it from states that are then
// dropped. A figure, not an assertion.
func BenchmarkIndexBytesPerKey(b *testing.B) {
	const n = 200_000
	for _, verifyOnly := range []bool{false, true} {
		b.Run(fmt.Sprintf("VerifyOnly=%v", verifyOnly), func(b *testing.B) {
			for range b.N {
				before := liveHeap()
				keys, _ := benchKeys(n)
				x := &keyindex.Index{VerifyOnly: verifyOnly}
				for i := 0; i < n; i += 1000 {
					x.Put(keys[i : i+1000]...)
				}
				keys = nil
				after := liveHeap()
				b.ReportMetric(float64(after-before)/n, "B/key")
				runtime.KeepAlive(x)
			}
		})
	}
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkVerifyLarge: Verify on an index of 200,000 keys, VALID answers.
func BenchmarkVerifyLarge(b *testing.B) {
	const n = 200_000
	keys, secrets := benchKeys(n)
	for _, verifyOnly := range []bool{false, true} {
		b.Run(fmt.Sprintf("VerifyOnly=%v", verifyOnly), func(b *testing.B) {
			x := &keyindex.Index{VerifyOnly: verifyOnly}
			x.Put(keys...)
			ip := netip.MustParseAddr("10.1.2.3")
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if r := x.Verify(secrets[(i*7919)%n], ip, "users.track", t0); r.Code != keyindex.CodeValid {
					b.Fatal(r.Code)
				}
			}
		})
	}
}
