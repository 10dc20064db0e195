package nodetest_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
)

// TestNATSCluster: the three nats-server processes form a JetStream cluster; an R3 stream
// keeps taking messages once its leader is killed (a new one is elected), and the killed
// server starts again and is healthy.
func TestNATSCluster(t *testing.T) {
	c := nodetest.StartNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A request that reaches no meta leader (one being elected) is never answered: each
	// attempt has a bound of its own.
	for {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := js.CreateStream(cctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3, Storage: jetstream.FileStorage})
		ccancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	publish := func() uint64 {
		t.Helper()
		for {
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			ack, err := js.Publish(pctx, "t.x", []byte("x"))
			pcancel()
			if err == nil {
				return ack.Sequence
			}
			if ctx.Err() != nil {
				t.Fatalf("publish: %v", err)
			}
		}
	}
	publish()
	leader, err := c.StreamLeader(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	if seq := publish(); seq != 2 {
		t.Fatalf("after the leader was killed: sequence %d, want 2", seq)
	}
	now, err := c.StreamLeader(ctx, "T")
	if err != nil || now == leader {
		t.Fatalf("leader after the kill: %d, %v; the killed one was %d", now, err, leader)
	}
	c.Restart(leader) // waits until it reports itself healthy: its replica caught up
	if seq := publish(); seq != 3 {
		t.Fatalf("after the restart: sequence %d, want 3", seq)
	}
}
