package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"golang.org/x/time/rate"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

func (a *API) registerVerify() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "verify", Method: http.MethodPost, Path: "/v1/verify", Tags: []string{"verify"},
		Security: bearer,
		Summary:  "Verify a key for a request",
		Description: "Answers whether a secret may be used from an address for a permission. Needs a registry key with " +
			"keyreg.verify, and answers only for the keys of that key's workspace (keyreg.admin: every workspace); a key " +
			"of another workspace answers NOT_FOUND, as an unknown one does. Answers that find no key (MALFORMED, " +
			"NOT_FOUND) are rate-limited per end-user address (ip; IPv6 by /64) and per caller (429 with Retry-After); " +
			"an answer that finds a key is never refused.",
	}, func(ctx context.Context, in *struct{ Body wire.VerifyRequest }) (*struct{ Body wire.VerifyResponse }, error) {
		p, err := a.authenticate(ctx)
		if err != nil {
			return nil, err
		}
		if !p.admin() && !slices.Contains(p.Permissions, PermVerify) {
			return nil, problem(http.StatusForbidden, CodeForbidden, "this key lacks the permission "+string(PermVerify))
		}
		ip, err := parseVerifyIP(in.Body.IP)
		if err != nil {
			return nil, invalid("ip", in.Body.IP, err.Error())
		}
		var perm events.Permission
		if in.Body.Permission != "" {
			if perm, err = events.ParsePermission(in.Body.Permission); err != nil {
				return nil, a.fail(ctx, err)
			}
		}
		now := a.d.Now()
		applied := a.d.Views.Checkpoint() // read first: the index holds at least this much
		r := a.d.Views.Verify(in.Body.Key, ip, perm, now)
		if r.Code != keyindex.CodeMalformed && r.Code != keyindex.CodeNotFound && !p.admin() && r.Workspace != p.Workspace {
			r = keyindex.VerifyResult{Code: keyindex.CodeNotFound} // another workspace's key: as if unknown
		}
		if r.Code == keyindex.CodeMalformed || r.Code == keyindex.CodeNotFound {
			if wait, who, ok := a.limiter.take(ipGroup(ip), p.KeyID, now); !ok {
				return nil, rateLimited(wait, who)
			}
		}
		a.d.Metrics.verify(r.Code)
		out := &struct{ Body wire.VerifyResponse }{Body: wire.VerifyResponse{
			Valid: r.Valid, Code: r.Code, KeyID: r.KeyID, Workspace: string(r.Workspace), AppliedSeq: applied,
		}}
		if r.Valid {
			out.Body.Permissions = make([]string, len(r.Permissions))
			for i, p := range r.Permissions {
				out.Body.Permissions[i] = string(p)
			}
		}
		return out, nil
	})
}

// parseVerifyIP parses the end-user address of a verify request: an IPv4 or IPv6 address
// without a zone, IPv4-mapped IPv6 unmapped.
func parseVerifyIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, errBadVerifyIP
	}
	return ip.Unmap(), nil
}

var errBadVerifyIP = errors.New("ip must be an IPv4 or IPv6 address without a zone")

// ipGroup is the unit the verify limiter counts an end-user address in: an IPv4 address
// alone, an IPv6 address by its /64 (one host or site usually holds a whole /64, so single
// IPv6 addresses would let one host escape the limit).
func ipGroup(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, _ := ip.Prefix(64) // an invalid ip gives the zero prefix: one group
	return p
}

func rateLimited(wait time.Duration, who string) *Problem {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	p := problem(http.StatusTooManyRequests, CodeRateLimited, "too many verifies that found no key "+who+"; retry later")
	p.RetryIn = secs
	p.headers = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	return p
}

