// Package client is a small typed Go client of keyreg's HTTP API (/v1). It speaks JSON,
// sends the registry key as a bearer token, and turns problem answers (RFC 9457) into
// *Error. It decodes the API's bodies into package wire's types, which httpapi answers
// with, and links nothing of keyreg's server side (no NATS, Pebble, huma or Prometheus).
//
// A read of keys or identifiers takes ReadOptions: AsOf (or AsOfSeq, AsOfTime) reads the
// state as it was at a past moment.
//
// Read-your-writes on any node: a Client remembers the highest stream sequence its writes
// were answered with (header Keyreg-Sequence) and sends it on its reads (header
// Keyreg-Min-Sequence), so a read on any node of a cluster waits until that node has
// applied the client's own writes. Sequence and ObserveSequence carry it between clients
// (or processes); SetReadYourWrites(false) turns it off.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// Client calls one keyreg server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
	seq   atomic.Uint64 // the highest Keyreg-Sequence seen or observed
	noRYW atomic.Bool   // reads send no Keyreg-Min-Sequence
}

// New returns a client of the server at addr ("http://host:port"; a bare "host:port" means
// http), authenticating with token, the secret of a registry key ("" sends no
// Authorization header: only the public audit key can be read then). A nil httpClient means
// http.DefaultClient.
func New(addr, token string, httpClient *http.Client) *Client {
	addr = strings.TrimRight(strings.TrimSpace(addr), "/")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: addr, token: token, hc: httpClient}
}

// Addr returns the server's base URL.
func (c *Client) Addr() string { return c.base }

// Sequence returns the highest stream sequence the client has seen a write answered with
// (header Keyreg-Sequence) or was given by ObserveSequence: the one its reads send as
// Keyreg-Min-Sequence. 0: none yet.
func (c *Client) Sequence() uint64 { return c.seq.Load() }

// ObserveSequence raises the remembered sequence to seq when it is higher, e.g. to one a
// write answered another client or process: the reads that follow then see that write on
// any node.
func (c *Client) ObserveSequence(seq uint64) {
	for {
		cur := c.seq.Load()
		if seq <= cur || c.seq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// SetReadYourWrites turns read-your-writes off (false: reads send no Keyreg-Min-Sequence
// and answer at once with what the node has applied; the sequence is still remembered)
// or on again (true, the default).
func (c *Client) SetReadYourWrites(on bool) { c.noRYW.Store(!on) }

// minSeq returns the Keyreg-Min-Sequence a request sends: the remembered sequence, on
// reads (GET, and verify) while read-your-writes is on; 0: none.
func (c *Client) minSeq(method, path string) uint64 {
	if c.noRYW.Load() || (method != http.MethodGet && path != "/v1/verify") {
		return 0
	}
	return c.seq.Load()
}

// observe remembers the Keyreg-Sequence of a successful answer.
func (c *Client) observe(resp *http.Response) {
	if v, err := strconv.ParseUint(resp.Header.Get(wire.SequenceHeader), 10, 64); err == nil {
		c.ObserveSequence(v)
	}
}

// staleSequence reports whether err refuses the sequence sent as Keyreg-Min-Sequence as
// beyond the stream (400 naming the header: the client never sends a malformed one). The
// sequence is then of another stream (one restored or created again since), and
// forgotten.
func (c *Client) staleSequence(err *Error, sent uint64) bool {
	if sent == 0 || err.Status != http.StatusBadRequest || err.Problem.Field != wire.MinSequenceHeader {
		return false
	}
	c.seq.CompareAndSwap(sent, 0)
	return true
}

// WriteOptions are the optional headers of a write. The zero value sends none.
type WriteOptions struct {
	// IdempotencyKey makes the write safe to retry: the same key and body give the same
	// answer and no second change.
	IdempotencyKey string
	// IfMatch is the version (ETag) the resource must still have, e.g. "42" or `"42"`;
	// otherwise the server answers 412.
	IfMatch string
	// Reason is recorded in the change's event (header Keyreg-Reason).
	Reason string
}

// Error is a non-2xx answer of the server.
type Error struct {
	Status  int
	Problem wire.Problem
}

// Error returns one line: the status, the problem code and the detail, e.g.
// `400 invalid_input: invalid allowlist "10.0.0.0/33": not an IP address or CIDR prefix`.
func (e *Error) Error() string {
	p := e.Problem
	code := p.Code
	if code == "" {
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(e.Status), " ", "_"))
	}
	detail := p.Detail
	if detail == "" {
		detail = p.Title
	}
	if detail == "" {
		detail = http.StatusText(e.Status)
	}
	msg := fmt.Sprintf("%d %s: %s", e.Status, code, detail)
	if p.Field != "" && !strings.Contains(detail, p.Field) {
		msg += " (field " + p.Field
		if p.Value != "" {
			msg += " " + strconv.Quote(p.Value)
		}
		msg += ")"
	}
	if p.RetryIn > 0 {
		msg += fmt.Sprintf(" (retry in %ds)", p.RetryIn)
	}
	return strings.Join(strings.Fields(msg), " ")
}

