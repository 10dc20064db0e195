package projections_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// A store fed by a projector answers queries and verifies secrets.
func Example() {
	ctx := context.Background()
	log := events.NewMemLog()
	secret := events.FormatSecret(sha256.Sum256([]byte("example")))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, ev := range []struct {
		agg events.Aggregate
		id  string
		p   events.Payload
	}{
		{events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"}},
		{events.AggKey, "K1", &events.KeyCreated{
			Name: "ci", Permissions: []events.Permission{"users.track"},
			Allowlist:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
			SecretHash: events.HashSecret(secret),
		}},
	} {
		e, err := events.NewEvent("acme", ev.agg, ev.id, ev.p, events.Meta{Actor: "root"}, "", now)
		if err != nil {
			panic(err)
		}
		data, _ := json.Marshal(e)
		msg := events.Message{Subject: events.Subject("acme", ev.agg, ev.id, e.Type), ID: e.ID, Data: data}
		if _, err := log.Append(ctx, []events.Message{msg}); err != nil {
			panic(err)
		}
	}

	store, err := projections.Open("views", projections.Options{FS: vfs.NewMem()})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	p := projections.NewProjector(store, log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go p.Run(ctx)
	if err := p.WaitFor(ctx, 2); err != nil {
		panic(err)
	}

	k, _ := store.Key(ctx, "acme", "K1")
	fmt.Println(k.Name, k.Status, k.Version)
	for _, ip := range []string{"10.1.2.3", "::ffff:10.1.2.3", "192.0.2.1"} {
		r := store.Verify(secret, netip.MustParseAddr(ip), "users.track", now)
		fmt.Println(ip, r.Code, r.KeyID, r.Permissions)
	}
	_, err = store.Key(ctx, "acme", "K2")
	fmt.Println(err)
	// Output:
	// ci active 2
	// 10.1.2.3 VALID K1 [users.track]
	// ::ffff:10.1.2.3 VALID K1 [users.track]
	// 192.0.2.1 IP_NOT_ALLOWED K1 []
	// key "K2" not found in workspace "acme"
}
