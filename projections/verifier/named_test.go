package verifier_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/projections/verifier"
)

// confined connects over TCP as a confined subscriber (keyreg subscriber add), with its
// inbox prefix, reconnecting for ever.
func (e *env) confined(user, password string) *nats.Conn {
	e.t.Helper()
	return e.connect(nats.UserInfo(user, password), nats.CustomInboxPrefix(events.InboxPrefix(user)),
		nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
}

// consumer returns the info of consumer name on the stream, as keyreg sees it.
func (e *env) consumer(name string) (*jetstream.ConsumerInfo, error) {
	js, err := jetstream.New(e.conn)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, events.StreamName, name)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil
}

// TestVerifierConfinedConsumer: a verifier with confined subscriber billing's credentials
// follows the stream through the consumer billing-1 that it creates: it sees a key
// created, allowlisted, rotated and revoked and answers as keyreg does; when keyreg
// deletes its consumer from under it, it recreates it under the same name and misses
// nothing written meanwhile; Close deletes the consumer.
func TestVerifierConfinedConsumer(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.add("acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	e.createKey("K1", "10.0.0.0/8")
	last := e.createKey("K2")
	var mu sync.Mutex
	var transient []string
	nc := e.confined("billing", "pw-billing")
	v := start(t, nc, verifier.Options{MaxLag: time.Minute, ConsumerName: "billing-1", OnError: func(err error) {
		mu.Lock()
		transient = append(transient, err.Error())
		mu.Unlock()
	}})
	if v.Applied() != last || v.Keys() != 2 || v.Err() != nil {
		t.Fatalf("after Start: applied %d (want %d), %d keys, err %v", v.Applied(), last, v.Keys(), v.Err())
	}
	info, err := e.consumer("billing-1")
	if err != nil {
		t.Fatalf("the verifier's consumer: %v", err)
	}
	if info.Config.AckPolicy != jetstream.AckNonePolicy || !info.Config.MemoryStorage || info.Config.InactiveThreshold != verifier.ConsumerInactiveThreshold {
		t.Errorf("consumer config %+v", info.Config)
	}
	expect(t, v, "K1", inside, "users.track", keyindex.CodeValid)
	expect(t, v, "K1", outside, "users.track", keyindex.CodeIPNotAllowed)

	waitFor(t, v, e.add("acme", events.AggKey, "K1", &events.AllowlistUpdated{Allowlist: prefixes("192.0.2.0/24"), Previous: prefixes("10.0.0.0/8")}))
	expect(t, v, "K1", outside, "users.track", keyindex.CodeValid)
	expect(t, v, "K1", inside, "users.track", keyindex.CodeIPNotAllowed)
	until := time.Now().Add(time.Hour)
	waitFor(t, v, e.add("acme", events.AggKey, "K2", &events.KeySecretRotated{
		SecretHash: events.HashSecret(secret("K2b")), PreviousHash: events.HashSecret(secret("K2")), PreviousValidUntil: until,
	}))
	expect(t, v, "K2", inside, "", keyindex.CodeValid)
	expect(t, v, "K2b", inside, "", keyindex.CodeValid)
	waitFor(t, v, e.add("acme", events.AggKey, "K1", &events.KeyRevoked{PreviousStatus: events.StatusActive}))
	expect(t, v, "K1", outside, "users.track", keyindex.CodeRevoked)

	// keyreg deletes the consumer; events written right after reach the verifier through
	// the consumer it recreates under the same name.
	js, _ := jetstream.New(e.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteConsumer(ctx, events.StreamName, "billing-1"); err != nil {
		t.Fatal(err)
	}
	var after []uint64
	for i := range 20 {
		after = append(after, e.createKey(fmt.Sprintf("N%d", i)))
	}
	seq := e.add("acme", events.AggKey, "K2", &events.KeyRevoked{PreviousStatus: events.StatusActive})
	waitFor(t, v, seq)
	expect(t, v, "K2b", inside, "", keyindex.CodeRevoked)
	for i, s := range after {
		if k, ok := v.Key("acme", fmt.Sprintf("N%d", i)); !ok || k.Version != s {
			t.Errorf("key N%d written after the delete: %+v, %v (want version %d)", i, k, ok, s)
		}
		expect(t, v, fmt.Sprintf("N%d", i), inside, "users.track", keyindex.CodeValid)
	}
	if v.Keys() != 22 || v.Err() != nil {
		t.Errorf("after the recreation: %d keys (want 22), err %v", v.Keys(), v.Err())
	}
	if _, err := e.consumer("billing-1"); err != nil {
		t.Errorf("the recreated consumer: %v", err)
	}
	mu.Lock()
	reported := strings.Join(transient, "\n")
	mu.Unlock()
	if !strings.Contains(reported, "recreating it") {
		t.Errorf("no recreation reported to OnError: %q", reported)
	}

	// The same answers as keyreg's own views built from the same log.
	store, err := projections.Open(t.TempDir(), projections.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var recs []events.Record
	e.log.Read(context.Background(), ">", 1, func(r events.Record) error { recs = append(recs, r); return nil })
	if err := store.Apply(recs); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	last = recs[len(recs)-1].Seq // the verifier's answers carry the sequence it applied: the stream's last
	for _, key := range []string{"K1", "K2", "K2b", "N0", "N19", "K3"} {
		for _, ip := range []netip.Addr{inside, outside} {
			for _, perm := range []events.Permission{"", "users.track"} {
				a, b := store.Verify(secret(key), ip, perm, now), v.Verify(secret(key), ip, perm, now)
				if a.AppliedSeq = last; fmt.Sprint(a) != fmt.Sprint(b) {
					t.Errorf("Verify(%s, %s, %q): keyreg %+v, verifier %+v", key, ip, perm, a, b)
				}
			}
		}
	}

	v.Close()
	if _, err := e.consumer("billing-1"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("after Close the consumer billing-1: %v, want not found", err)
	}
	if r := v.Verify(secret("N0"), inside, "", time.Now()); r.Code != keyindex.CodeUnavailable {
		t.Errorf("after Close: %s", r.Code)
	}
}

// TestVerifierConfinedNameRefused: a confined subscriber may not use another's consumer
// name nor an ordered consumer (no ConsumerName): Start fails with an error naming the
// consumer and the permission, and no consumer is left behind.
func TestVerifierConfinedNameRefused(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.createKey("K1")
	nc := e.confined("billing", "pw-billing")
	for _, name := range []string{"fraud-1", "billing-3", ""} {
		wait := 20 * time.Second // a named consumer's refusal is found within a couple of seconds
		if name == "" {
			wait = 5 * time.Second // an ordered consumer's only when ctx ends
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		v, err := verifier.Start(ctx, nc, verifier.Options{ConsumerName: name})
		cancel()
		if err == nil {
			v.Close()
			t.Fatalf("billing started a verifier with consumer name %q", name)
		}
		t.Logf("%q: %v", name, err)
		if !strings.Contains(err.Error(), "Permissions Violation") || !strings.Contains(err.Error(), "NAME-1") && !strings.Contains(err.Error(), "ConsumerName") ||
			name != "" && (!strings.Contains(err.Error(), name) || errors.Is(err, context.DeadlineExceeded)) {
			t.Errorf("consumer name %q: unclear error %v", name, err)
		}
		if name != "" {
			if _, err := e.consumer(name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
				t.Errorf("consumer %s: %v, want not found", name, err)
			}
		}
	}
}
