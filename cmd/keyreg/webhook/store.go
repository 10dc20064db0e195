package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// Buckets. SecretsBucket holds each webhook's signing secret under its id, in the clear:
// it is as safe as the NATS server's storage and its permissions (subscribers' NATS users
// cannot read it). DeliveriesBucket holds each webhook's last DeliveriesKept attempts, for
// DeliveriesMaxAge.
const (
	SecretsBucket    = "KEYREG_WEBHOOK_SECRETS"
	DeliveriesBucket = "KEYREG_WEBHOOK_DELIVERIES"
	DeliveriesKept   = 64 // the most history a NATS KV key keeps
	DeliveriesMaxAge = 7 * 24 * time.Hour
)

// Delivery is one attempt to deliver an event to a webhook, as GET
// .../webhooks/{id}/deliveries shows it.
type Delivery = wire.WebhookDelivery

// openBuckets creates (or opens) the two buckets with replicas replicas, like the stream.
func openBuckets(ctx context.Context, js jetstream.JetStream, replicas int) (secrets, deliveries jetstream.KeyValue, err error) {
	secrets, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: SecretsBucket, Description: "keyreg webhook signing secrets, by webhook id", History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("webhook secrets bucket %s: %w", SecretsBucket, err)
	}
	deliveries, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: DeliveriesBucket, Description: "keyreg webhook delivery attempts, by webhook id", History: DeliveriesKept,
		TTL: DeliveriesMaxAge, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("webhook deliveries bucket %s: %w", DeliveriesBucket, err)
	}
	return secrets, deliveries, nil
}

// Secret returns the signing secret of webhook id, making and storing a new one when it
// has none. A webhook's registration stores its secret first, then appends its event: a
// registration retried with the same id (an Idempotency-Key) gets the same secret.
func (m *Manager) Secret(ctx context.Context, id string) (string, error) {
	e, err := m.secrets.Get(ctx, id)
	if err == nil {
		return string(e.Value()), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", fmt.Errorf("read webhook secret: %w", err)
	}
	s := NewSecret()
	if _, err := m.secrets.Create(ctx, id, []byte(s)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return m.Secret(ctx, id) // a concurrent retry made it first
		}
		return "", fmt.Errorf("store webhook secret: %w", err)
	}
	return s, nil
}

// DropSecret deletes the secret of webhook id (made for a registration that was refused).
func (m *Manager) DropSecret(ctx context.Context, id string) {
	if err := m.secrets.Purge(ctx, id); err != nil {
		m.logger.Warn("webhook: delete secret", "webhook", id, "err", err)
	}
}

// key reads the HMAC key of webhook id.
func (m *Manager) key(ctx context.Context, id string) ([]byte, error) {
	e, err := m.secrets.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("read webhook secret: %w", err)
	}
	return DecodeSecret(string(e.Value()))
}

// record stores one attempt; a failure is logged, never a reason to deliver again.
func (m *Manager) record(ctx context.Context, id string, d Delivery) {
	m.attempts.WithLabelValues(d.Outcome).Inc()
	b, _ := json.Marshal(d)
	if _, err := m.deliveries.Put(ctx, id, b); err != nil {
		m.logger.Warn("webhook: record delivery attempt", "webhook", id, "event", d.EventID, "err", err)
	}
}

// Deliveries returns the recorded attempts of webhook id, newest first, at most limit (at
// most DeliveriesKept are kept, for at most DeliveriesMaxAge).
func (m *Manager) Deliveries(ctx context.Context, id string, limit int) ([]Delivery, error) {
	hist, err := m.deliveries.History(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return []Delivery{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read webhook deliveries: %w", err)
	}
	out := make([]Delivery, 0, len(hist))
	for _, e := range slices.Backward(hist) {
		if e.Operation() != jetstream.KeyValuePut {
			break // a delete or purge ends the history
		}
		var d Delivery
		if err := json.Unmarshal(e.Value(), &d); err != nil {
			continue
		}
		out = append(out, d)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}
