package server_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/server"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

func listenNATS(cfg *server.Config) { cfg.NATSListen = "127.0.0.1:0" }

// sharedSubscriber turns on the deprecated shared subscriber.
func sharedSubscriber(cfg *server.Config) { cfg.NATSSubscriberUser = server.DefaultNATSSubscriberUser }

// scenario changes workspace acme through the HTTP API in every way a key and an
// identifier can change.
func scenario(t *testing.T, f fixture) {
	t.Helper()
	k := f.createKey(map[string]any{"name": "prod", "permissions": []string{"users.track"}, "allowlist": []string{"203.0.113.0/24"}})
	path := "/v1/workspaces/" + f.ws + "/keys/" + k.Key.ID
	f.json("PUT", path+"/allowlist", f.writer, map[string]any{"allowlist": []string{"198.51.100.0/24"}}, 200, nil, "Keyreg-Reason", "office moved")
	f.json("PATCH", path, f.writer, map[string]any{"name": "prod-eu", "permissions": []string{"users.track", "users.export.ids"}}, 200, nil)
	f.json("POST", path+"/rotate", f.writer, map[string]any{"grace_seconds": 60}, 200, nil)
	f.json("DELETE", path, f.writer, nil, 200, nil)
	var id wire.Identifier
	f.json("POST", "/v1/workspaces/"+f.ws+"/identifiers", f.writer, map[string]any{"kind": "segment", "name": "Lapsed"}, 201, &id)
	f.json("PATCH", "/v1/workspaces/"+f.ws+"/identifiers/"+id.ID, f.writer, map[string]any{"name": "Lapsed users"}, 200, nil)
	f.json("DELETE", "/v1/workspaces/"+f.ws+"/identifiers/"+id.ID, f.writer, nil, 200, nil)
}

