package verifier_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"net/netip"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/projections/verifier"
)

// A service verifies the keys its callers present without asking keyreg: the verifier
// follows the KEYREG stream of keyreg serve --nats-listen as the confined subscriber
// billing (keyreg subscriber add billing), through its consumer billing-1.
func ExampleStart() {
	// For the example, a keyreg node of its own: its NATS address, billing's password, and
	// a key created with POST /v1/workspaces/acme/keys (allowlist 203.0.113.0/24).
	node := startExampleNode()
	defer node.stop()
	natsURL, password := node.url, node.password
	secret, keyID := node.createKey("203.0.113.0/24")

	nc, err := nats.Connect(natsURL,
		nats.UserInfo("billing", password),
		nats.CustomInboxPrefix("_INBOX.billing"), // the only inboxes billing may subscribe to
		nats.MaxReconnects(-1))                   // the verifier resumes by itself after a reconnect
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Returns once caught up. Answers turn UNAVAILABLE when it cannot vouch for being at
	// most MaxLag behind the stream (0: verifier.DefaultMaxLag), or after it stopped.
	// ConsumerName is one of billing's consumer names, a different one per running
	// verifier; a name billing may not use fails with a permissions violation.
	v, err := verifier.Start(ctx, nc, verifier.Options{ConsumerName: "billing-1", MaxLag: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	// On every request: no network call, no allocation.
	for _, ip := range []string{"203.0.113.7", "198.51.100.1"} {
		r := v.Verify(secret, netip.MustParseAddr(ip), "users.track", time.Now())
		if r.Code == keyindex.CodeUnavailable {
			log.Printf("verifier behind by %s (applied sequence %d): %v", v.Lag(time.Now()), v.Applied(), v.Err())
		}
		fmt.Println(ip, r.Valid, r.Code) // MALFORMED, NOT_FOUND, REVOKED, EXPIRED, IP_NOT_ALLOWED, PERMISSION_DENIED, UNAVAILABLE
	}

	// After a change through keyreg's API (here DELETE .../keys/{id}), wait until the
	// verifier has it: the key's version (its ETag) is the stream sequence of the change.
	version := node.revoke(keyID)
	if err := v.WaitFor(ctx, version); err != nil {
		log.Fatal(err)
	}
	r := v.Verify(secret, netip.MustParseAddr("203.0.113.7"), "users.track", time.Now())
	// r.AppliedSeq is the stream sequence the verifier had applied: at least the version.
	fmt.Println("after the revocation:", r.Code, r.AppliedSeq >= version)
	// Health: Err is not nil once it stopped following (it then answers UNAVAILABLE).
	fmt.Println("health:", v.Err())
	// Output:
	// 203.0.113.7 true VALID
	// 198.51.100.1 false IP_NOT_ALLOWED
	// after the revocation: REVOKED true
	// health: <nil>
}

// exampleNode stands in for keyreg serve --nats-listen 127.0.0.1:0 in the examples: its
// embedded NATS server with subscriber billing, and its own in-process log.
type exampleNode struct {
	url, password string
	dir           string
	e             *env
}

func startExampleNode() *exampleNode {
	dir, err := os.MkdirTemp("", "keyreg-example-")
	if err != nil {
		log.Fatal(err)
	}
	password := rand.Text()
	e, err := newEnv(dir, &front{}, natsserver.Subscriber{User: "billing", Password: password, MaxConsumers: 1})
	if err != nil {
		log.Fatal(err)
	}
	return &exampleNode{url: e.front.url, password: password, dir: dir, e: e}
}

// createKey creates a key in workspace acme with permission users.track and allowlist
// allow, as keyreg does, and returns its secret and id.
func (n *exampleNode) createKey(allow ...string) (secret, id string) {
	var random [32]byte
	rand.Read(random[:])
	secret, id = events.FormatSecret(random), events.NewID()
	n.mustAdd(events.AggKey, id, &events.KeyCreated{Name: "billing-web", Permissions: []events.Permission{"users.track"},
		Allowlist: prefixes(allow...), SecretHash: events.HashSecret(secret)})
	return secret, id
}

// revoke revokes key id and returns the key's new version.
func (n *exampleNode) revoke(id string) uint64 {
	return n.mustAdd(events.AggKey, id, &events.KeyRevoked{PreviousStatus: events.StatusActive})
}

func (n *exampleNode) mustAdd(agg events.Aggregate, id string, p events.Payload) uint64 {
	seq, err := n.e.append("acme", agg, id, p)
	if err != nil {
		log.Fatal(err)
	}
	return seq
}

func (n *exampleNode) stop() {
	n.e.stop()
	os.RemoveAll(n.dir)
}
