package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// Page selects one page of a list: at most Limit items (0: the server's default, 100;
// at most 1000) after After, the Next of the previous page ("": from the first).
type Page struct {
	After string
	Limit int
}

func (p Page) values(v url.Values) url.Values {
	if v == nil {
		v = url.Values{}
	}
	if p.After != "" {
		v.Set("after", p.After)
	}
	if p.Limit > 0 {
		v.Set("limit", strconv.Itoa(p.Limit))
	}
	return v
}

// KeyQuery selects keys: of Status (active, revoked or expired; "": all), one Page of
// them.
type KeyQuery struct {
	Status string
	Page
}

// KeyPage is a page of keys, ordered by id. Next, when set, is the After of the next
// page; it is empty on the last page.
type KeyPage struct {
	Keys []wire.Key `json:"keys"`
	Next string     `json:"next,omitempty"`
}

// KeysPage returns one page of workspace ws's keys (as they were at a moment, with AsOf).
func (c *Client) KeysPage(ctx context.Context, ws string, q KeyQuery, opts ...ReadOption) (KeyPage, error) {
	v := url.Values{}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	var out KeyPage
	err := c.do(ctx, http.MethodGet, keysPath(ws), q.values(readValues(v, opts)), nil, WriteOptions{}, &out)
	return out, err
}

// ListKeys returns all of workspace ws's keys (as they were at a moment, with AsOf),
// only those with status status (then) unless it is "", following every page.
func (c *Client) ListKeys(ctx context.Context, ws, status string, opts ...ReadOption) ([]wire.Key, error) {
	q := KeyQuery{Status: status, Page: Page{Limit: wire.MaxPageSize}}
	return all(ctx, func(ctx context.Context, after string) ([]wire.Key, string, error) {
		q.After = after
		p, err := c.KeysPage(ctx, ws, q, opts...)
		return p.Keys, p.Next, err
	})
}

// IdentifierQuery selects active identifiers: of Kind and with a name starting with Q
// (ignoring case) when they are set, one Page of them.
type IdentifierQuery struct {
	Kind string
	Q    string
	Page
}

// IdentifierPage is a page of identifiers, ordered by kind and name. Next, when set, is
// the After of the next page (an opaque cursor); it is empty on the last page.
type IdentifierPage struct {
	Identifiers []wire.Identifier `json:"identifiers"`
	Next        string            `json:"next,omitempty"`
}

// IdentifiersPage returns one page of workspace ws's active identifiers (those active at
// a moment, with AsOf).
func (c *Client) IdentifiersPage(ctx context.Context, ws string, q IdentifierQuery, opts ...ReadOption) (IdentifierPage, error) {
	v := url.Values{}
	if q.Kind != "" {
		v.Set("kind", q.Kind)
	}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	var out IdentifierPage
	err := c.do(ctx, http.MethodGet, identifiersPath(ws), q.values(readValues(v, opts)), nil, WriteOptions{}, &out)
	return out, err
}

// ListIdentifiers returns all of workspace ws's active identifiers ordered by kind and
// name, only of kind kind and with a name starting with prefix q (ignoring case) when
// they are not "", following every page; with AsOf, those active at that moment.
func (c *Client) ListIdentifiers(ctx context.Context, ws, kind, q string, opts ...ReadOption) ([]wire.Identifier, error) {
	iq := IdentifierQuery{Kind: kind, Q: q, Page: Page{Limit: wire.MaxPageSize}}
	return all(ctx, func(ctx context.Context, after string) ([]wire.Identifier, string, error) {
		iq.After = after
		p, err := c.IdentifiersPage(ctx, ws, iq, opts...)
		return p.Identifiers, p.Next, err
	})
}

// WorkspacePage is a page of workspaces, ordered by id. Next, when set, is the After of
// the next page; it is empty on the last page.
type WorkspacePage struct {
	Workspaces []wire.Workspace `json:"workspaces"`
	Next       string           `json:"next,omitempty"`
}

// WorkspacesPage returns one page of the workspaces the token may see: all of them for
// an admin key, else the key's own.
func (c *Client) WorkspacesPage(ctx context.Context, p Page) (WorkspacePage, error) {
	var out WorkspacePage
	err := c.do(ctx, http.MethodGet, "/v1/workspaces", p.values(nil), nil, WriteOptions{}, &out)
	return out, err
}

// ListWorkspaces returns every workspace the token may see, following every page.
func (c *Client) ListWorkspaces(ctx context.Context) ([]wire.Workspace, error) {
	return all(ctx, func(ctx context.Context, after string) ([]wire.Workspace, string, error) {
		p, err := c.WorkspacesPage(ctx, Page{After: after, Limit: wire.MaxPageSize})
		return p.Workspaces, p.Next, err
	})
}

// all follows the pages of a list from the first to the last.
func all[T any](ctx context.Context, page func(ctx context.Context, after string) ([]T, string, error)) ([]T, error) {
	out := []T{}
	after := ""
	for {
		items, next, err := page(ctx, after)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" || next == after {
			return out, nil
		}
		after = next
	}
}
