package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// KeyUsage returns what verify saw of key id of ws: its last use and its verifies per
// outcome on each of the days UTC days up to today (0: the server's default, 7). It
// needs keyreg.keys.read. Errors: a 400 naming days when it is out of range (1 to 90),
// 404 for an unknown key, 409 not_supported from a read-only server.
func (c *Client) KeyUsage(ctx context.Context, ws, id string, days int) (wire.KeyUsage, error) {
	var q url.Values
	if days != 0 {
		q = url.Values{"days": {strconv.Itoa(days)}}
	}
	var out wire.KeyUsage
	err := c.do(ctx, http.MethodGet, keyPath(ws, id)+"/usage", q, nil, WriteOptions{}, &out)
	return out, err
}
