// Package httpapi is keyreg's HTTP API (/v1): handlers generated into an OpenAPI 3.1
// document by huma, registry-key auth, RFC 9457 problems, idempotency keys, If-Match,
// read-your-writes (on any node: Keyreg-Sequence, min_seq), verify with a failure rate
// limit, health and Prometheus metrics.
package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/keyreg/keyreg/events"
)

// bearer is the security requirement of the operations that need a registry key.
var bearer = []map[string][]string{{"bearer": {}}}

// MaxBody is the largest request body accepted (413 beyond).
const MaxBody = 1 << 20

// API serves the HTTP API.
type API struct {
	d       Deps
	huma    huma.API
	mux     *http.ServeMux
	limiter *failureLimiter
	idem    *idempotency
	// workspaces are those the views were found to hold (requireWorkspace).
	workspaces knownWorkspaces
	closing    closer // ends event streams at shutdown (Close)
	streams    streamCounts
	// streamOps are the route patterns ("GET /v1/...") of the operations whose answers
	// stream for as long as they last, marked where they are registered (IsStream).
	streamOps map[string]bool
	// minSeqWaiting counts the reads waiting for their min_seq (minSeqMiddleware).
	minSeqWaiting atomic.Int64
}

// New builds the API and registers every operation.
func New(d Deps) *API {
	installErrors()
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.CommandTimeout <= 0 {
		d.CommandTimeout = DefaultCommandTimeout
	}
	if d.Commands != nil {
		d.Commands = boundedCommands{c: d.Commands, timeout: d.CommandTimeout}
	}
	if d.VerifyFailureRate == 0 {
		d.VerifyFailureRate, d.VerifyFailureBurst = 5, 20
	}
	mux := http.NewServeMux()
	cfg := huma.DefaultConfig("keyreg", "1.0.0")
	cfg.Info.Description = "An event-sourced registry of REST API keys, IP allowlists and API identifiers."
	cfg.CreateHooks = nil // no $schema links in bodies
	cfg.DocsPath = ""
	cfg.SchemasPath = ""
	cfg.OpenAPIPath = "/openapi"
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "The secret of a registry key (kr_...)."},
	}
	a := &API{d: d, mux: mux, limiter: newFailureLimiter(d.VerifyFailureRate, d.VerifyFailureBurst),
		idem: newIdempotency(idemTTL, idemMaxEntries, idemMaxBytes, idemMaxEntryBytes), streamOps: map[string]bool{}}
	a.huma = humago.New(mux, cfg)
	a.huma.OpenAPI().OnAddOperation = append(a.huma.OpenAPI().OnAddOperation, documentMinSeq)
	a.huma.UseMiddleware(a.callerMiddleware, pathIDMiddleware, a.strictJSONMiddleware, a.idempotencyMiddleware, a.minSeqMiddleware)
	a.registerWorkspaces()
	a.registerKeys()
	a.registerPermissions()
	a.registerIdentifiers()
	a.registerVerify()
	a.registerHealth()
	a.registerEvents()
	a.registerAdmin()
	a.registerAudit()
	a.registerSubscribers()
	a.registerLeaks()
	a.registerWebhooks()
	return a
}

// stream marks op as one whose answer streams for as long as it lasts (an event stream, an
// export), for IsStream, and returns it.
func (a *API) stream(op huma.Operation) huma.Operation {
	a.streamOps[strings.ToUpper(op.Method)+" "+op.Path] = true
	return op
}

// IsStream reports whether r goes to an operation whose answer streams for as long as it
// lasts (GET .../events, GET .../audit/export), so a server can leave its connection
// without deadlines and its answer unbuffered.
func (a *API) IsStream(r *http.Request) bool {
	_, pattern := a.mux.Handler(r)
	return a.streamOps[pattern]
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	method := r.Method
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(sw, r.Body, MaxBody)
	}
	_, pattern := a.mux.Handler(r)
	switch {
	case pattern == "":
		a.noRoute(sw, r)
	case isWrite(method):
		if r = a.readBody(sw, r); r != nil {
			a.mux.ServeHTTP(sw, r)
		}
	default:
		a.mux.ServeHTTP(sw, r)
	}
	if a.d.Metrics != nil {
		a.d.Metrics.observeHTTP(method, pattern, sw.status, time.Since(start))
	}
}

func isWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// bodyReadTimeout bounds the time to read a write's body.
const bodyReadTimeout = 5 * time.Second

// readBody reads the body of a write, at most MaxBody bytes within bodyReadTimeout. It
// returns r with the body to be read again and kept for the strict JSON check and the
// idempotency layer (requestBody), or nil when it has answered a problem.
func (a *API) readBody(w http.ResponseWriter, r *http.Request) *http.Request {
	if r.Body == nil {
		return r
	}
	if canSetReadDeadline(w) {
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyReadTimeout))
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		var netErr net.Error
		switch {
		case errors.As(err, &tooLarge):
			writeProblem(w, problem(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is larger than "+strconv.Itoa(MaxBody)+" bytes"))
		case errors.As(err, &netErr) && netErr.Timeout():
			writeProblem(w, problem(http.StatusRequestTimeout, CodeTimeout, "the request body was not received in time"))
		default:
			writeProblem(w, problem(http.StatusBadRequest, CodeInvalid, "cannot read request body"))
		}
		return nil
	}
	r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, body))
	r.Body = io.NopCloser(bytes.NewReader(body))
	return r
}

