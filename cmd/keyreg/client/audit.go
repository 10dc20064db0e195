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

// AuditPubkey returns the verifier key of the server's audit checkpoints, for
// `keyreg audit verify --pubkey`. It needs no token. Compare it with one obtained out of
// band: a key fetched from the server proves only that the server signed the export.
func (c *Client) AuditPubkey(ctx context.Context) (string, error) {
	var out struct {
		VerifierKey string `json:"verifier_key"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/audit/pubkey", nil, nil, WriteOptions{}, &out)
	return strings.TrimSpace(out.VerifierKey), err
}
