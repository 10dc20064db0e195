package httpapi

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/oklog/ulid/v2"

	"github.com/keyreg/keyreg/events"
)

// Bounds of the idempotency cache.
const (
	idemTTL           = time.Hour
	idemMaxEntries    = 10_000
	idemMaxBytes      = 32 << 20  // all kept answers together
	idemMaxEntryBytes = 256 << 10 // a larger answer is not kept
	idemMaxKeyLen     = 255
)

// idempotency makes writes with an Idempotency-Key header safe to retry. It serves the
// operations that declare the header, and only callers that authenticate: anyone else goes
// straight to the handler, which answers 401 or 403, and never touches the cache. Answers
// are kept per principal (the caller's registry key id), method, path and Idempotency-Key.
// The first request runs; a successful (2xx) answer is kept for ttl, and a retry with the
// same body gets it again (header Idempotent-Replayed: true) and appends nothing. Since the
// caller authenticates on every request, a key revoked or used from outside its allowlist
// since gets 401 or 403, not the kept answer. The same key with another body is 409
// idempotency_key_reused; while the first is still running, 409 idempotency_key_in_use.
// Other answers (4xx, 5xx) are not kept: a retry runs again.
//
// The key also fixes the id of the command's first event (a ULID derived from principal,
// method, path, key and body), and the log dedupes on event ids, so a retry after a
// restart or on another node, where no answer is kept, still appends nothing; it then
// answers as the first try did, with the state as of the command's last event (its ETag
// and Keyreg-Sequence) and Idempotent-Replayed: true (see answerView), but for a created
// or rotated key without the secret, which is never stored.
//
// The cache is bounded in entries and in bytes. An entry is in the queue (oldest first)
// and in the index at once; remove is the only way out of both.
type idempotency struct {
	ttl           time.Duration
	maxEntries    int
	maxBytes      int
	maxEntryBytes int

	mu    sync.Mutex
	size  int                      // bytes of the kept answers
	order *list.List               // of *idemEntry, oldest (and so soonest to expire) first
	index map[string]*list.Element // scope -> its element in order
}

type idemEntry struct {
	scope    string
	bodyHash [32]byte
	done     chan struct{} // closed when the first request has finished
	expires  time.Time
	el       *list.Element // nil once removed
	size     int
	status   int
	header   http.Header
	body     []byte
}

func newIdempotency(ttl time.Duration, maxEntries, maxBytes, maxEntryBytes int) *idempotency {
	return &idempotency{ttl: ttl, maxEntries: maxEntries, maxBytes: maxBytes, maxEntryBytes: maxEntryBytes,
		order: list.New(), index: map[string]*list.Element{}}
}

// begin returns the entry of scope, found true if it exists (running or kept), or a new
// running entry.
func (m *idempotency) begin(scope string, bodyHash [32]byte, now time.Time) (*idemEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for el := m.order.Front(); el != nil && !now.Before(el.Value.(*idemEntry).expires); el = m.order.Front() {
		m.remove(el)
	}
	if el, ok := m.index[scope]; ok {
		return el.Value.(*idemEntry), true
	}
	for m.order.Len() >= m.maxEntries {
		m.remove(m.order.Front())
	}
	e := &idemEntry{scope: scope, bodyHash: bodyHash, done: make(chan struct{}), expires: now.Add(m.ttl)}
	e.el = m.order.PushBack(e)
	m.index[scope] = e.el
	return e, false
}

// finish keeps the answer of e's request if keep and it fits, or forgets e so that a
// retry runs again; then it releases the requests waiting on e.
func (m *idempotency) finish(e *idemEntry, keep bool, status int, header http.Header, body []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer close(e.done)
	if e.el == nil { // evicted while running
		return
	}
	size := len(e.scope) + len(body) + 256
	for k, vs := range header {
		size += len(k)
		for _, v := range vs {
			size += len(v)
		}
	}
	if !keep || size > m.maxEntryBytes {
		m.remove(e.el)
		return
	}
	e.status, e.header, e.body, e.size = status, header, body, size
	m.size += size
	for m.size > m.maxBytes {
		m.remove(m.order.Front())
	}
}

// remove takes el out of the queue and the index together.
func (m *idempotency) remove(el *list.Element) {
	e := m.order.Remove(el).(*idemEntry)
	delete(m.index, e.scope)
	m.size -= e.size
	e.el = nil
}

// len returns the number of entries in the queue and in the index (always equal).
func (m *idempotency) len() (queue, index int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.order.Len(), len(m.index)
}

// takesIdempotencyKey reports whether op declares the Idempotency-Key header.
func takesIdempotencyKey(op *huma.Operation) bool {
	for _, p := range op.Parameters {
		if p.In == "header" && strings.EqualFold(p.Name, "Idempotency-Key") {
			return true
		}
	}
	return false
}

