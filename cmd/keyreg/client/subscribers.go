package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// AddSubscriber gives a service NATS credentials of its own (POST /v1/subscribers, needs
// keyreg.admin). maxConsumers 0 takes the server's default. The answer holds the password,
// shown this once.
func (c *Client) AddSubscriber(ctx context.Context, name string, maxConsumers int, o WriteOptions) (wire.NewSubscriber, error) {
	var out wire.NewSubscriber
	body := struct {
		Name         string `json:"name"`
		MaxConsumers int    `json:"max_consumers,omitempty"`
	}{name, maxConsumers}
	err := c.do(ctx, http.MethodPost, "/v1/subscribers", nil, body, o, &out)
	return out, err
}

// ListSubscribers lists the services' NATS users (GET /v1/subscribers, needs keyreg.admin).
func (c *Client) ListSubscribers(ctx context.Context) ([]wire.Subscriber, error) {
	var out struct {
		Subscribers []wire.Subscriber `json:"subscribers"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/subscribers", nil, nil, WriteOptions{}, &out)
	return out.Subscribers, err
}

// RemoveSubscriber removes a service's NATS user (DELETE /v1/subscribers/{name}, needs
// keyreg.admin); it can no longer connect.
func (c *Client) RemoveSubscriber(ctx context.Context, name string, o WriteOptions) error {
	return c.do(ctx, http.MethodDelete, "/v1/subscribers/"+url.PathEscape(name), nil, nil, o, nil)
}
