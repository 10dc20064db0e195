package wire

import "time"

// Webhook is a webhook as the API shows it, without its signing secret.
type Webhook struct {
	ID        string    `json:"id" doc:"ULID"`
	Workspace string    `json:"workspace"`
	URL       string    `json:"url"`
	Types     []string  `json:"types" doc:"Event types, or prefixes of them ending in .* (keyreg.key.*); empty: every event of the workspace"`
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty" doc:"Key id of the registrant"`
	Version   uint64    `json:"version"`
}

// NewWebhook is a webhook just registered, with its signing secret: shown this once.
type NewWebhook struct {
	Webhook Webhook `json:"webhook"`
	Secret  string  `json:"secret" doc:"The signing secret (whsec_ and base64 of 32 bytes), shown this once: the receiver checks webhook-signature with it (Standard Webhooks)"`
}

// WebhookDelivery is one attempt to deliver an event to a webhook.
type WebhookDelivery struct {
	EventID  string `json:"event_id" doc:"The CloudEvent id, sent as webhook-id"`
	Type     string `json:"type"`
	Sequence uint64 `json:"sequence" doc:"The event's stream sequence"`
	Attempt  int    `json:"attempt" doc:"1 for the first attempt"`
	// Outcome: delivered (a 2xx answer), retrying (another attempt at next_retry) or
	// failed (given up after the retry period).
	Outcome    string     `json:"outcome" enum:"delivered,retrying,failed"`
	StatusCode int        `json:"status_code,omitempty" doc:"The receiver's HTTP status; absent when none came"`
	Error      string     `json:"error,omitempty" doc:"Why the attempt failed"`
	At         time.Time  `json:"at"`
	DurationMS int64      `json:"duration_ms"`
	NextRetry  *time.Time `json:"next_retry,omitempty" doc:"When the next attempt is due (outcome retrying)"`
}
