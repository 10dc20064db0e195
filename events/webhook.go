package events

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AggWebhook is the aggregate of a webhook: an HTTPS (or HTTP) endpoint that receives a
// workspace's events, signed as the Standard Webhooks specification says. Its id is a
// ULID; its events are on "keyreg.<ws>.webhook.<id>.registered|removed". The signing
// secret never enters the log.
const AggWebhook Aggregate = "webhook"

// Webhook event types, version 1.
const (
	TypeWebhookRegistered Type = "keyreg.webhook.registered.v1"
	TypeWebhookRemoved    Type = "keyreg.webhook.removed.v1"
)

// MaxWebhookURL bounds the length of a webhook's URL, and MaxWebhookTypes the number of
// its type patterns.
const (
	MaxWebhookURL   = 2048
	MaxWebhookTypes = 100
)

// ParseWebhookURL checks a webhook's delivery URL: an absolute http or https URL with a
// host, no user name or password (they would enter the log) and no fragment, at most
// MaxWebhookURL bytes. It does not look at the address the host names: that is the
// server's check (refusing private addresses), done again at each delivery.
func ParseWebhookURL(s string) (*url.URL, error) {
	if len(s) > MaxWebhookURL {
		return nil, Invalid("url", s[:64]+"...", "must be at most %d bytes", MaxWebhookURL)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, Invalid("url", s, "is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, Invalid("url", s, "must be an http:// or https:// URL")
	case u.Host == "" || u.Hostname() == "":
		return nil, Invalid("url", s, "has no host")
	case u.User != nil:
		return nil, Invalid("url", s, "must not hold a user name or password")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, Invalid("url", s, "must not have a fragment")
	case strings.ContainsAny(s, " \t\r\n"):
		return nil, Invalid("url", s, "must not contain spaces or line breaks")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, Invalid("url", s, "has an invalid port %q", p)
		}
	}
	return u, nil
}

// ParseWebhookTypes checks a webhook's type patterns against the event types (Types):
// each is a type ("keyreg.key.revoked.v1") or a prefix of types ending in ".*"
// ("keyreg.key.*", "keyreg.*") that matches at least one of them. Duplicates are dropped;
// an empty list means every event of the workspace.
func ParseWebhookTypes(in []string) ([]string, error) {
	if len(in) > MaxWebhookTypes {
		return nil, Invalid("types", strconv.Itoa(len(in)), "at most %d types", MaxWebhookTypes)
	}
	out := make([]string, 0, len(in))
	for _, p := range in {
		if !slices.ContainsFunc(Types, func(t TypeInfo) bool { return matchWebhookType(p, t.Type) }) {
			known := make([]string, len(Types))
			for i, t := range Types {
				known[i] = string(t.Type)
			}
			return nil, Invalid("types", p, "is not an event type, nor a prefix of them ending in .* (such as keyreg.key.*); the types are %s", strings.Join(known, ", "))
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// WebhookWants reports whether a webhook with type patterns types (as ParseWebhookTypes
// keeps them; empty: every type) receives events of type t.
func WebhookWants(types []string, t Type) bool {
	return len(types) == 0 || slices.ContainsFunc(types, func(p string) bool { return matchWebhookType(p, t) })
}

func matchWebhookType(pattern string, t Type) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok && strings.HasSuffix(prefix, ".") && !strings.Contains(prefix, "*") {
		return strings.HasPrefix(string(t), prefix)
	}
	return pattern == string(t)
}

// WebhookRegistered registers a webhook: the workspace's events whose type matches Types
// (empty: all) are POSTed to URL from the next one on. Its signing secret is kept outside
// the log.
type WebhookRegistered struct {
	URL   string   `json:"url"`
	Types []string `json:"types"`
}

// WebhookRemoved removes a webhook: no more deliveries, its secret is deleted.
type WebhookRemoved struct {
	URL string `json:"url"`
}

// EventType implements Payload.
func (WebhookRegistered) EventType() Type { return TypeWebhookRegistered }

// Change implements Payload.
func (p WebhookRegistered) Change() Change {
	return Change{After: fields{"url": p.URL, "types": nonNil(p.Types)}}
}

// Summary implements Payload.
func (p WebhookRegistered) Summary(time.Time) string {
	types := "all events"
	if len(p.Types) > 0 {
		types = strings.Join(p.Types, ",")
	}
	return "registered webhook " + p.URL + " for " + types
}

// EventType implements Payload.
func (WebhookRemoved) EventType() Type { return TypeWebhookRemoved }

// Change implements Payload.
func (p WebhookRemoved) Change() Change {
	return Change{Before: fields{"url": p.URL, "active": true}, After: fields{"url": p.URL, "active": false}}
}

// Summary implements Payload.
func (p WebhookRemoved) Summary(time.Time) string { return "removed webhook " + p.URL }

// WebhookState is a webhook's current state, folded from its events. A removed webhook
// keeps its fields, with Active false.
type WebhookState struct {
	ID        string    `json:"id"`
	Workspace Workspace `json:"workspace"`
	URL       string    `json:"url"`
	Types     []string  `json:"types"`
	Active    bool      `json:"active"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	// Registered is the stream sequence of its registration: deliveries start after it.
	Registered uint64    `json:"registered"`
	RemovedAt  time.Time `json:"removed_at,omitzero"`
	Version    uint64    `json:"version"`
	LastHash   string    `json:"-"`
}

// Exists reports whether the webhook was ever registered.
func (s *WebhookState) Exists() bool { return s.Version != 0 }

// Apply folds one event of this webhook into the state.
func (s *WebhookState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *WebhookRegistered:
		_, id := e.Aggregate()
		*s = WebhookState{ID: id, Workspace: e.Workspace(), URL: p.URL,
			Types: nonNil(p.Types), Active: true, CreatedAt: e.Time, CreatedBy: e.Actor, Registered: seq}
	case *WebhookRemoved:
		s.Active, s.RemovedAt = false, e.Time
	default:
		return fmt.Errorf("events: webhook %s: cannot apply %s", s.ID, e.Type)
	}
	s.Version, s.LastHash = seq, Hash(data)
	return nil
}

// WebhooksFilter is the subject filter of the webhook events of every workspace.
func WebhooksFilter() string {
	return SubjectPrefix + ".*." + string(AggWebhook) + ".*.*"
}

// WorkspaceWebhooksFilter is the subject filter of the webhook events of ws.
func WorkspaceWebhooksFilter(ws Workspace) string {
	return SubjectPrefix + "." + string(ws) + "." + string(AggWebhook) + ".*.*"
}
