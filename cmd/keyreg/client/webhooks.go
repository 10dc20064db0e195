package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func webhooksPath(ws string) string { return "/v1/workspaces/" + url.PathEscape(ws) + "/webhooks" }

// AddWebhook registers a webhook of ws for events of types (event types, or prefixes
// ending in .*; none: every event) (POST .../webhooks, needs keyreg.webhooks.write). The
// answer holds the signing secret, shown this once.
func (c *Client) AddWebhook(ctx context.Context, ws, hookURL string, types []string, o WriteOptions) (wire.NewWebhook, error) {
	var out wire.NewWebhook
	body := struct {
		URL   string   `json:"url"`
		Types []string `json:"types,omitempty"`
	}{hookURL, types}
	err := c.do(ctx, http.MethodPost, webhooksPath(ws), nil, body, o, &out)
	return out, err
}

// ListWebhooks lists the active webhooks of ws (GET .../webhooks).
func (c *Client) ListWebhooks(ctx context.Context, ws string) ([]wire.Webhook, error) {
	var out struct {
		Webhooks []wire.Webhook `json:"webhooks"`
	}
	err := c.do(ctx, http.MethodGet, webhooksPath(ws), nil, nil, WriteOptions{}, &out)
	return out.Webhooks, err
}

// GetWebhook returns webhook id of ws (GET .../webhooks/{id}).
func (c *Client) GetWebhook(ctx context.Context, ws, id string) (wire.Webhook, error) {
	var out wire.Webhook
	err := c.do(ctx, http.MethodGet, webhooksPath(ws)+"/"+url.PathEscape(id), nil, nil, WriteOptions{}, &out)
	return out, err
}

// RemoveWebhook removes webhook id of ws (DELETE .../webhooks/{id}).
func (c *Client) RemoveWebhook(ctx context.Context, ws, id string, o WriteOptions) error {
	return c.do(ctx, http.MethodDelete, webhooksPath(ws)+"/"+url.PathEscape(id), nil, nil, o, nil)
}

// WebhookDeliveries returns the recent delivery attempts of webhook id of ws, newest first
// (GET .../webhooks/{id}/deliveries); limit 0: the server's default.
func (c *Client) WebhookDeliveries(ctx context.Context, ws, id string, limit int) ([]wire.WebhookDelivery, error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {strconv.Itoa(limit)}}
	}
	var out struct {
		Deliveries []wire.WebhookDelivery `json:"deliveries"`
	}
	err := c.do(ctx, http.MethodGet, webhooksPath(ws)+"/"+url.PathEscape(id)+"/deliveries", q, nil, WriteOptions{}, &out)
	return out.Deliveries, err
}