// idempotencyMiddleware serves Idempotency-Key (see idempotency). It runs after
// callerMiddleware, so the caller's token and address are those every handler sees.
func (a *API) idempotencyMiddleware(ctx huma.Context, next func(huma.Context)) {
	key := ctx.Header("Idempotency-Key")
	if key == "" || !takesIdempotencyKey(ctx.Operation()) {
		next(ctx)
		return
	}
	if len(key) > idemMaxKeyLen {
		writeProblemTo(ctx, invalid("Idempotency-Key", key, "Idempotency-Key must be at most 255 characters"))
		return
	}
	p, err := a.authenticate(ctx.Context())
	if err != nil {
		next(ctx) // the handler refuses the caller
		return
	}
	body := requestBody(ctx.Context())
	bodyHash := sha256.Sum256(body)
	request := p.KeyID + "\x00" + ctx.Method() + "\x00" + ctx.URL().Path + "\x00" + key
	// An answer is replayed only to the key as it was when the answer was kept: a key whose
	// permissions changed since runs the request again, and is authorized anew.
	scope := request + "\x00" + permissionsKey(p.Permissions)
	e, found := a.idem.begin(scope, bodyHash, a.d.Now())
	if found {
		select {
		case <-e.done:
		default:
			writeProblemTo(ctx, problem(http.StatusConflict, CodeIdempotencyBusy, "a request with this Idempotency-Key is still running"))
			return
		}
		if e.bodyHash != bodyHash {
			writeProblemTo(ctx, problem(http.StatusConflict, CodeIdempotencyReuse, "this Idempotency-Key was used with another request body"))
			return
		}
		for k, vs := range e.header {
			for _, v := range vs {
				ctx.AppendHeader(k, v)
			}
		}
		ctx.SetHeader("Idempotent-Replayed", "true")
		ctx.SetStatus(e.status)
		ctx.BodyWriter().Write(e.body)
		return
	}

	idSeed := sha256.Sum256([]byte(request + "\x00" + string(bodyHash[:])))
	var id ulid.ULID
	copy(id[:], idSeed[:16])
	c := callerOf(ctx.Context())
	c.eventID = id.String()
	rec := &recordingContext{humaContext: huma.WithValue(ctx, callerKey, c), header: http.Header{}, limit: a.idem.maxEntryBytes}
	completed := false
	defer func() { // also when next panics: the entry must not stay "in use"
		keep := completed && rec.status >= 200 && rec.status < 300 && !rec.overflow
		a.idem.finish(e, keep, rec.status, rec.header, rec.body.Bytes())
	}()
	next(rec)
	completed = true
}

// humaContext names huma.Context for embedding (its field would clash with the method
// Context).
type humaContext = huma.Context

// recordingContext passes a handler's answer through and keeps a copy, up to limit bytes
// of body.
type recordingContext struct {
	humaContext
	status   int
	header   http.Header
	body     bytes.Buffer
	limit    int
	overflow bool // the body went beyond limit and is not all in body
}

func (c *recordingContext) SetStatus(code int) {
	c.status = code
	c.humaContext.SetStatus(code)
}

func (c *recordingContext) SetHeader(name, value string) {
	c.header.Set(name, value)
	c.humaContext.SetHeader(name, value)
}

func (c *recordingContext) AppendHeader(name, value string) {
	c.header.Add(name, value)
	c.humaContext.AppendHeader(name, value)
}

func (c *recordingContext) BodyWriter() io.Writer { return recordingWriter{c} }

type recordingWriter struct{ c *recordingContext }

func (w recordingWriter) Write(b []byte) (int, error) {
	if w.c.body.Len()+len(b) > w.c.limit {
		w.c.overflow = true
	} else {
		w.c.body.Write(b)
	}
	return w.c.humaContext.BodyWriter().Write(b)
}

type bodyKey struct{}

// requestBody returns the body read by API.readBody.
func requestBody(ctx context.Context) []byte {
	b, _ := ctx.Value(bodyKey{}).([]byte)
	return b
}

// writeProblem answers p on a plain http.ResponseWriter.
func writeProblem(w http.ResponseWriter, p *Problem) {
	for k, v := range p.headers {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

// writeProblemTo answers p from a huma middleware.
func writeProblemTo(ctx huma.Context, p *Problem) {
	for k, vs := range p.headers {
		for _, v := range vs {
			ctx.AppendHeader(k, v)
		}
	}
	ctx.SetHeader("Content-Type", "application/problem+json")
	ctx.SetStatus(p.Status)
	json.NewEncoder(ctx.BodyWriter()).Encode(p)
}

// permissionsKey is a principal's permissions as one string, for idempotency scopes.
func permissionsKey(perms []events.Permission) string {
	var b strings.Builder
	for _, p := range perms {
		b.WriteString(string(p))
		b.WriteByte(',')
	}
	return b.String()
}
