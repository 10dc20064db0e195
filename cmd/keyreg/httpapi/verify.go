package httpapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"golang.org/x/time/rate"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// verifyOp is the operation of POST /v1/verify.
var verifyOp = huma.Operation{
	OperationID: "verify", Method: http.MethodPost, Path: "/v1/verify", Tags: []string{"verify"},
	Security: bearer,
	Summary:  "Verify a key for a request",
	Description: "Answers whether a secret may be used from an address for a permission. Needs a registry key with " +
		"keyreg.verify, and answers only for the keys of that key's workspace (keyreg.admin: every workspace); a key " +
		"of another workspace answers NOT_FOUND, as an unknown one does. Answers that find no key (MALFORMED, " +
		"NOT_FOUND) are rate-limited per end-user address (ip; IPv6 by /64) and per caller (429 with Retry-After); " +
		"an answer that finds a key is never refused.",
}

// registerVerify serves POST /v1/verify, the hot path, in two ways that answer alike. The
// operation is registered with huma as every other (its OpenAPI entry, and huma's
// decoding, validation and answers behind the API's middlewares), but its handler is
// kept rather than mounted: the route serves a plain body (a JSON object of the three
// string fields, nothing that needs unescaping) with a decoder of its own and the caller
// middleware alone, and hands every other request to huma's handler. The shortcut skips
// only what cannot apply to such a body: strictJSONMiddleware (no key twice, no list),
// pathIDMiddleware (no path ids), idempotencyMiddleware (verify takes no Idempotency-Key);
// minSeqMiddleware only when the request asks no min_seq the views lack (minSeqApplied),
// else the request goes to huma's handler.
func (a *API) registerVerify() {
	var full func(huma.Context) // huma's handler, middlewares and all
	var op *huma.Operation
	api := keptAPI{API: a.huma, keep: func(o *huma.Operation, h func(huma.Context)) { op, full = o, h }}
	huma.Register(api, verifyOp, func(ctx context.Context, in *struct{ Body wire.VerifyRequest }) (*struct{ Body wire.VerifyResponse }, error) {
		r, applied, err := a.verify(ctx, in.Body)
		if err != nil {
			return nil, err
		}
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
	a.mux.HandleFunc(strings.ToUpper(op.Method)+" "+op.Path, func(w http.ResponseWriter, r *http.Request) {
		ctx := humago.NewContext(op, r, w)
		if !a.verifyPlain(ctx) {
			full(ctx)
		}
	})
}

// verify answers a verify request for the caller of ctx: the verify result (another
// workspace's key as NOT_FOUND) and the checkpoint the views had applied before they
// answered, or a problem.
func (a *API) verify(ctx context.Context, in wire.VerifyRequest) (keyindex.VerifyResult, uint64, error) {
	p, err := a.authenticate(ctx)
	if err != nil {
		return keyindex.VerifyResult{}, 0, err
	}
	if !p.admin() && !slices.Contains(p.Permissions, PermVerify) {
		return keyindex.VerifyResult{}, 0, problem(http.StatusForbidden, CodeForbidden, "this key lacks the permission "+string(PermVerify))
	}
	ip, err := parseVerifyIP(in.IP)
	if err != nil {
		return keyindex.VerifyResult{}, 0, invalid("ip", in.IP, err.Error())
	}
	perm := events.Permission(in.Permission)
	if perm != "" && !isPermission(in.Permission) {
		if perm, err = events.ParsePermission(in.Permission); err != nil {
			return keyindex.VerifyResult{}, 0, invalid("permission", in.Permission, err.Error())
		}
	}
	now := a.d.Now()
	applied := a.d.Views.Checkpoint() // read first: the index holds at least this much
	r := a.d.Views.Verify(in.Key, ip, perm, now)
	if r.Code != keyindex.CodeMalformed && r.Code != keyindex.CodeNotFound && !p.admin() && r.Workspace != p.Workspace {
		r = keyindex.VerifyResult{Code: keyindex.CodeNotFound} // another workspace's key: as if unknown
	}
	if r.Code == keyindex.CodeMalformed || r.Code == keyindex.CodeNotFound {
		if wait, who, ok := a.limiter.take(ipGroup(ip), p.KeyID, now); !ok {
			return keyindex.VerifyResult{}, 0, rateLimited(wait, who)
		}
	}
	a.d.Metrics.verify(r.Code)
	if a.d.Usage != nil {
		a.d.Usage.Record(r.Workspace, r.KeyID, r.Code, ip, now)
	}
	return r, applied, nil
}

// verifyPlain answers a verify request whose body is plain (parsePlainVerify) and that
// takes a JSON answer, as huma's handler would, and reports whether it did; it leaves
// every other request untouched.
func (a *API) verifyPlain(ctx huma.Context) bool {
	if ct := ctx.Header("Content-Type"); ct != "" && ct != "application/json" {
		return false
	}
	if ct, err := a.huma.Negotiate(ctx.Header("Accept")); err != nil || ct != "application/json" {
		return false
	}
	if !a.minSeqApplied(ctx) {
		return false
	}
	in, ok := parsePlainVerify(requestBody(ctx.Context()))
	if !ok {
		return false
	}
	a.callerMiddleware(ctx, func(ctx huma.Context) {
		r, applied, err := a.verify(ctx.Context(), in)
		if err != nil {
			a.writeError(ctx, err)
			return
		}
		ctx.SetHeader("Content-Type", "application/json")
		ctx.SetStatus(http.StatusOK)
		buf := make([]byte, 0, 256)
		if b, ok := appendVerifyResponse(buf, r, applied); ok {
			ctx.BodyWriter().Write(b)
			return
		}
		// A value that encoding/json would escape: let it encode the answer.
		out := wire.VerifyResponse{Valid: r.Valid, Code: r.Code, KeyID: r.KeyID, Workspace: string(r.Workspace), AppliedSeq: applied}
		if r.Valid {
			out.Permissions = make([]string, len(r.Permissions))
			for i, p := range r.Permissions {
				out.Permissions[i] = string(p)
			}
		}
		if err := a.huma.Marshal(ctx.BodyWriter(), "application/json", &out); err != nil {
			a.d.Logger.Error("verify answer", "request_id", callerOf(ctx.Context()).requestID, "err", err)
		}
	})
	return true
}

// minSeqApplied reports whether a verify request asks no min_seq the views have not
// applied: no query at all, and no Keyreg-Min-Sequence header or one the views have
// applied. Any other request (one that must wait, or a bad value) goes to huma's handler,
// whose minSeqMiddleware serves it.
func (a *API) minSeqApplied(ctx huma.Context) bool {
	if ctx.URL().RawQuery != "" {
		return false
	}
	h := ctx.Header(wire.MinSequenceHeader)
	if h == "" {
		return true
	}
	seq, err := strconv.ParseUint(h, 10, 64)
	return err == nil && seq > 0 && seq <= a.d.Views.Checkpoint()
}

// writeError answers err (a *Problem) from a handler as huma answers an error a handler
// returns: the problem's headers, its status, application/problem+json.
func (a *API) writeError(ctx huma.Context, err error) {
	p := toProblem(err)
	for k, vs := range p.GetHeaders() {
		for _, v := range vs {
			ctx.AppendHeader(k, v)
		}
	}
	ctx.SetHeader("Content-Type", p.ContentType("application/json"))
	ctx.SetStatus(p.Status)
	if err := a.huma.Marshal(ctx.BodyWriter(), "application/json", p); err != nil {
		a.d.Logger.Error("verify answer", "request_id", callerOf(ctx.Context()).requestID, "err", err)
	}
}

// parsePlainVerify decodes a plain verify body: one JSON object with "key" and "ip" and
// maybe "permission", each once, each a string of printable ASCII without escapes (JSON
// white space around the tokens). It reports false for any other body, which huma's
// decoder then judges: that one names the field and value of every fault.
func parsePlainVerify(body []byte) (wire.VerifyRequest, bool) {
	var in wire.VerifyRequest
	var seen [3]bool
	s := string(body) // one copy: the fields are slices of it
	i := skipSpace(s, 0)
	if i == len(s) || s[i] != '{' {
		return in, false
	}
	i = skipSpace(s, i+1)
	for n := 0; ; n++ {
		if n > 0 {
			if i == len(s) || s[i] != ',' {
				break
			}
			i = skipSpace(s, i+1)
		}
		name, j, ok := plainString(s, i)
		if !ok {
			return in, false
		}
		i = skipSpace(s, j)
		if i == len(s) || s[i] != ':' {
			return in, false
		}
		value, j, ok := plainString(s, skipSpace(s, i+1))
		if !ok {
			return in, false
		}
		i = skipSpace(s, j)
		var f int
		switch name {
		case "key":
			f, in.Key = 0, value
		case "ip":
			f, in.IP = 1, value
		case "permission":
			f, in.Permission = 2, value
		default:
			return in, false
		}
		if seen[f] {
			return in, false
		}
		seen[f] = true
	}
	if i == len(s) || s[i] != '}' || skipSpace(s, i+1) != len(s) || !seen[0] || !seen[1] {
		return in, false
	}
	return in, true
}

// plainString reads a JSON string at s[i:] made only of printable ASCII without
// backslashes, and returns its content and the index after it.
func plainString(s string, i int) (string, int, bool) {
	if i >= len(s) || s[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(s); j++ {
		switch c := s[j]; {
		case c == '"':
			return s[i+1 : j], j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return "", 0, false
		}
	}
	return "", 0, false
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// appendVerifyResponse appends the JSON of a verify answer, byte for byte as huma's
// encoder writes wire.VerifyResponse (with its newline), and reports false, having
// appended nothing of use, if a string in it is not plain (needs escaping).
func appendVerifyResponse(b []byte, r keyindex.VerifyResult, applied uint64) ([]byte, bool) {
	ok := true
	str := func(b []byte, s string) []byte {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				ok = false
			}
		}
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, r.Valid)
	b = append(b, `,"code":`...)
	b = str(b, r.Code)
	if r.KeyID != "" {
		b = append(b, `,"key_id":`...)
		b = str(b, r.KeyID)
	}
	if r.Workspace != "" {
		b = append(b, `,"workspace":`...)
		b = str(b, string(r.Workspace))
	}
	if r.Valid && len(r.Permissions) > 0 {
		b = append(b, `,"permissions":[`...)
		for i, p := range r.Permissions {
			if i > 0 {
				b = append(b, ',')
			}
			b = str(b, string(p))
		}
		b = append(b, ']')
	}
	b = append(b, `,"applied_seq":`...)
	b = strconv.AppendUint(b, applied, 10)
	b = append(b, "}\n"...)
	return b, ok
}

// keptAPI is an API on which huma.Register documents an operation and builds its handler
// as on API (middlewares, decoding, validation, answers) but hands the handler to keep
// instead of mounting it.
type keptAPI struct {
	huma.API
	keep func(op *huma.Operation, h func(huma.Context))
}

func (k keptAPI) Adapter() huma.Adapter { return keptAdapter(k) }

// Config is the configuration of the API, which huma.Register reads.
func (k keptAPI) Config() huma.Config {
	c, _ := k.API.(interface{ Config() huma.Config })
	return c.Config()
}

type keptAdapter keptAPI

func (k keptAdapter) Handle(op *huma.Operation, h func(huma.Context)) { k.keep(op, h) }

func (k keptAdapter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.API.Adapter().ServeHTTP(w, r)
}

// isPermission reports whether s has a permission's syntax, as events.ParsePermission
// checks it, without its regular expression (verify checks one on every call).
func isPermission(s string) bool {
	if len(s) > events.MaxPermissionBytes {
		return false
	}
	dots, wordStart := 0, true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z':
			wordStart = false
		case c >= '0' && c <= '9' || c == '_':
			if wordStart {
				return false
			}
		case c == '.':
			if wordStart {
				return false
			}
			dots, wordStart = dots+1, true
		default:
			return false
		}
	}
	return dots > 0 && !wordStart
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