// logRecords returns every record of the node's log from sequence from, as "seq subject".
func logRecords(t *testing.T, n *node, from uint64) []string {
	t.Helper()
	var out []string
	if err := n.Log.Read(context.Background(), ">", from, func(r events.Record) error {
		out = append(out, recordLine(r.Seq, r.Subject))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func recordLine(seq uint64, subject string) string { return fmt.Sprintf("%d %s", seq, subject) }

// TestNATSSubscribers runs serve with a NATS listener and the deprecated shared
// subscriber: a service connects over TCP with the subscriber password that the first
// start wrote, follows a scenario's events in order
// (a core subscription and an ordered consumer from the start), reads them again with a
// durable consumer that resumes after a restart, and cannot publish events nor delete or
// purge the stream.
func TestNATSSubscribers(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data, listenNATS, sharedSubscriber)
	pwFile := filepath.Join(data, server.NATSSubscriberPasswordFile)
	info, err := os.Stat(pwFile)
	if err != nil {
		t.Fatalf("no subscriber password file: %v", err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("password file mode %v, want 0600", info.Mode().Perm())
	}
	pw, _ := os.ReadFile(pwFile)
	password := strings.TrimSpace(string(pw))
	url := n.NATSURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("NATSURL %q", url)
	}
	connect := func(url string) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(url, nats.UserInfo(server.DefaultNATSSubscriberUser, password),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // the refusals below
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	if nc, err := nats.Connect(url, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a NATS client without credentials connected")
	}
	nc := connect(url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	before := n.lastSeq()
	live, err := nc.SubscribeSync("keyreg.>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	js, _ := jetstream.New(nc)
	oc, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, n, "acme")
	scenario(t, f)
	want := logRecords(t, n, 1)
	if len(want) < 15 {
		t.Fatalf("scenario made only %d events", len(want))
	}

	// The live subscription sees each stored event once, in order (matched by the event
	// id, Nats-Msg-Id), from before the scenario to its end.
	var wantIDs []string
	n.Log.Read(ctx, ">", 1, func(r events.Record) error { wantIDs = append(wantIDs, r.MsgID); return nil })
	var gotLive []string
	for len(gotLive) == 0 || gotLive[len(gotLive)-1] != wantIDs[len(wantIDs)-1] {
		m, err := live.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("live subscription after %d events: %v", len(gotLive), err)
		}
		gotLive = append(gotLive, m.Header.Get(jetstream.MsgIDHeader))
	}
	if len(gotLive) < len(wantIDs)-int(before) || !slices.Equal(gotLive, wantIDs[len(wantIDs)-len(gotLive):]) {
		t.Fatalf("live subscription got\n%v\nwant the end of\n%v", gotLive, wantIDs)
	}
	var gotOrdered []string
	for range want {
		m, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("ordered consumer after %d events: %v", len(gotOrdered), err)
		}
		md, _ := m.Metadata()
		gotOrdered = append(gotOrdered, recordLine(md.Sequence.Stream, m.Subject()))
		if _, err := events.Decode(m.Data()); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(gotOrdered, want) {
		t.Fatalf("ordered consumer got\n%v\nwant\n%v", gotOrdered, want)
	}

	// A durable consumer of acme's key events, acknowledged as read.
	dc, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: "audit-mirror", FilterSubject: "keyreg.acme.key.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("create durable consumer: %v", err)
	}
	readAll := func(c jetstream.Consumer) []uint64 {
		t.Helper()
		var seqs []uint64
		for {
			batch, err := c.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for m := range batch.Messages() {
				md, _ := m.Metadata()
				seqs = append(seqs, md.Sequence.Stream)
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n == 0 {
				return seqs
			}
		}
	}
	first := readAll(dc)
	if len(first) < 7 { // writer key, prod key's six events
		t.Fatalf("durable consumer read %v", first)
	}

	// Refused: publishing an event, deleting or purging the stream.
	nc.Publish("keyreg.acme.key.FORGED.revoked", []byte(`{}`))
	nc.Flush()
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for what, do := range map[string]func(context.Context) error{
		"published an event": func(c context.Context) error {
			_, err := js.Publish(c, "keyreg.acme.key.FORGED.created", []byte(`{}`))
			return err
		},
		"deleted the stream": func(c context.Context) error { return js.DeleteStream(c, events.StreamName) },
		"purged the stream":  func(c context.Context) error { return stream.Purge(c) },
	} {
		short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
		if err := do(short); err == nil {
			t.Errorf("a subscriber %s", what)
		}
		cancelShort()
	}
	got := logRecords(t, n, 1)
	if !slices.Equal(got[:len(want)], want) {
		t.Fatal("the log changed after refused writes")
	}
	for _, r := range got {
		if strings.Contains(r, "FORGED") {
			t.Fatalf("a subscriber's event is in the log: %s", r)
		}
	}

	// A restart keeps the password; the durable consumer resumes after what it acked.
	n.stop()
	n2 := startNode(t, data, listenNATS, sharedSubscriber)
	if pw2, _ := os.ReadFile(pwFile); string(pw2) != string(pw) {
		t.Fatal("the restart changed the subscriber password")
	}
	f2 := fixture{node: n2, ws: "acme", writer: f.writer}
	k := f2.createKey(map[string]any{"name": "after restart"})
	nc2 := connect(n2.NATSURL())
	js2, _ := jetstream.New(nc2)
	dc2, err := js2.Consumer(ctx, events.StreamName, "audit-mirror")
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(dc2); len(got) != 1 || got[0] != k.Key.Version {
		t.Fatalf("the durable consumer resumed with %v, want only the key %s created after the restart (seq %d)", got, k.Key.ID, k.Key.Version)
	}
}

// TestNATSListenOff: without a listener nothing is written and there is no URL.
func TestNATSListenOff(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data)
	if u := n.NATSURL(); u != "" {
		t.Fatalf("NATSURL %q without a listener", u)
	}
	if _, err := os.Stat(filepath.Join(data, server.NATSSubscriberPasswordFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("password file without a listener: %v", err)
	}
}

// TestEventsShutdown: shutting the server down ends an open event stream cleanly and at
// once, and a client resuming with Last-Event-ID on the restarted server gets every event
// exactly once.
func TestEventsShutdown(t *testing.T) {
	data := t.TempDir()
	n := startNode(t, data, func(cfg *server.Config) { cfg.ShutdownTimeout = 30 * time.Second })
	f := newFixture(t, n, "acme")
	var reader wire.KeyWithSecret
	f.json("POST", "/v1/workspaces/acme/keys", n.root, map[string]any{"name": "events", "permissions": []string{"keyreg.events.read"}}, 201, &reader)
	c := client.New(n.url, reader.Secret, &http.Client{})

	var got []uint64
	zero := uint64(0)
	ended := make(chan error, 1)
	received := make(chan struct{}, 100)
	go func() {
		ended <- c.FollowEvents(waitCtx(t), "acme", client.EventsOptions{After: &zero}, func(ev client.StreamEvent) error {
			got = append(got, ev.Seq)
			received <- struct{}{}
			return nil
		})
	}()
	f.createKey(map[string]any{"name": "one"})
	for i := range 4 { // workspace, writer, events key, one
		select {
		case <-received:
		case err := <-ended:
			t.Fatalf("the stream ended after %d events: %v", i, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("%d events in 30s, want 4", i)
		}
	}
	start := time.Now()
	n.stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("shutdown with an open event stream took %s", took)
	}
	if err := <-ended; !errors.Is(err, client.ErrStreamEnded) { // at the latest when waitCtx ends
		t.Fatalf("the stream ended with %v, want a clean end", err)
	}

	n2 := startNode(t, data)
	f2 := fixture{node: n2, ws: "acme", writer: f.writer}
	two := f2.createKey(map[string]any{"name": "two"})
	c2 := client.New(n2.url, reader.Secret, &http.Client{})
	last := got[len(got)-1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c2.FollowEvents(ctx, "acme", client.EventsOptions{After: &last}, func(ev client.StreamEvent) error {
		got = append(got, ev.Seq)
		if ev.Seq == two.Key.Version {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		t.Fatal(err)
	}
	var want []uint64
	n2.Log.Read(ctx, "keyreg.acme.>", 1, func(r events.Record) error { want = append(want, r.Seq); return nil })
	if !slices.Equal(got, want) {
		t.Fatalf("received %v across the restart, want %v", got, want)
	}
}

var errDone = errors.New("done")

// TestEventsAcrossRebuild: an online rebuild ends the event streams of the generation it
// replaces (so that generation can be retired), and the client resumes on the new one with
// Last-Event-ID without a gap or a repeat.
func TestEventsAcrossRebuild(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	c := client.New(n.url, n.root, &http.Client{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var got []uint64
	last := uint64(0)
	opened := make(chan struct{}, 1)
	ended := make(chan error, 1)
	follow := func() {
		ended <- c.FollowEvents(ctx, "acme", client.EventsOptions{After: &last, OnOpen: func(uint64) { opened <- struct{}{} }}, func(ev client.StreamEvent) error {
			got = append(got, ev.Seq)
			last = ev.Seq
			if len(got) == 4 { // workspace, writer, before, after
				return errDone
			}
			return nil
		})
	}
	go follow()
	<-opened
	f.createKey(map[string]any{"name": "before"})
	if err := n.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-ended; !errors.Is(err, client.ErrStreamEnded) {
		t.Fatalf("the stream of the replaced generation ended with %v", err)
	}
	go follow()
	<-opened
	f.createKey(map[string]any{"name": "after"})
	if err := <-ended; !errors.Is(err, errDone) {
		t.Fatal(err)
	}
	var want []uint64
	n.Log.Read(ctx, "keyreg.acme.>", 1, func(r events.Record) error { want = append(want, r.Seq); return nil })
	if !slices.Equal(got, want) {
		t.Fatalf("received %v across the rebuild, want %v", got, want)
	}
}
