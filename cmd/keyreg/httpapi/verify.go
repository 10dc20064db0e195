package httpapi

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"golang.org/x/time/rate"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// VerifyResponse is the answer to a verify request.
type VerifyResponse struct {
	Valid       bool     `json:"valid"`
	Code        string   `json:"code" enum:"VALID,MALFORMED,NOT_FOUND,REVOKED,EXPIRED,IP_NOT_ALLOWED,PERMISSION_DENIED"`
	KeyID       string   `json:"key_id,omitempty"`
	Workspace   string   `json:"workspace,omitempty"`
	Permissions []string `json:"permissions,omitempty" doc:"The key's permissions, when valid"`
}

func (a *API) registerVerify() {
	huma.Register(a.huma, huma.Operation{
		OperationID: "verify", Method: http.MethodPost, Path: "/v1/verify", Tags: []string{"verify"},
		Summary: "Verify a key for a request",
		Description: "Answers whether a secret may be used from an address for a permission. Needs no registry key. " +
			"Answers that find no key (MALFORMED, NOT_FOUND) are rate-limited per client address (429), so the endpoint is no guessing oracle.",
	}, func(ctx context.Context, in *struct {
		Body struct {
			Key        string `json:"key" doc:"The presented secret (kr_...)"`
			IP         string `json:"ip" doc:"The address the request came from"`
			Permission string `json:"permission,omitempty" doc:"The permission the request needs; empty: none checked"`
		}
	}) (*struct{ Body VerifyResponse }, error) {
		c := callerOf(ctx)
		if wait, ok := a.limiter.allowed(c.ip, a.d.Now()); !ok {
			p := problem(http.StatusTooManyRequests, CodeRateLimited, "too many failed verifies from "+c.ip.String())
			secs := int(math.Ceil(wait.Seconds()))
			p.RetryIn = secs
			p.headers = http.Header{"Retry-After": {strconv.Itoa(secs)}}
			return nil, p
		}
		ip, err := netip.ParseAddr(in.Body.IP)
		if err != nil || ip.Zone() != "" {
			return nil, invalid("ip", in.Body.IP, "ip must be an IPv4 or IPv6 address without a zone")
		}
		var perm events.Permission
		if in.Body.Permission != "" {
			if perm, err = events.ParsePermission(in.Body.Permission); err != nil {
				return nil, a.fail(ctx, err)
			}
		}
		r := a.d.Store.Verify(in.Body.Key, ip, perm, a.d.Now())
		a.d.Metrics.verify(r.Code)
		if r.Code == projections.CodeMalformed || r.Code == projections.CodeNotFound {
			a.limiter.failed(c.ip, a.d.Now())
		}
		out := &struct{ Body VerifyResponse }{Body: VerifyResponse{Valid: r.Valid, Code: r.Code, KeyID: r.KeyID, Workspace: string(r.Workspace)}}
		if r.Valid {
			out.Body.Permissions = make([]string, len(r.Permissions))
			for i, p := range r.Permissions {
				out.Body.Permissions[i] = string(p)
			}
		}
		return out, nil
	})
}

// failureLimiter is a token bucket of failed verifies per client address.
type failureLimiter struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	buckets map[netip.Addr]*rate.Limiter
}

const maxBuckets = 100_000

func newFailureLimiter(perSecond float64, burst int) *failureLimiter {
	return &failureLimiter{rate: rate.Limit(perSecond), burst: burst, buckets: map[netip.Addr]*rate.Limiter{}}
}

// allowed reports whether ip may verify now, and if not how long to wait.
func (l *failureLimiter) allowed(ip netip.Addr, now time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil || b.TokensAt(now) >= 1 {
		return 0, true
	}
	need := 1 - b.TokensAt(now)
	return time.Duration(need / float64(l.rate) * float64(time.Second)), false
}

// failed takes a token from ip's bucket.
func (l *failureLimiter) failed(ip netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[ip]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			for k, v := range l.buckets { // drop the buckets that have refilled
				if v.TokensAt(now) >= float64(l.burst) {
					delete(l.buckets, k)
				}
			}
		}
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[ip] = b
	}
	b.AllowN(now, 1)
}
