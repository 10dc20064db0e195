package natslog_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
)

// TestKVLease: one owner at a time; renewal keeps it; release or expiry hands it over;
// a holder that lost it cannot renew.
func TestKVLease(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ttl := time.Second
	a, err := natslog.OpenKVLease(ctx, e.Log.JetStream(), "sealer", "a", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := natslog.OpenKVLease(ctx, e.Log.JetStream(), "sealer", "b", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	mustAcquire := func(l *natslog.KVLease, want bool) {
		t.Helper()
		ok, err := l.TryAcquire(ctx)
		if err != nil || ok != want {
			t.Fatalf("%s TryAcquire = %t, %v; want %t", l.Owner(), ok, err, want)
		}
	}
	mustAcquire(a, true)
	mustAcquire(b, false)
	if h, _ := b.Holder(ctx); h != "a" {
		t.Fatalf("holder %q, want a", h)
	}
	// Renewals keep it past the TTL: time must pass here, so the test sleeps (it waits
	// for nothing).
	for range 4 {
		time.Sleep(ttl / 3)
		if err := a.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		mustAcquire(b, false)
	}
	// Release hands it over at once.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	mustAcquire(b, true)
	mustAcquire(a, false)
	if err := a.Renew(ctx); err == nil {
		t.Fatal("a renewed a lease it does not hold")
	}
	// b stops renewing: after the TTL the lease is free, a takes it, and b cannot renew.
	deadline := time.Now().Add(10 * ttl)
	for {
		ok, err := a.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lease did not expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := b.Renew(ctx); err == nil {
		t.Fatal("b renewed a lease that expired and was taken by a")
	}
	if h, _ := b.Holder(ctx); h != "a" {
		t.Fatalf("holder %q after the expiry, want a", h)
	}
}
