package natslog_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
)

// TestFollowStalledConsumerIsMadeAgain pauses a follower's consumer on the server, so that
// it still answers (heartbeats, info) but delivers nothing: the follower notices that its
// consumer holds records it does not deliver, makes another from the record after the
// last it got, and goes on with no gap and no duplicate. Without the stall watch it waits
// until the pause ends, an hour later.
func TestFollowStalledConsumerIsMadeAgain(t *testing.T) {
	e := eventstest.StartEmbedded(t, t.TempDir())
	log, err := natslog.Open(context.Background(), e.Conn, natslog.Options{FollowStallTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	add := func(i int) {
		if _, err := log.Append(ctx, []events.Message{{Subject: fmt.Sprintf("keyreg.acme.key.K%d.created", i), ID: events.NewID(), Data: []byte("{}")}}); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu  sync.Mutex
		got []uint64
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	waitCount := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the follower got %d records in 30 s, want %d", what, count(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- log.FollowSubject(fctx, events.WorkspaceFilter("acme"), 1, func(r events.Record) error {
			mu.Lock()
			got = append(got, r.Seq)
			mu.Unlock()
			return nil
		})
	}()
	for i := range 3 {
		add(i)
	}
	waitCount(3, "before the pause")

	js, err := jetstream.New(e.Conn)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	var paused int
	for name := range stream.ListConsumers(ctx).Info() {
		if _, err := js.PauseConsumer(ctx, events.StreamName, name.Name, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		paused++
	}
	if paused != 1 {
		t.Fatalf("paused %d consumers, want the follower's one", paused)
	}
	for i := 3; i < 6; i++ {
		add(i)
	}
	waitCount(6, "after the follower's consumer was paused")
	stop()
	if err := <-done; err != context.Canceled {
		t.Fatalf("FollowSubject returned %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[1 2 3 4 5 6]" {
		t.Fatalf("the follower got %v, want [1 2 3 4 5 6]", got)
	}
}
