package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// ListPermissions returns the permission catalogue: the platform's endpoint permissions
// and the registry's keyreg.* ones, and when ws is not "" also workspace ws's own (which
// needs a key of ws or keyreg.admin).
func (c *Client) ListPermissions(ctx context.Context, ws string) ([]wire.Permission, error) {
	q := url.Values{}
	if ws != "" {
		q.Set("workspace", ws)
	}
	var out wire.PermissionList
	err := c.do(ctx, http.MethodGet, "/v1/permissions", q, nil, WriteOptions{}, &out)
	return out.Permissions, err
}

// DefinePermission defines a permission of workspace ws's own, named name (dotted lower
// case, neither built in nor keyreg.*), for its keys to be granted. It needs
// keyreg.keys.write in ws or keyreg.admin. Defining it again with the same description
// changes nothing.
func (c *Client) DefinePermission(ctx context.Context, ws, name, description string, o WriteOptions) (wire.Permission, error) {
	body := struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}{name, description}
	var out wire.Permission
	err := c.do(ctx, http.MethodPost, "/v1/workspaces/"+url.PathEscape(ws)+"/permissions", nil, body, o, &out)
	return out, err
}
