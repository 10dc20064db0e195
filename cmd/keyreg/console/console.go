// Package console is keyreg's web console: the API Keys page that `keyreg serve` serves at
// "/". The page (static/: HTML, CSS and plain JavaScript modules, embedded in the binary)
// is a client of the JSON API (/v1): this package only serves the files, exchanges a
// registry key for a session cookie, and hands the API each request of a signed-in page
// with the session's key as its bearer token, so that the API checks the key again on
// every request (a revoked or expired key ends the session at once).
//
// It imports only the standard library and package wire; the server mounts it in front
// of the API (New(api, ...)).
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
)

//go:embed static
var static embed.FS

// Options change how the console works.
type Options struct {
	// Secure marks the session cookie Secure: set it when the server speaks TLS.
	Secure bool
	// SessionTTL is how long a session lasts from sign-in (0: DefaultSessionTTL).
	SessionTTL time.Duration
	// MaxSessions bounds the sessions held at once (0: DefaultMaxSessions).
	MaxSessions int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultSessionTTL  = 8 * time.Hour
	DefaultMaxSessions = 10000
)

// Handler serves the console and passes every other request to the API.
type Handler struct {
	api      http.Handler
	files    http.Handler
	sessions *sessions
	secure   bool
}

// New returns the console in front of api: "/" and "/console/..." are the console's, every
// other path goes to api, with the session's bearer token when it carries a session cookie
// and no Authorization header.
func New(api http.Handler, o Options) *Handler {
	if o.SessionTTL <= 0 {
		o.SessionTTL = DefaultSessionTTL
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return &Handler{
		api:      api,
		files:    http.StripPrefix("/console/", http.FileServerFS(sub)),
		sessions: newSessions(o.SessionTTL, o.MaxSessions, o.Now),
		secure:   o.Secure,
	}
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on /")
			return
		}
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, static, "static/index.html")
	case p == sessionPath:
		securityHeaders(w.Header())
		h.serveSession(w, r)
	case strings.HasPrefix(p, "/console/"):
		if strings.HasSuffix(p, "/") { // no directory listings
			writeProblem(w, http.StatusNotFound, "not_found", "no such file: "+p)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeProblem(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed on "+p)
			return
		}
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		h.files.ServeHTTP(w, r)
	default:
		h.serveAPI(w, r)
	}
}

// contentSecurityPolicy allows the page its own scripts, styles and API calls only: no
// inline script or style, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// securityHeaders sets the headers every console answer carries.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
}

// serveAPI passes r to the API. A request with a session cookie and no Authorization
// header goes as the session's key; a write so must also pass the CSRF checks.
func (h *Handler) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" {
		h.api.ServeHTTP(w, r)
		return
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		h.api.ServeHTTP(w, r)
		return
	}
	s, ok := h.sessions.get(c.Value)
	if !ok { // ended, or opened on another node or before a restart: the API answers as to anyone
		h.api.ServeHTTP(w, r)
		return
	}
	if isWrite(r.Method) {
		if err := checkCSRF(r, s, h.sessions.cross); err != "" {
			writeProblem(w, http.StatusForbidden, "csrf", err)
			return
		}
	}
	r = r.Clone(httpapi.WithKeyDigest(r.Context(), s.digest))
	// A browser sends only Latin-1 header values: the page sends the reason for a change
	// percent-encoded, and the API gets it as UTF-8.
	if enc := r.Header.Get(reasonHeader); enc != "" {
		reason, err := url.PathUnescape(enc)
		if err != nil || !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl) {
			writeFieldProblem(w, "reason", enc, "the reason must be one line of percent-encoded UTF-8 text")
			return
		}
		r.Header.Set("Keyreg-Reason", reason)
		r.Header.Del(reasonHeader)
	}
	r.Header.Del("Cookie")
	r.Header.Del(csrfHeader)
	h.api.ServeHTTP(w, r)
}

// reasonHeader carries the reason for a change from the page, percent-encoded UTF-8.
const reasonHeader = "X-Keyreg-Reason-Encoded"

func isWrite(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}
