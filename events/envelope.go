package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// CloudEvents constants of the structured JSON mode.
const (
	SpecVersion     = "1.0"
	ContentType     = "application/cloudevents+json"
	DataContentType = "application/json"
)

// Event is a CloudEvents 1.0 event in structured JSON mode. The extension attributes are
// actor (key id of the caller), actorip, requestid, reason and prevhash (hex SHA-256 of the
// previous event of the same aggregate as stored in the log; empty for the first).
//
// Field order is fixed, so encoding an Event is deterministic.
type Event struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            Type            `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	Actor           string          `json:"actor,omitempty"`
	ActorIP         string          `json:"actorip,omitempty"`
	RequestID       string          `json:"requestid,omitempty"`
	Reason          string          `json:"reason,omitempty"`
	PrevHash        string          `json:"prevhash,omitempty"`
}

// Meta is who caused an event, from where and why.
type Meta struct {
	Actor     string // key id of the caller; empty for the system itself
	ActorIP   string
	RequestID string
	Reason    string
}

// NewEvent builds the envelope of payload p for aggregate agg/id of workspace ws. The id is
// a fresh ULID and time is now in UTC, truncated to microseconds.
func NewEvent(ws Workspace, agg Aggregate, id string, p Payload, meta Meta, prevHash string, now time.Time) (Event, error) {
	data, err := json.Marshal(p)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s: %w", p.EventType(), err)
	}
	return Event{
		SpecVersion:     SpecVersion,
		ID:              NewID(),
		Source:          "keyreg/" + string(ws),
		Type:            p.EventType(),
		Subject:         string(agg) + "/" + id,
		Time:            now.UTC().Truncate(time.Microsecond),
		DataContentType: DataContentType,
		Data:            data,
		Actor:           meta.Actor,
		ActorIP:         meta.ActorIP,
		RequestID:       meta.RequestID,
		Reason:          meta.Reason,
		PrevHash:        prevHash,
	}, nil
}

// Encode returns the event's JSON, as stored in the log.
func (e Event) Encode() ([]byte, error) { return json.Marshal(e) }

// Decode parses an event stored in the log and checks its required attributes.
func Decode(b []byte) (Event, error) {
	e, ok := decodeCanonical(b)
	if !ok {
		d := json.NewDecoder(bytes.NewReader(b))
		if err := d.Decode(&e); err != nil {
			return Event{}, fmt.Errorf("decode event: %w", err)
		}
	}
	if e.SpecVersion != SpecVersion || e.ID == "" || e.Type == "" || e.Source == "" {
		return Event{}, fmt.Errorf("decode event %q: missing or wrong CloudEvents attributes", e.ID)
	}
	return e, nil
}

// Workspace returns the workspace of the event's source "keyreg/<ws>".
func (e Event) Workspace() Workspace {
	return Workspace(strings.TrimPrefix(e.Source, "keyreg/"))
}

// Aggregate returns the aggregate kind and id of the event's subject "<aggregate>/<id>".
func (e Event) Aggregate() (Aggregate, string) {
	agg, id, _ := strings.Cut(e.Subject, "/")
	return Aggregate(agg), id
}

// Upcasters turn an older version of an event type into the current one on read. None
// exist yet: every type is at v1. Add an entry when a type gets a .v2.
var Upcasters = map[Type]func(data json.RawMessage) (Type, json.RawMessage, error){}

// Payload decodes the event's data into its typed payload (a pointer, such as
// *KeyCreated), upcasting older versions first. Unknown types return an error.
func (e Event) Payload() (Payload, error) {
	t, data := e.Type, e.Data
	for up, ok := Upcasters[t]; ok; up, ok = Upcasters[t] {
		var err error
		if t, data, err = up(data); err != nil {
			return nil, fmt.Errorf("upcast %s: %w", e.Type, err)
		}
	}
	p := newPayload(t)
	if p == nil {
		return nil, fmt.Errorf("decode event %s: unknown type %q", e.ID, e.Type)
	}
	if decodePayloadCanonical(data, p) {
		return p, nil
	}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, fmt.Errorf("decode %s data: %w", t, err)
	}
	return p, nil
}

// Hash returns the hex SHA-256 of b. It hashes secrets (never stored in clear) and stored
// events (the prevhash chain).
func Hash(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
