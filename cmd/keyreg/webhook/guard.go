package webhook

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/keyreg/keyreg/events"
)

// refusedPrefixes are the ranges beyond loopback, private (RFC 1918, fc00::/7) and
// link-local that a delivery may not reach: "this network" and carrier-grade NAT.
var refusedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// Refused reports why a delivery may not go to ip ("" when it may): loopback, private,
// link-local (cloud metadata services live there), unspecified and multicast addresses
// are refused, IPv4-mapped IPv6 addresses as their IPv4 address.
func Refused(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "not an IP address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	for _, p := range refusedPrefixes {
		if p.Contains(ip) {
			return "a reserved address (" + p.String() + ")"
		}
	}
	return ""
}

// Guard decides where deliveries may go.
type Guard struct {
	// AllowPrivate lets deliveries reach loopback, private and link-local addresses
	// (keyreg serve --webhook-allow-private): for tests and private networks only.
	AllowPrivate bool
	// Resolver resolves host names at registration; nil: net.DefaultResolver.
	Resolver *net.Resolver
}

// CheckURL checks a webhook URL at registration: its syntax (events.ParseWebhookURL) and,
// unless AllowPrivate, the addresses its host names. A host that does not resolve now is
// accepted: every delivery checks the addresses it connects to again (Dialer), so a name
// that later resolves to a refused address (DNS rebinding) gets nothing. Errors:
// *events.ValidationError of field url.
func (g Guard) CheckURL(ctx context.Context, raw string) error {
	u, err := events.ParseWebhookURL(raw)
	if err != nil || g.AllowPrivate {
		return err
	}
	return g.checkHost(ctx, u)
}

func (g Guard) checkHost(ctx context.Context, u *url.URL) error {
	host := u.Hostname()
	refuse := func(ip netip.Addr, why string) error {
		what := "host " + host
		if ip.String() != host {
			what += " resolves to " + ip.String() + ", which is"
		} else {
			what += " is"
		}
		return events.Invalid("url", u.String(), "%s %s; webhooks may not reach loopback, private or link-local addresses (keyreg serve --webhook-allow-private allows them)", what, why)
	}
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		if why := Refused(ip); why != "" {
			return refuse(ip, why)
		}
		return nil
	}
	if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return refuse(netip.IPv6Loopback(), "a loopback address")
	}
	r := g.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	ips, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil // checked at each delivery
	}
	for _, ip := range ips {
		if why := Refused(ip); why != "" {
			return refuse(ip, why)
		}
	}
	return nil
}

// errRefusedAddr is the error of a connection the guard refused.
type errRefusedAddr struct {
	addr string
	why  string
}

func (e *errRefusedAddr) Error() string {
	return "webhook: refused to connect to " + e.addr + ": " + e.why + " (keyreg serve --webhook-allow-private allows it)"
}

// Dialer returns a dialer that, unless AllowPrivate, refuses to connect to a refused
// address (Refused). It checks the address each connection is made to, after DNS
// resolution, so a name that resolves to a private address at delivery time (DNS
// rebinding) is refused too.
func (g Guard) Dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if g.AllowPrivate {
		return d
	}
	d.Control = func(network, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return fmt.Errorf("webhook: dial %s: %w", address, err)
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return &errRefusedAddr{addr: address, why: "not an IP address"}
		}
		if why := Refused(ip); why != "" {
			return &errRefusedAddr{addr: address, why: why}
		}
		return nil
	}
	return d
}
