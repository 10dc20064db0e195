package httpapi

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events"
)

// FuzzVerifyInput: the end-user address and the permission of a verify request either
// parse or are refused; a parsed address is unmapped, has no zone, and falls in its limiter
// group, which is the address alone for IPv4 and its /64 for IPv6.
func FuzzVerifyInput(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1%eth0", "999.1.1.1", "", "10.0.0.0/8", "::", "1.2.3.4 "} {
		f.Add(s, "users.track")
	}
	f.Add("2001:db8:1:2:3:4:5:6", "A B")
	f.Fuzz(func(t *testing.T, ip, perm string) {
		addr, err := parseVerifyIP(ip)
		if err != nil {
			if addr.IsValid() {
				t.Fatalf("parseVerifyIP(%q) = %s with error %v", ip, addr, err)
			}
		} else {
			if !addr.IsValid() || addr.Zone() != "" || addr.Is4In6() {
				t.Fatalf("parseVerifyIP(%q) = %s", ip, addr)
			}
			g := ipGroup(addr)
			want := 64
			if addr.Is4() {
				want = 32
			}
			if !g.IsValid() || g.Bits() != want || !g.Contains(addr) || g != g.Masked() {
				t.Fatalf("ipGroup(%s) = %s", addr, g)
			}
		}
		if p, err := events.ParsePermission(perm); err == nil && string(p) != perm {
			t.Fatalf("ParsePermission(%q) = %q", perm, p)
		}
	})
}

// TestFailureLimiterBounded: each set of buckets holds at most maxBuckets; when full it
// drops the buckets that have refilled, and refuses (rather than grows) while every bucket
// is in use.
func TestFailureLimiterBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newFailureLimiter(5, 20)
	l.byIP.max, l.byCaller.max = 100, 100
	group := func(i int) netip.Prefix { return ipGroup(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})) }
	for i := range 100 {
		if _, _, ok := l.take(group(i), fmt.Sprint("caller-", i), now); !ok {
			t.Fatalf("take %d refused", i)
		}
	}
	if _, who, ok := l.take(group(100), "caller-0", now); ok || !strings.Contains(who, "too many addresses") {
		t.Fatalf("a 101st address while all 100 buckets are in use: ok %v (%s)", ok, who)
	}
	if len(l.byIP.buckets) != 100 || len(l.byCaller.buckets) != 100 {
		t.Fatalf("%d and %d buckets, want at most 100 each", len(l.byIP.buckets), len(l.byCaller.buckets))
	}
	later := now.Add(time.Second) // every bucket has refilled its one token
	if _, _, ok := l.take(group(100), "caller-0", later); !ok {
		t.Fatal("a new address once the buckets have refilled: refused")
	}
	if n := len(l.byIP.buckets); n != 1 {
		t.Fatalf("after the sweep %d address buckets, want 1", n)
	}
}
