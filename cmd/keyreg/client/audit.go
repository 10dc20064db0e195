package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// AuditQuery selects events of a workspace's audit log. The zero value selects all.
type AuditQuery struct {
	Key   string    // only the events of this key (its id)
	Actor string    // only the events caused by this key id
	Types []string  // only these types: keyreg.key.revoked.v1, key.revoked or revoked
	Since time.Time // only events at or after this time
	Until time.Time // only events at or before this time
	After uint64    // only events after this stream sequence (a page's Next)
	Limit int       // AuditLog only: at most this many (0: the server's default, 100)
}

func (q AuditQuery) values() url.Values {
	v := url.Values{}
	if q.Key != "" {
		v.Set("key", q.Key)
	}
	if q.Actor != "" {
		v.Set("actor", q.Actor)
	}
	for _, t := range q.Types {
		v.Add("type", t)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.Format(time.RFC3339Nano))
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatUint(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

func auditPath(ws string) string { return "/v1/workspaces/" + url.PathEscape(ws) + "/audit" }

// AuditLog returns a page of workspace ws's audit log, oldest first: the stored
// CloudEvents with their stream sequences. Next, when not 0, is the After of the next
// page. It needs keyreg.audit.read.
func (c *Client) AuditLog(ctx context.Context, ws string, q AuditQuery) (History, error) {
	var out History
	err := c.do(ctx, http.MethodGet, auditPath(ws), q.values(), nil, WriteOptions{}, &out)
	return out, err
}

// Audit export formats.
const (
	ExportJSONL = "jsonl"
	ExportCSV   = "csv"
)

// AuditExport streams workspace ws's audit export in format (ExportJSONL, the default,
// or ExportCSV) to w, however long it is (no client timeout applies), and returns the
// bytes written. q.Limit is ignored. A JSON Lines export that fails midway ends without
// its checkpoint line, so it does not verify.
func (c *Client) AuditExport(ctx context.Context, ws string, q AuditQuery, format string, w io.Writer) (int64, error) {
	q.Limit = 0
	v := q.values()
	if format != "" {
		v.Set("format", format)
	}
	u := c.base + auditPath(ws) + "/export?" + v.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("client: bad server address %q: %w", c.base, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if seq := c.minSeq(http.MethodGet, ""); seq > 0 {
		req.Header.Set(wire.MinSequenceHeader, strconv.FormatUint(seq, 10))
	}
	hc := *c.hc
	hc.Timeout = 0 // an export takes as long as it takes; ctx bounds it
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("cannot reach keyreg at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return 0, problemError(resp, data)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("audit export: %w", err)
	}
	return n, nil
}

// AuditPubkey returns the verifier key of the server's own audit key. It needs no token.
// For `keyreg audit verify --pubkey`, prefer AuditKeySet: on a cluster each node signs
// with its own key.
func (c *Client) AuditPubkey(ctx context.Context) (string, error) {
	ks, err := c.AuditKeySet(ctx)
	return ks.VerifierKey, err
}

// AuditKeySet is the audit key set GET /v1/audit/pubkey publishes.
type AuditKeySet struct {
	// VerifierKey is the key of the node that answered.
	VerifierKey string `json:"verifier_key"`
	// VerifierKeys are the keys the log vouches for now: registered, not retired.
	VerifierKeys []string `json:"verifier_keys"`
	// Signers are every signer the log records, retired ones included (empty from a
	// server that does not record them).
	Signers []AuditSigner `json:"signers,omitempty"`
}

// AuditSigner is an audit signer the log records: a node's verifier key, and the stream
// sequences of its registration and retirement (0 while active).
type AuditSigner struct {
	ID          string    `json:"id"`
	VerifierKey string    `json:"verifier_key"`
	Node        string    `json:"node"`
	AddedAt     time.Time `json:"added_at"`
	AddedBy     string    `json:"added_by,omitempty"`
	AddedSeq    uint64    `json:"added_seq"`
	RetiredAt   time.Time `json:"retired_at,omitzero"`
	RetiredBy   string    `json:"retired_by,omitempty"`
	RetiredSeq  uint64    `json:"retired_seq,omitempty"`
}

// AuditKeySet returns the server's published audit key set, for `keyreg audit verify
// --pubkey`. It needs no token. Compare it with one obtained out of band: a key set
// fetched from the server proves only that the server signed the export. An older server
// that serves only its own key gives that key as the set.
func (c *Client) AuditKeySet(ctx context.Context) (AuditKeySet, error) {
	var out AuditKeySet
	err := c.do(ctx, http.MethodGet, "/v1/audit/pubkey", nil, nil, WriteOptions{}, &out)
	out.VerifierKey = strings.TrimSpace(out.VerifierKey)
	if err == nil && len(out.VerifierKeys) == 0 && out.VerifierKey != "" {
		out.VerifierKeys = []string{out.VerifierKey}
	}
	return out, err
}

// RetireAuditSigner retires the audit signer with id (AuditSigner.ID) (DELETE
// /v1/audit/signers/{signer}, needs keyreg.admin): the log no longer vouches for checkpoints
// its key signs from then on.
func (c *Client) RetireAuditSigner(ctx context.Context, id string, o WriteOptions) error {
	return c.do(ctx, http.MethodDelete, "/v1/audit/signers/"+url.PathEscape(id), nil, nil, o, nil)
}
