package httpapi

import (
	"net/netip"
	"strings"
)

// clientIP returns the address of a request's client: the peer's address, or, when the
// peer is a trusted proxy, the right-most address of X-Forwarded-For (all its headers,
// in order) that is not a trusted proxy itself. Addresses left of it were written by the
// client and are not believed. A malformed entry stops the walk at the last trusted hop.
// From a peer outside trusted, X-Forwarded-For is ignored.
func clientIP(peer netip.Addr, xff []string, trusted []netip.Prefix) netip.Addr {
	if len(trusted) == 0 || len(xff) == 0 || !isTrusted(peer, trusted) {
		return peer
	}
	ip := peer
	for i := len(xff) - 1; i >= 0; i-- {
		hops := strings.Split(xff[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			h := strings.TrimSpace(hops[j])
			if h == "" {
				continue
			}
			a, err := netip.ParseAddr(h)
			if err != nil {
				return ip
			}
			ip = a.Unmap()
			if !isTrusted(ip, trusted) {
				return ip
			}
		}
	}
	return ip // every hop is a trusted proxy: the furthest one
}

func isTrusted(ip netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
