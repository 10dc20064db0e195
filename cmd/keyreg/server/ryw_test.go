package server_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	natsd "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// startNATS starts a NATS server with JetStream on 127.0.0.1 (a port chosen at run time,
// its store in t.TempDir()) for keyreg nodes started with --nats-url, and returns its URL.
func startNATS(t *testing.T) string {
	t.Helper()
	s, err := natsd.NewServer(&natsd.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, ServerName: "ryw"})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s.ClientURL()
}

// streamLast returns the last sequence of the KEYREG stream on the NATS server at url.
func streamLast(t *testing.T, url string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestTwoNodesReadYourWritesAndRetries: two keyreg nodes on one NATS server (--nats-url).
// A write on A answers with the sequence it reached; the Go client sends it with its reads
// on B, which see the write. A create retried with the same Idempotency-Key on B after A
// stopped (the first node gone before the client got its answer) appends nothing and
// answers as A did: status, key, ETag, Keyreg-Sequence, without the secret, with
// Idempotent-Replayed, though the key changed since.
func TestTwoNodesReadYourWritesAndRetries(t *testing.T) {
	url := startNATS(t)
	onNATS := func(c *server.Config) { c.NATSURL, c.Replicas = url, 1 }
	a := nodetest.Start(t, nodetest.Options{Config: []func(*server.Config){onNATS}})
	b := nodetest.Start(t, nodetest.Options{Root: a.Root, Config: []func(*server.Config){onNATS}})
	a.JSON("POST", "/v1/workspaces", a.Root, map[string]string{"id": "acme", "name": "Acme"}, 201, nil)

	create := map[string]any{"name": "ci", "permissions": []string{"users.track"}}
	st, h, body := a.Do("POST", "/v1/workspaces/acme/keys", a.Root, create, "Idempotency-Key", "create-ci")
	if st != 201 {
		t.Fatalf("create on A: %d %s", st, body)
	}
	seq, err := strconv.ParseUint(h.Get(wire.SequenceHeader), 10, 64)
	if err != nil || seq != streamLast(t, url) {
		t.Fatalf("create on A: %s %q, the stream ends at %d", wire.SequenceHeader, h.Get(wire.SequenceHeader), streamLast(t, url))
	}
	var first wire.KeyWithSecret
	json.Unmarshal(body, &first)

	ctx := context.Background()
	ca := client.New(a.URL, a.Root, nil)
	name := "renamed"
	renamed, err := ca.UpdateKey(ctx, "acme", first.Key.ID, client.KeyUpdate{Name: &name}, client.WriteOptions{})
	if err != nil || ca.Sequence() != renamed.Version || ca.Sequence() <= seq {
		t.Fatalf("update on A: %+v %v; the client remembers %d", renamed, err, ca.Sequence())
	}
	cb := client.New(b.URL, a.Root, nil)
	cb.ObserveSequence(ca.Sequence())
	k, err := cb.GetKey(ctx, "acme", first.Key.ID)
	if err != nil || k.Name != "renamed" || k.Version != renamed.Version {
		t.Fatalf("read on B with A's sequence: %+v %v, want version %d", k, err, renamed.Version)
	}
	if st, _, body := b.Do("GET", "/v1/workspaces/acme/keys?min_seq="+strconv.FormatUint(ca.Sequence()+100, 10), a.Root, nil); st != 400 {
		t.Fatalf("a read with min_seq beyond the stream: %d %s", st, body)
	}

	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	before := streamLast(t, url)
	st2, h2, body2 := b.Do("POST", "/v1/workspaces/acme/keys", a.Root, create, "Idempotency-Key", "create-ci")
	var again wire.KeyWithSecret
	json.Unmarshal(body2, &again)
	if st2 != 201 || h2.Get("Idempotent-Replayed") != "true" || h2.Get("ETag") != h.Get("ETag") ||
		h2.Get(wire.SequenceHeader) != h.Get(wire.SequenceHeader) || again.Secret != "" {
		t.Fatalf("the retry on B: %d %v %s\nthe first on A: %d %v", st2, h2, body2, st, h)
	}
	wantKey, _ := json.Marshal(first.Key)
	gotKey, _ := json.Marshal(again.Key)
	if string(gotKey) != string(wantKey) {
		t.Fatalf("the retry on B answers the key\n%s\nthe first on A answered\n%s", gotKey, wantKey)
	}
	if after := streamLast(t, url); after != before {
		t.Fatalf("the retry appended %d events", after-before)
	}
}
