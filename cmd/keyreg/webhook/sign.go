// Package webhook delivers a workspace's events to the webhooks registered for it, as
// the Standard Webhooks specification says (https://www.standardwebhooks.com): each event
// is POSTed as its CloudEvent, signed with HMAC-SHA256 under the webhook's secret, at least
// once, in stream order per webhook, retried with exponential backoff.
//
// Webhooks are registered in the log (events.WebhookRegistered); their signing secrets
// live in a JetStream key-value bucket (SecretsBucket), never in the log. Each webhook has
// a durable pull consumer on the stream (ConsumerName) that every node pulls from; the
// consumer lets one message be outstanding at a time (MaxAckPending 1), so a single node
// delivers each event and a failing event holds the later ones back. The attempts are
// recorded in a second bucket (DeliveriesBucket), bounded per webhook.
//
// It imports events and nats.go only; cmd/keyreg/server wires it.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// SecretPrefix starts every webhook signing secret, as Standard Webhooks writes them.
const SecretPrefix = "whsec_"

// secretBytes is the length of a new secret's key (Standard Webhooks: 24 to 64 bytes).
const secretBytes = 32

// NewSecret returns a new signing secret: "whsec_" and the base64 of 32 random bytes.
func NewSecret() string {
	b := make([]byte, secretBytes)
	rand.Read(b) // never fails (crypto/rand)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// errSecret is what DecodeSecret says of a malformed secret, without echoing it.
var errSecret = errors.New("webhook: malformed signing secret (want whsec_ and base64)")

// DecodeSecret returns the HMAC key of a secret: the base64-decoded bytes after the
// "whsec_" prefix.
func DecodeSecret(secret string) ([]byte, error) {
	s, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, errSecret
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(key) == 0 {
		return nil, errSecret
	}
	return key, nil
}

// Sign returns the webhook-signature header value of a message: "v1," and the base64 of
// HMAC-SHA256(key, id + "." + timestamp + "." + body).
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
