package verifier_test

import (
	"context"
	"log"
	"net/netip"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/projections/verifier"
)

// A service verifies the keys its callers present without asking keyreg: the verifier
// follows the KEYREG stream of keyreg serve --nats-listen as the confined subscriber
// billing (keyreg subscriber add billing), through its consumer billing-1.
func ExampleStart() {
	nc, err := nats.Connect("nats://127.0.0.1:4222",
		nats.UserInfo("billing", os.Getenv("KEYREG_NATS_PASSWORD")),
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
	r := v.Verify("kr_...", netip.MustParseAddr("203.0.113.7"), "users.track", time.Now())
	if !r.Valid {
		log.Printf("refused: %s", r.Code) // MALFORMED, NOT_FOUND, REVOKED, EXPIRED, IP_NOT_ALLOWED, PERMISSION_DENIED, UNAVAILABLE
	}
	if r.Code == keyindex.CodeUnavailable {
		log.Printf("verifier behind by %s (applied sequence %d): %v", v.Lag(time.Now()), v.Applied(), v.Err())
	}

	// After a change through keyreg's API, wait until the verifier has it: the key's
	// version (its ETag) is the stream sequence of the change.
	if err := v.WaitFor(ctx, 1234); err != nil {
		log.Print(err)
	}
	// Health: Err is not nil once it stopped following (it then answers UNAVAILABLE).
	if err := v.Err(); err != nil {
		log.Print(err)
	}
}