// CreateKeyRequest is a new key. Permissions and Allowlist may be empty (no allowlist:
// any address); ExpiresAt nil: the key does not expire.
type CreateKeyRequest struct {
	Name        string     `json:"name"`
	Permissions []string   `json:"permissions,omitempty"`
	Allowlist   []string   `json:"allowlist,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// KeyUpdate is a change of a key's name, permissions or expiry; nil fields stay as they
// are. ClearExpiry removes the expiry (ExpiresAt must then be nil).
type KeyUpdate struct {
	Name        *string
	Permissions *[]string
	ExpiresAt   *time.Time
	ClearExpiry bool
}

// RegisterIdentifierRequest is a new identifier; Platform is for kind app.
type RegisterIdentifierRequest struct {
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Platform string `json:"platform,omitempty"`
}

// History is a page of a key's history, oldest first. Next, when not 0, is the after
// value of the next page.
type History struct {
	Events []wire.HistoryEntry `json:"events"`
	Next   uint64              `json:"next,omitempty"`
}

// CreateWorkspace creates workspace id (a slug) named name. It needs keyreg.admin.
func (c *Client) CreateWorkspace(ctx context.Context, id, name string, o WriteOptions) (wire.Workspace, error) {
	var out wire.Workspace
	body := struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}{id, name}
	err := c.do(ctx, http.MethodPost, "/v1/workspaces", nil, body, o, &out)
	return out, err
}

// CreateKey creates a key in workspace ws. The answer holds its secret, the only time
// it is shown (empty when an Idempotency-Key retry finds a key created before a server
// restart).
func (c *Client) CreateKey(ctx context.Context, ws string, req CreateKeyRequest, o WriteOptions) (wire.KeyWithSecret, error) {
	var out wire.KeyWithSecret
	err := c.do(ctx, http.MethodPost, keysPath(ws), nil, req, o, &out)
	return out, err
}

// GetKey returns key id of workspace ws (as it was at a moment, with AsOf).
func (c *Client) GetKey(ctx context.Context, ws, id string, opts ...ReadOption) (wire.Key, error) {
	var out wire.Key
	err := c.do(ctx, http.MethodGet, keyPath(ws, id), readValues(nil, opts), nil, WriteOptions{}, &out)
	return out, err
}

// UpdateKey changes the fields of u that are set, together or not at all.
func (c *Client) UpdateKey(ctx context.Context, ws, id string, u KeyUpdate, o WriteOptions) (wire.Key, error) {
	if u.ClearExpiry && u.ExpiresAt != nil {
		return wire.Key{}, errors.New("client: KeyUpdate sets both ExpiresAt and ClearExpiry")
	}
	body := map[string]any{}
	if u.Name != nil {
		body["name"] = *u.Name
	}
	if u.Permissions != nil {
		perms := *u.Permissions
		if perms == nil {
			perms = []string{}
		}
		body["permissions"] = perms
	}
	switch {
	case u.ClearExpiry:
		body["expires_at"] = nil
	case u.ExpiresAt != nil:
		body["expires_at"] = u.ExpiresAt
	}
	var out wire.Key
	err := c.do(ctx, http.MethodPatch, keyPath(ws, id), nil, body, o, &out)
	return out, err
}

// PutAllowlist replaces key id's IP allowlist (addresses and CIDR prefixes); an empty
// list allows any address.
func (c *Client) PutAllowlist(ctx context.Context, ws, id string, allowlist []string, o WriteOptions) (wire.Key, error) {
	if allowlist == nil {
		allowlist = []string{}
	}
	body := struct {
		Allowlist []string `json:"allowlist"`
	}{allowlist}
	var out wire.Key
	err := c.do(ctx, http.MethodPut, keyPath(ws, id)+"/allowlist", nil, body, o, &out)
	return out, err
}

// RotateKey issues a new secret for key id, shown in this answer only; the old secret
// keeps working for grace (whole seconds; 0: it stops at once).
func (c *Client) RotateKey(ctx context.Context, ws, id string, grace time.Duration, o WriteOptions) (wire.KeyWithSecret, error) {
	if grace < 0 || grace%time.Second != 0 {
		return wire.KeyWithSecret{}, fmt.Errorf("client: grace %s is not a whole number of seconds >= 0", grace)
	}
	body := struct {
		GraceSeconds int64 `json:"grace_seconds"`
	}{int64(grace / time.Second)}
	var out wire.KeyWithSecret
	err := c.do(ctx, http.MethodPost, keyPath(ws, id)+"/rotate", nil, body, o, &out)
	return out, err
}

// RevokeKey revokes key id for good; its history is kept.
func (c *Client) RevokeKey(ctx context.Context, ws, id string, o WriteOptions) (wire.Key, error) {
	var out wire.Key
	err := c.do(ctx, http.MethodDelete, keyPath(ws, id), nil, nil, o, &out)
	return out, err
}

// KeyHistory returns up to limit events of key id after stream sequence after, oldest
// first (limit 0: the server's default, 100).
func (c *Client) KeyHistory(ctx context.Context, ws, id string, after uint64, limit int) (History, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out History
	err := c.do(ctx, http.MethodGet, keyPath(ws, id)+"/history", q, nil, WriteOptions{}, &out)
	return out, err
}

// RegisterIdentifier registers an identifier in workspace ws. Names are unique per
// workspace and kind among active identifiers, ignoring case (409 name_taken).
func (c *Client) RegisterIdentifier(ctx context.Context, ws string, req RegisterIdentifierRequest, o WriteOptions) (wire.Identifier, error) {
	var out wire.Identifier
	err := c.do(ctx, http.MethodPost, identifiersPath(ws), nil, req, o, &out)
	return out, err
}

// GetIdentifier returns identifier id of workspace ws (as it was at a moment, with AsOf).
func (c *Client) GetIdentifier(ctx context.Context, ws, id string, opts ...ReadOption) (wire.Identifier, error) {
	var out wire.Identifier
	err := c.do(ctx, http.MethodGet, identifierPath(ws, id), readValues(nil, opts), nil, WriteOptions{}, &out)
	return out, err
}

// RenameIdentifier renames identifier id.
func (c *Client) RenameIdentifier(ctx context.Context, ws, id, name string, o WriteOptions) (wire.Identifier, error) {
	body := struct {
		Name string `json:"name"`
	}{name}
	var out wire.Identifier
	err := c.do(ctx, http.MethodPatch, identifierPath(ws, id), nil, body, o, &out)
	return out, err
}

// RetireIdentifier retires identifier id; its name becomes free again.
func (c *Client) RetireIdentifier(ctx context.Context, ws, id string, o WriteOptions) (wire.Identifier, error) {
	var out wire.Identifier
	err := c.do(ctx, http.MethodDelete, identifierPath(ws, id), nil, nil, o, &out)
	return out, err
}

// Verify asks whether secret key may be used from end-user address ip for permission ("":
// none checked). An invalid key is a normal answer (Valid false and its Code), not an
// error; AppliedSeq is the stream sequence the server's views had applied. It needs a
// token holding keyreg.verify, and answers only for keys of that token's workspace
// (keyreg.admin: every workspace): another workspace's key answers NOT_FOUND. Answers
// that find no key are rate-limited per end-user address and per token (an *Error with
// Status 429).
func (c *Client) Verify(ctx context.Context, key, ip, permission string) (wire.VerifyResponse, error) {
	body := wire.VerifyRequest{Key: key, IP: ip, Permission: permission}
	var out wire.VerifyResponse
	err := c.do(ctx, http.MethodPost, "/v1/verify", nil, body, WriteOptions{}, &out)
	return out, err
}

func keysPath(ws string) string { return "/v1/workspaces/" + url.PathEscape(ws) + "/keys" }

func keyPath(ws, id string) string { return keysPath(ws) + "/" + url.PathEscape(id) }

func identifiersPath(ws string) string {
	return "/v1/workspaces/" + url.PathEscape(ws) + "/identifiers"
}

func identifierPath(ws, id string) string { return identifiersPath(ws) + "/" + url.PathEscape(id) }

// maxResponse bounds the answers read, success or problem.
const maxResponse = 64 << 20

// do sends one request with JSON body in (nil: no body) and decodes a 2xx answer's JSON
// into out. A read sends the remembered sequence (minSeq); should the server refuse it as
// beyond its stream, the read is sent again without it.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in any, o WriteOptions, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("client: encode request: %w", err)
		}
		body = b
	}
	seq := c.minSeq(method, path)
	err := c.send(ctx, method, path, query, body, o, seq, out)
	if e := (*Error)(nil); errors.As(err, &e) && c.staleSequence(e, seq) {
		err = c.send(ctx, method, path, query, body, o, 0, out)
	}
	return err
}

// send sends one request with body (nil: none) and Keyreg-Min-Sequence minSeq (0: none),
// remembers the answer's Keyreg-Sequence, and decodes a 2xx answer's JSON into out.
func (c *Client) send(ctx context.Context, method, path string, query url.Values, in []byte, o WriteOptions, minSeq uint64, out any) error {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("client: bad server address %q: %w", c.base, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if minSeq > 0 {
		req.Header.Set(wire.MinSequenceHeader, strconv.FormatUint(minSeq, 10))
	}
	for _, h := range []struct{ name, value string }{
		{"Idempotency-Key", o.IdempotencyKey}, {"If-Match", ifMatch(o.IfMatch)}, {"Keyreg-Reason", o.Reason},
	} {
		if h.value == "" {
			continue
		}
		if strings.ContainsFunc(h.value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("client: %s must be one line without control characters", h.name)
		}
		req.Header.Set(h.name, h.value)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("cannot reach keyreg at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("%s %s: read answer from %s: %w", method, path, c.base, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return problemError(resp, data)
	}
	c.observe(resp)
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer from %s: %w", method, path, c.base, err)
	}
	return nil
}

// ifMatch quotes a bare version as an entity tag.
func ifMatch(v string) string {
	v = strings.TrimSpace(v)
	if v == "" || v == "*" || strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `W/`) {
		return v
	}
	return strconv.Quote(v)
}

// problemError decodes an error answer; one that is not a problem (a proxy's page, say)
// keeps its status and the start of its text.
func problemError(resp *http.Response, data []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if strings.HasSuffix(ct, "json") && json.Unmarshal(data, &e.Problem) == nil && (e.Problem.Code != "" || e.Problem.Detail != "") {
		return e
	}
	e.Problem = wire.Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	if text := strings.Join(strings.Fields(string(data)), " "); text != "" {
		if len(text) > 200 {
			text = strings.ToValidUTF8(text[:200], "") + "..."
		}
		e.Problem.Detail = text
	}
	return e
}
