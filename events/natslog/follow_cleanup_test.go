package natslog_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/eventstest"
	"github.com/keyreg/keyreg/events/natslog"
)

// TestFollowConsumerCleanup checks a follower's consumer on the server: it carries
// InactiveThreshold FollowInactiveThreshold (so the server drops it after a crash, when
// nobody deletes it), and it is deleted as soon as the follower returns.
func TestFollowConsumerCleanup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := eventstest.StartEmbedded(t, t.TempDir())
	log := e.Log
	for i := range 3 {
		subject := fmt.Sprintf("keyreg.acme.key.K%d.created", i)
		if _, err := log.Append(ctx, []events.Message{{Subject: subject, ID: events.NewID(), Data: []byte("{}")}}); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(e.Conn)
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() []*jetstream.ConsumerInfo {
		t.Helper()
		var out []*jetstream.ConsumerInfo
		l := stream.ListConsumers(ctx)
		for ci := range l.Info() {
			out = append(out, ci)
		}
		if err := l.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}

	fctx, stop := context.WithCancel(ctx)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		n := 0
		done <- log.FollowSubject(fctx, "keyreg.acme.>", 1, func(events.Record) error {
			if n++; n == 1 {
				close(started)
			}
			return nil
		})
	}()
	<-started
	cs := consumers()
	if len(cs) != 1 || cs[0].Config.InactiveThreshold != natslog.FollowInactiveThreshold {
		t.Fatalf("consumers while following: %d, threshold %v; want 1 with %v", len(cs), cs[0].Config.InactiveThreshold, natslog.FollowInactiveThreshold)
	}
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow returned %v", err)
	}
	if cs := consumers(); len(cs) != 0 {
		t.Fatalf("%d consumers after the follower returned, want 0", len(cs))
	}
}
