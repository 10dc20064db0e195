package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// idempotency makes writes with an Idempotency-Key header safe to retry. The first request
// with a key runs; its response is kept in memory for ttl, and a retry with the same key,
// caller and body gets the same response (header Idempotent-Replayed: true) and appends
// nothing. The same key with another body is 409 idempotency_key_reused; while the first
// is still running, 409 idempotency_key_in_use.
//
// The key also fixes the id of the command's first event (a ULID derived from caller,
// route, key and body), and the log dedupes on event ids, so a retry after a restart, when
// the kept response is gone, still appends nothing; it then answers with the current
// state, and for a created or rotated key without the secret, which is never stored.
type idempotency struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]*idemEntry
	fifo    []string
}

type idemEntry struct {
	bodyHash [32]byte
	done     chan struct{}
	expires  time.Time
	status   int
	header   http.Header
	body     []byte
}

func newIdempotency(ttl time.Duration, max int) *idempotency {
	return &idempotency{ttl: ttl, max: max, entries: map[string]*idemEntry{}}
}

type eventIDKey struct{}

func eventIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(eventIDKey{}).(string)
	return id
}

func (m *idempotency) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if key == "" || r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		if len(key) > 255 {
			writeProblem(w, invalid("Idempotency-Key", key[:32]+"...", "Idempotency-Key must be at most 255 characters"))
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				writeProblem(w, problem(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is larger than "+strconv.Itoa(MaxBody)+" bytes"))
				return
			}
			writeProblem(w, problem(http.StatusBadRequest, CodeInvalid, "cannot read request body"))
			return
		}
		auth := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		scope := string(auth[:]) + "\x00" + r.Method + "\x00" + r.URL.Path + "\x00" + key
		bodyHash := sha256.Sum256(body)

		e, found := m.begin(scope, bodyHash)
		if found {
			select {
			case <-e.done:
			default:
				writeProblem(w, problem(http.StatusConflict, CodeIdempotencyBusy, "a request with this Idempotency-Key is still running"))
				return
			}
			if e.bodyHash != bodyHash {
				writeProblem(w, problem(http.StatusConflict, CodeIdempotencyReuse, "this Idempotency-Key was used with another request body"))
				return
			}
			for k, v := range e.header {
				w.Header()[k] = v
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(e.status)
			w.Write(e.body)
			return
		}

		idSeed := sha256.Sum256([]byte(scope + "\x00" + string(bodyHash[:])))
		var id ulid.ULID
		copy(id[:], idSeed[:16])
		r = r.WithContext(context.WithValue(r.Context(), eventIDKey{}, id.String()))
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		m.finish(scope, e, rec)
	})
}

// begin returns the entry of scope, found true if it exists, or a new running entry.
func (m *idempotency) begin(scope string, bodyHash [32]byte) (*idemEntry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if e, ok := m.entries[scope]; ok && now.Before(e.expires) {
		return e, true
	}
	for len(m.fifo) > 0 && (len(m.entries) >= m.max || !now.Before(m.entries[m.fifo[0]].expires)) {
		delete(m.entries, m.fifo[0])
		m.fifo = m.fifo[1:]
	}
	e := &idemEntry{bodyHash: bodyHash, done: make(chan struct{}), expires: now.Add(m.ttl)}
	m.entries[scope] = e
	m.fifo = append(m.fifo, scope)
	return e, false
}

// finish keeps a response worth replaying, or forgets the key so a retry runs again.
func (m *idempotency) finish(scope string, e *idemEntry, rec *recorder) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec.status >= 500 || rec.status == http.StatusTooManyRequests {
		delete(m.entries, scope)
	} else {
		e.status, e.header, e.body = rec.status, rec.Header().Clone(), rec.buf.Bytes()
	}
	close(e.done)
}

type recorder struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	for k, v := range p.headers {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
