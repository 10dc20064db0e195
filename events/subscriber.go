package events

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// AggSubscriber is the aggregate of a NATS subscriber: a service that follows the stream
// over NATS with credentials of its own. Its id is the subscriber's name, in workspace
// SystemWorkspace, so its events are on "keyreg.system.subscriber.<name>.added|removed".
const AggSubscriber Aggregate = "subscriber"

// Subscriber event types, version 1.
const (
	TypeSubscriberAdded   Type = "keyreg.subscriber.added.v1"
	TypeSubscriberRemoved Type = "keyreg.subscriber.removed.v1"
)

// MaxSubscriberConsumers bounds a subscriber's MaxConsumers.
const MaxSubscriberConsumers = 100

// ReservedSubscriberName is the one name no subscriber may take: the NATS user of keyreg's
// own in-process connection (natsserver.InProcessUser).
const ReservedSubscriberName = "keyreg"

var subscriberNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// ParseSubscriberName checks a subscriber name: 1 to 32 lowercase letters, digits and '-',
// starting with a letter, and not ReservedSubscriberName. The name is the subscriber's NATS user,
// a subject token, and the stem of its consumer names (ConsumerNames).
func ParseSubscriberName(s string) (string, error) {
	switch {
	case !subscriberNameRE.MatchString(s):
		return "", Invalid("name", s, "must be 1 to 32 lowercase letters, digits or '-', starting with a letter")
	case s == ReservedSubscriberName:
		return "", Invalid("name", s, "%q is keyreg's own NATS user", s)
	}
	return s, nil
}

// SubscriberAdded gives a service NATS credentials: user Name, whose password is kept
// only as PasswordHash (bcrypt, which nats-server checks as is; the password itself never
// enters the log), confined to at most MaxConsumers consumers named ConsumerNames(Name,
// MaxConsumers).
type SubscriberAdded struct {
	Name         string `json:"name"`
	PasswordHash string `json:"password_hash"`
	MaxConsumers int    `json:"max_consumers"`
}

// SubscriberRemoved withdraws a subscriber's credentials: it can no longer connect, and
// its open connections are closed. Its consumers stay until they expire or are deleted.
type SubscriberRemoved struct {
	Name string `json:"name"`
}

// EventType implements Payload.
func (SubscriberAdded) EventType() Type { return TypeSubscriberAdded }

// Change implements Payload. The password hash is left out.
func (p SubscriberAdded) Change() Change {
	return Change{After: fields{"name": p.Name, "max_consumers": p.MaxConsumers}}
}

// Summary implements Payload.
func (p SubscriberAdded) Summary(time.Time) string {
	return "added subscriber " + p.Name + " with up to " + strconv.Itoa(p.MaxConsumers) + " consumers"
}

// EventType implements Payload.
func (SubscriberRemoved) EventType() Type { return TypeSubscriberRemoved }

// Change implements Payload.
func (p SubscriberRemoved) Change() Change {
	return Change{Before: fields{"name": p.Name, "active": true}, After: fields{"name": p.Name, "active": false}}
}

// Summary implements Payload.
func (p SubscriberRemoved) Summary(time.Time) string { return "removed subscriber " + p.Name }

// SubscriberState is a subscriber's current state, folded from its events. A removed
// subscriber keeps its name and Version, with Active false; adding it again gives it a
// new password.
type SubscriberState struct {
	Name         string    `json:"name"`
	PasswordHash string    `json:"-"`
	MaxConsumers int       `json:"max_consumers"`
	Active       bool      `json:"active"`
	AddedAt      time.Time `json:"added_at"`
	AddedBy      string    `json:"added_by"`
	Version      uint64    `json:"version"`
	LastHash     string    `json:"-"`
}

// Exists reports whether the subscriber was ever added.
func (s *SubscriberState) Exists() bool { return s.Version != 0 }

// Apply folds one event of this subscriber into the state.
func (s *SubscriberState) Apply(seq uint64, data []byte, e Event, p Payload) error {
	switch p := p.(type) {
	case *SubscriberAdded:
		*s = SubscriberState{Name: p.Name, PasswordHash: p.PasswordHash, MaxConsumers: p.MaxConsumers,
			Active: true, AddedAt: e.Time, AddedBy: e.Actor}
	case *SubscriberRemoved:
		s.Active, s.PasswordHash = false, ""
	default:
		return fmt.Errorf("events: subscriber %s: cannot apply %s", s.Name, e.Type)
	}
	s.Version, s.LastHash = seq, Hash(data)
	return nil
}

// SubscribersFilter is the subject filter of every subscriber event.
func SubscribersFilter() string {
	return SubjectPrefix + "." + string(SystemWorkspace) + "." + string(AggSubscriber) + ".*.*"
}

// ConsumerNames returns the names of the consumers subscriber user may have on the stream:
// "<user>-1" to "<user>-<n>". NATS permissions match whole subject tokens, so a subscriber
// is confined to a fixed list of consumer names; its length is the subscriber's limit.
func ConsumerNames(user string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = user + "-" + strconv.Itoa(i+1)
	}
	return names
}

// InboxPrefix is the inbox prefix a confined subscriber must connect with
// (nats.CustomInboxPrefix, nats --inbox-prefix): "_INBOX.<user>". It may subscribe to
// its own inboxes only, so no subscriber sees another's replies or deliveries.
func InboxPrefix(user string) string { return "_INBOX." + user }
