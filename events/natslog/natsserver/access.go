package natsserver

import (
	"crypto/rand"
	"fmt"
	"net"
	"sync"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/keyreg/keyreg/events"
)

// Subscriber is a NATS user of the embedded server that may read the KEYREG stream and
// nothing else: the account a service uses to follow key changes over TCP.
//
// With MaxConsumers > 0 (what keyreg subscriber add makes) it is confined: it may create,
// read, consume and delete only the consumers named events.ConsumerNames(User, MaxConsumers),
// subscribe only to its own inboxes (events.InboxPrefix(User)), and never list consumers
// (ConfinedPermissions). With MaxConsumers 0 it is the deprecated shared subscriber of
// SubscriberPermissions, which may use (and delete) any consumer of the stream.
type Subscriber struct {
	User string
	// Password is the password, or its bcrypt hash ("$2a$..."), which nats-server
	// compares with bcrypt.
	Password     string
	MaxConsumers int
}

// InProcessUser is the NATS user of keyreg's own connection (ConnectInProcess). It has every
// right and may connect only in-process: a TCP client naming it, or naming no user at all,
// is refused. No subscriber may take its name (events.ParseSubscriberName).
const InProcessUser = events.ReservedSubscriberName

// InProcessInboxPrefix is the inbox prefix of ConnectInProcess, apart from the _INBOX.>
// that subscribers may subscribe to, so that no subscriber sees keyreg's own replies.
const InProcessInboxPrefix = "_KEYREG_INBOX"

// SubscriberPublishAllow lists the subjects a subscriber may publish to: the JetStream API
// requests that read the KEYREG stream (stream info, message and direct gets) and the verify
// index snapshots (snapshotReads), create,
// inspect, consume and delete consumers on it (ordered, ephemeral and durable), and the
// acknowledgements and flow-control replies of those consumers. Nothing else.
func SubscriberPublishAllow() []string {
	s := events.StreamName
	return append([]string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.DIRECT.GET." + s,
		"$JS.API.DIRECT.GET." + s + ".>",
		"$JS.API.CONSUMER.CREATE." + s,
		"$JS.API.CONSUMER.CREATE." + s + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + s + ".*",
		"$JS.API.CONSUMER.INFO." + s + ".*",
		"$JS.API.CONSUMER.NAMES." + s,
		"$JS.API.CONSUMER.LIST." + s,
		"$JS.API.CONSUMER.DELETE." + s + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + s + ".*",
		"$JS.ACK." + s + ".>",
		"$JS.ACK.*.*." + s + ".>",
		"$JS.FC." + s + ".>",
		"$JS.FC.*.*." + s + ".>",
	}, snapshotReads()...)
}

// SnapshotStream and SnapshotSubjects are the stream and subjects of the verify index
// snapshots that keyreg serve writes for embedded verifiers (projections/verifier keeps the
// same names). A snapshot holds only what the KEYREG stream holds, for every workspace:
// every subscriber may read the whole KEYREG stream, so every subscriber may read the
// snapshots, and none may write them (SubscriberPublishDeny). A NATS user confined to
// some workspaces' events must not be given snapshotReads.
const (
	SnapshotStream   = "KEYREG_VERIFY_SNAPSHOT"
	SnapshotSubjects = "keyreg-snapshot.>"
)

// snapshotReads are the JetStream API requests that read the snapshots: the stream's info
// and direct gets of its messages.
func snapshotReads() []string {
	return []string{
		"$JS.API.STREAM.INFO." + SnapshotStream,
		"$JS.API.DIRECT.GET." + SnapshotStream,
		"$JS.API.DIRECT.GET." + SnapshotStream + ".>",
	}
}

// SubscriberPublishDeny lists subjects a subscriber may never publish to, even if a later
// change widened SubscriberPublishAllow: the events themselves, and the JetStream API
// requests that create, change, purge, delete, snapshot or restore streams or delete
// messages.
func SubscriberPublishDeny() []string {
	return []string{
		events.SubjectPrefix + ".>",
		SnapshotSubjects,
		"$JS.API.STREAM.CREATE.>",
		"$JS.API.STREAM.UPDATE.>",
		"$JS.API.STREAM.DELETE.>",
		"$JS.API.STREAM.PURGE.>",
		"$JS.API.STREAM.MSG.DELETE.>",
		"$JS.API.STREAM.SNAPSHOT.>",
		"$JS.API.STREAM.RESTORE.>",
	}
}

// SubscriberSubscribeAllow lists the subjects a subscriber may subscribe to: the events
// (keyreg.>) and its own inboxes (_INBOX.>), where JetStream answers and consumers deliver.
func SubscriberSubscribeAllow() []string {
	return []string{events.SubjectPrefix + ".>", "_INBOX.>"}
}