// failureLimiter bounds the verifies that find no key (MALFORMED, NOT_FOUND), so that verify
// is no guessing oracle and junk cannot flood it: one token bucket per end-user address
// group (ipGroup) and one per caller (registry key id). Verifies that find a key never
// consult it. Its memory is bounded: at most maxBuckets buckets of each kind.
type failureLimiter struct {
	mu       sync.Mutex
	byIP     bucketSet[netip.Prefix]
	byCaller bucketSet[string]
}

// maxBuckets bounds each set of buckets of a failureLimiter.
const maxBuckets = 100_000

// A caller (a gateway verifying for many end users) may see this many times the failures
// of one end-user address, in rate and in burst.
const callerRateFactor, callerBurstFactor = 4, 5

// newFailureLimiter limits each end-user address group to perSecond failed verifies with
// bursts of burst, and each caller to callerRateFactor and callerBurstFactor times that.
func newFailureLimiter(perSecond float64, burst int) *failureLimiter {
	return &failureLimiter{
		byIP:     newBucketSet[netip.Prefix](perSecond, burst, maxBuckets),
		byCaller: newBucketSet[string](perSecond*callerRateFactor, burst*callerBurstFactor, maxBuckets),
	}
}

// take is called for a verify that found no key, for end-user address group g and caller
// c. If both their buckets hold a token it takes one from each and reports true; otherwise
// it takes none and returns how long to wait and whose limit it is ("for addresses in g",
// "for this caller").
func (l *failureLimiter) take(g netip.Prefix, c string, now time.Time) (time.Duration, string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if wait, ok := l.byIP.waitFor(g, now); !ok {
		return wait, "for addresses in " + g.String(), false
	}
	if wait, ok := l.byCaller.waitFor(c, now); !ok {
		return wait, "for this caller", false
	}
	ib, okIP := l.byIP.bucket(g, now)
	cb, okCaller := l.byCaller.bucket(c, now)
	if !okIP || !okCaller { // a set is full of buckets in use: refuse rather than grow
		return time.Second, "while too many addresses and callers are limited at once", false
	}
	ib.AllowN(now, 1)
	cb.AllowN(now, 1)
	return 0, "", true
}

// bucketSet is a bounded set of token buckets by key. A key without a bucket has a full
// one. Buckets that have refilled are dropped when the set is full.
type bucketSet[K comparable] struct {
	rate      rate.Limit
	burst     int
	max       int
	buckets   map[K]*rate.Limiter
	lastSweep time.Time
}

func newBucketSet[K comparable](perSecond float64, burst, maxLen int) bucketSet[K] {
	return bucketSet[K]{rate: rate.Limit(perSecond), burst: burst, max: maxLen, buckets: map[K]*rate.Limiter{}}
}

// waitFor reports whether k's bucket holds a token at now, and if not how long until it
// does.
func (s *bucketSet[K]) waitFor(k K, now time.Time) (time.Duration, bool) {
	b := s.buckets[k]
	if b == nil {
		return 0, true
	}
	tokens := b.TokensAt(now)
	if tokens >= 1 {
		return 0, true
	}
	return time.Duration((1 - tokens) / float64(s.rate) * float64(time.Second)), false
}

// bucket returns k's bucket, making it if needed. When the set is full it first drops the
// buckets that have refilled (at most once a second, so a full set costs no sweep per
// call); it reports false if the set is still full.
func (s *bucketSet[K]) bucket(k K, now time.Time) (*rate.Limiter, bool) {
	if b := s.buckets[k]; b != nil {
		return b, true
	}
	if len(s.buckets) >= s.max {
		if now.Sub(s.lastSweep) < time.Second && !now.Before(s.lastSweep) {
			return nil, false
		}
		s.lastSweep = now
		for key, b := range s.buckets {
			if b.TokensAt(now) >= float64(s.burst) {
				delete(s.buckets, key)
			}
		}
		if len(s.buckets) >= s.max {
			return nil, false
		}
	}
	b := rate.NewLimiter(s.rate, s.burst)
	s.buckets[k] = b
	return b, true
}