// canSetReadDeadline reports whether w, or a writer it wraps, sets read deadlines, as
// http.ResponseController looks for one. Asking first spares the error the controller
// makes when none does (a server that buffers answers, as keyreg serve does), which costs
// more than reading a small body.
func canSetReadDeadline(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

// noRoute answers a request that matches no route with a problem: 405 (with Allow) when
// the path exists for other methods, else 404.
func (a *API) noRoute(w http.ResponseWriter, r *http.Request) {
	h, _ := a.mux.Handler(r)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code == http.StatusMethodNotAllowed {
		p := problem(http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
		p.headers = http.Header{"Allow": rec.Header().Values("Allow")}
		writeProblem(w, p)
		return
	}
	writeProblem(w, problem(http.StatusNotFound, CodeNotFound, "no such endpoint: "+r.URL.Path))
}

// OpenAPI returns the generated OpenAPI document.
func (a *API) OpenAPI() *huma.OpenAPI { return a.huma.OpenAPI() }

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type ctxKey int

const callerKey ctxKey = iota

// caller is who sent a request: the bearer token, the client address, the request id
// and the stated reason (header Keyreg-Reason).
type caller struct {
	token     string
	digest    *[32]byte // a key known by its secret's digest (WithKeyDigest), when token is ""
	ip        netip.Addr
	requestID string
	reason    string
	eventID   string // from Idempotency-Key (idempotencyMiddleware)
}

type keyDigestKeyType struct{}

var keyDigestKey keyDigestKeyType

// WithKeyDigest returns ctx carrying the digest (events.SecretDigest) of a registry key's
// secret: a request with that context and no Authorization header acts as that key, as if
// it had presented the secret. It is for a handler in front of the API in the same process
// that has authenticated the caller itself (the web console's sessions keep the digest,
// never the secret); no HTTP client can set it.
func WithKeyDigest(ctx context.Context, d [32]byte) context.Context {
	return context.WithValue(ctx, keyDigestKey, &d)
}

func (a *API) callerMiddleware(ctx huma.Context, next func(huma.Context)) {
	c := caller{
		requestID: ctx.Header("X-Request-Id"),
		reason:    ctx.Header("Keyreg-Reason"),
	}
	if c.requestID == "" || len(c.requestID) > 128 {
		c.requestID = events.NewID()
	}
	if len(c.reason) > 1024 {
		c.reason = c.reason[:1024]
	}
	if h := ctx.Header("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		c.token = strings.TrimSpace(h[7:])
	} else if d, ok := ctx.Context().Value(keyDigestKey).(*[32]byte); ok {
		c.digest = d
	}
	var xff []string
	if len(a.d.TrustedProxies) > 0 {
		ctx.EachHeader(func(name, value string) {
			if strings.EqualFold(name, "X-Forwarded-For") {
				xff = append(xff, value)
			}
		})
	}
	c.ip = clientIP(remoteIP(ctx.RemoteAddr()), xff, a.d.TrustedProxies)
	ctx.SetHeader("X-Request-Id", c.requestID)
	next(huma.WithValue(ctx, callerKey, c))
}

func remoteIP(addr string) netip.Addr {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey).(caller)
	return c
}

// meta returns the event metadata of a request by principal p.
func (c caller) meta(p principal) events.Meta {
	return events.Meta{Actor: p.KeyID, ActorIP: c.ip.String(), RequestID: c.requestID, Reason: c.reason}
}

// fail maps err to a problem, logging internal errors with the request id.
func (a *API) fail(ctx context.Context, err error) error {
	p := toProblem(err)
	if p.internal != nil {
		a.d.Logger.Error("request failed", "request_id", callerOf(ctx).requestID, "err", p.internal)
	}
	return p
}

// waitApplied blocks until the views have applied seq, so that the response and any
// following read see the change.
func (a *API) waitApplied(ctx context.Context, seq uint64) error {
	if a.d.Waiter == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.d.Waiter.WaitFor(ctx, seq); err != nil {
		p := problem(http.StatusServiceUnavailable, CodeUnavailable, "the change was stored but the views have not applied it yet; retry the read")
		p.RetryIn = RetryAfterSeconds
		p.headers = http.Header{"Retry-After": {strconv.Itoa(RetryAfterSeconds)}}
		p.internal = err
		return p
	}
	return nil
}

func (a *API) writable() error {
	if a.d.Commands == nil {
		return problem(http.StatusMethodNotAllowed, CodeReadOnly, "this server serves a read-only copy of the views; writes go to a live keyreg serve")
	}
	return nil
}

// etag formats a version as a strong entity tag.
func etag(version uint64) string { return `"` + uitoa(version) + `"` }

// parseIfMatch returns the version of an If-Match header ("" or "*": 0, no check).
func parseIfMatch(h string) (uint64, error) {
	h = strings.TrimSpace(h)
	if h == "" || h == "*" {
		return 0, nil
	}
	h = strings.TrimPrefix(h, "W/")
	v, err := parseUint(strings.Trim(h, `"`))
	if err != nil || v == 0 {
		return 0, invalid("If-Match", h, `If-Match must be the resource's ETag, e.g. "42"`)
	}
	return v, nil
}