// SubscriberPermissions returns the NATS permissions of the deprecated shared subscriber
// (MaxConsumers 0), which may use and delete any consumer of the stream: publish only the
// subjects of SubscriberPublishAllow minus SubscriberPublishDeny, subscribe only to
// SubscriberSubscribeAllow. A refused publish is dropped by the server, which reports a
// permissions violation to the client; it never reaches the stream.
func SubscriberPermissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: SubscriberPublishAllow(), Deny: SubscriberPublishDeny()},
		Subscribe: &server.SubjectPermission{Allow: SubscriberSubscribeAllow()},
	}
}

// ConfinedPublishAllow lists the subjects a confined subscriber (see Subscriber) may
// publish to: reads of the stream, and for each of its consumer names only, the JetStream
// API requests that create, inspect, consume and delete that consumer, and its
// acknowledgements and flow-control replies. NATS permissions match whole tokens, so no
// request naming another consumer (keyreg's, another subscriber's) is allowed; neither is
// the unnamed create (a server-chosen name) nor listing the stream's consumers.
func ConfinedPublishAllow(user string, maxConsumers int) []string {
	s := events.StreamName
	allow := []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.DIRECT.GET." + s,
		"$JS.API.DIRECT.GET." + s + ".>",
	}
	allow = append(allow, snapshotReads()...)
	for _, c := range events.ConsumerNames(user, maxConsumers) {
		allow = append(allow,
			"$JS.API.CONSUMER.CREATE."+s+"."+c,
			"$JS.API.CONSUMER.CREATE."+s+"."+c+".>",
			"$JS.API.CONSUMER.DURABLE.CREATE."+s+"."+c,
			"$JS.API.CONSUMER.INFO."+s+"."+c,
			"$JS.API.CONSUMER.DELETE."+s+"."+c,
			"$JS.API.CONSUMER.MSG.NEXT."+s+"."+c,
			"$JS.ACK."+s+"."+c+".>",
			"$JS.ACK.*.*."+s+"."+c+".>",
			"$JS.FC."+s+"."+c+".*",
			"$JS.FC.*.*."+s+"."+c+".*",
		)
	}
	return allow
}

// ConfinedPermissions returns the NATS permissions of a confined subscriber: publish only
// ConfinedPublishAllow (minus SubscriberPublishDeny), subscribe only to the events
// (keyreg.>) and its own inboxes (events.InboxPrefix(user).>).
func ConfinedPermissions(user string, maxConsumers int) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: ConfinedPublishAllow(user, maxConsumers), Deny: SubscriberPublishDeny()},
		Subscribe: &server.SubjectPermission{Allow: []string{events.SubjectPrefix + ".>", events.InboxPrefix(user) + ".>"}},
	}
}

// inProcessPassword is the password of InProcessUser: random, never written anywhere, and
// the same for every server of this process so that reloading the users keeps it.
var inProcessPassword = sync.OnceValue(func() string { return rand.Text() + rand.Text() })

// configureAccess makes the embedded server require a user: InProcessUser for keyreg's own
// in-process connection (it needs no credentials: it is the server's no-auth user, allowed
// only in-process), and each of subs with SubscriberPermissions. Every user stays in the
// global account, where the KEYREG stream lives.
func configureAccess(so *server.Options, subs []Subscriber) error {
	users := []*server.User{{
		Username:               InProcessUser,
		Password:               inProcessPassword(),
		AllowedConnectionTypes: map[string]struct{}{"IN_PROCESS": {}},
	}}
	seen := map[string]bool{InProcessUser: true}
	for _, s := range subs {
		switch {
		case s.User == "" || s.Password == "":
			return fmt.Errorf("natsserver: nats subscriber: user and password are required")
		case seen[s.User]:
			return fmt.Errorf("natsserver: nats subscriber %q: the name is taken", s.User)
		}
		seen[s.User] = true
		perms := SubscriberPermissions()
		if s.MaxConsumers > 0 {
			perms = ConfinedPermissions(s.User, s.MaxConsumers)
		}
		users = append(users, &server.User{
			Username:               s.User,
			Password:               s.Password,
			Permissions:            perms,
			AllowedConnectionTypes: map[string]struct{}{"STANDARD": {}, "WEBSOCKET": {}},
		})
	}
	so.Users = users
	so.NoAuthUser = InProcessUser
	return nil
}

// checkListen fails at once when addr cannot be listened on (taken, say).
func checkListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("natsserver: nats listen: %w", err)
	}
	return ln.Close()
}
