package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// Sessions. A session is a random id (the cookie's value, 256 bits) that maps, in this
// process's memory only, to the registry key it was opened with, known by its secret's
// digest (SHA-256, as the log and the views keep it: the secret itself is dropped once
// signed in), and a CSRF token. The browser holds the id, never the key. A restarted server, or another node of a cluster,
// does not know the id: the page then asks to sign in again (behind a load balancer, route
// a browser to one node: sticky sessions).
const (
	sessionPath = "/console/session"
	cookieName  = "keyreg_session"
	csrfHeader  = "X-Keyreg-Csrf"
)

type session struct {
	digest  [32]byte // events.SecretDigest of the key's secret
	csrf    string
	expires time.Time
}

type sessions struct {
	mu    sync.Mutex
	m     map[string]*session
	ttl   time.Duration
	max   int
	now   func() time.Time
	cross *http.CrossOriginProtection
}

func newSessions(ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, ttl: ttl, max: max, now: now, cross: http.NewCrossOriginProtection()}
}

// maxPerKey bounds the sessions of one key: signing in again ends its oldest, so one key
// cannot fill the table and keep others out.
const maxPerKey = 10

// open starts a session for the key of secret digest d; ok is false when too many are open.
func (s *sessions) open(d [32]byte) (id string, sess *session, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	oldest, count := "", 0
	for id, v := range s.m {
		if v.digest == d {
			count++
			if oldest == "" || v.expires.Before(s.m[oldest].expires) {
				oldest = id
			}
		}
	}
	if count >= maxPerKey {
		delete(s.m, oldest)
	}
	if len(s.m) >= s.max {
		for id, v := range s.m {
			if !now.Before(v.expires) {
				delete(s.m, id)
			}
		}
		if len(s.m) >= s.max {
			return "", nil, false
		}
	}
	id = randomToken()
	sess = &session{digest: d, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.m[id] = sess
	return id, sess, true
}

// get returns the live session of id.
func (s *sessions) get(id string) (*session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[id]
	if ok && !s.now().Before(v.expires) {
		delete(s.m, id)
		return nil, false
	}
	return v, ok
}

func (s *sessions) close(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkCSRF refuses a write of a session that is cross-site (Sec-Fetch-Site or Origin,
// http.CrossOriginProtection) or lacks the session's token in the X-Keyreg-Csrf header.
// It returns why, or "".
func checkCSRF(r *http.Request, s *session, cross *http.CrossOriginProtection) string {
	if err := cross.Check(r); err != nil {
		return "cross-origin request refused: " + err.Error()
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(s.csrf)) != 1 {
		return "a console write must carry the session's token in the " + csrfHeader + " header"
	}
	return ""
}

// sessionInfo is what the page learns of its session: never the key.
type sessionInfo struct {
	CSRF      string    `json:"csrf"`
	ExpiresAt time.Time `json:"expires_at"`
}

// serveSession serves /console/session: GET (the session's CSRF token), POST {"secret"}
// (sign in) and DELETE (sign out).
func (h *Handler) serveSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	var current *session
	var id string
	if c, err := r.Cookie(cookieName); err == nil {
		id = c.Value
		current, _ = h.sessions.get(id)
	}
	switch r.Method {
	case http.MethodGet:
		if current == nil {
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "not signed in")
			return
		}
		writeJSON(w, http.StatusOK, sessionInfo{CSRF: current.csrf, ExpiresAt: current.expires})
	case http.MethodPost:
		h.signIn(w, r)
	case http.MethodDelete:
		if current != nil {
			if why := checkCSRF(r, current, h.sessions.cross); why != "" {
				writeProblem(w, http.StatusForbidden, "csrf", why)
				return
			}
			h.sessions.close(id)
		}
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: h.secure, SameSite: http.SameSiteStrictMode})
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+sessionPath)
	}
}

// signIn checks the posted secret with the API (GET /v1/workspaces as that key, from the
// caller's address, so the key's allowlist holds) and opens a session for it.
func (h *Handler) signIn(w http.ResponseWriter, r *http.Request) {
	if err := h.sessions.cross.Check(r); err != nil {
		writeProblem(w, http.StatusForbidden, "csrf", "cross-origin sign-in refused: "+err.Error())
		return
	}
	var in struct {
		Secret string `json:"secret"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err != nil || json.Unmarshal(body, &in) != nil || in.Secret == "" {
		writeFieldProblem(w, "secret", "", "paste the secret of a registry key (kr_...)")
		return
	}
	check := httptest.NewRequestWithContext(r.Context(), http.MethodGet, "/v1/workspaces", nil)
	check.RemoteAddr, check.Host = r.RemoteAddr, r.Host
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		check.Header["X-Forwarded-For"] = xff
	}
	check.Header.Set("Authorization", "Bearer "+in.Secret)
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, check)
	if rec.Code != http.StatusOK {
		// The API's problem (unknown, revoked, expired key, address not allowed), as is.
		w.Header().Set("Content-Type", rec.Header().Get("Content-Type"))
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		return
	}
	id, s, ok := h.sessions.open(events.SecretDigest(in.Secret))
	if !ok {
		writeProblem(w, http.StatusServiceUnavailable, "unavailable", "too many console sessions are open; retry later")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", Expires: s.expires, MaxAge: int(h.sessions.ttl.Seconds()),
		HttpOnly: true, Secure: h.secure, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, sessionInfo{CSRF: s.csrf, ExpiresAt: s.expires})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(wire.Problem{Title: http.StatusText(status), Status: status, Code: code, Detail: detail})
}

// writeFieldProblem answers 400 invalid_input naming the field and its bad value.
func writeFieldProblem(w http.ResponseWriter, field, value, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(wire.Problem{Title: "Bad Request", Status: http.StatusBadRequest, Code: "invalid_input", Field: field, Value: value, Detail: detail})
}
