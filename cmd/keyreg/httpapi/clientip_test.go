package httpapi

import (
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	peer := netip.MustParseAddr("10.1.1.1")
	other := netip.MustParseAddr("192.0.2.1")
	for _, tc := range []struct {
		name    string
		peer    netip.Addr
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"NoTrustedProxies", peer, []string{"203.0.113.7"}, nil, "10.1.1.1"},
		{"UntrustedPeer", other, []string{"203.0.113.7"}, trusted, "192.0.2.1"},
		{"TrustedPeerNoHeader", peer, nil, trusted, "10.1.1.1"},
		{"RightMostUntrusted", peer, []string{"198.51.100.1, 203.0.113.7"}, trusted, "203.0.113.7"},
		{"SkipsTrustedHops", peer, []string{"203.0.113.7, 10.2.2.2", "10.3.3.3"}, trusted, "203.0.113.7"},
		{"AllTrusted", peer, []string{"10.2.2.2, 10.3.3.3"}, trusted, "10.2.2.2"},
		{"MalformedStopsAtLastTrustedHop", peer, []string{"203.0.113.7, bogus, 10.3.3.3"}, trusted, "10.3.3.3"},
		{"MappedIPv6", peer, []string{"::ffff:203.0.113.7"}, trusted, "203.0.113.7"},
		{"IPv6", netip.MustParseAddr("fd00::1"), []string{"2001:db8::7"}, trusted, "2001:db8::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := clientIP(tc.peer, tc.xff, tc.trusted); got.String() != tc.want {
				t.Fatalf("clientIP = %s, want %s", got, tc.want)
			}
		})
	}
}
