package natsserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// A service follows the key changes of workspace acme with a durable consumer, using
// nothing but nats.go: it resumes after the last event it acknowledged, across restarts.
// It connects as subscriber fraud (keyreg subscriber add fraud --max-consumers 4), so it
// uses its own inbox prefix and one of its consumer names. This is the README's recipe,
// run against an embedded server that keyreg's side of the example starts and fills.
func Example_subscriber() {
	url, password, stop := startKeyreg()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	nc, err := nats.Connect(url, nats.UserInfo("fraud", password),
		nats.CustomInboxPrefix("_INBOX.fraud"))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(ctx, "KEYREG", jetstream.ConsumerConfig{
		Durable: "fraud-1", FilterSubject: "keyreg.acme.key.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		log.Fatal(err)
	}
	handled := make(chan struct{}, 2)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev struct {
			ID, Type, Subject string // keyreg.key.revoked.v1, key/<id>
			Data              json.RawMessage
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			m.Term() // not a CloudEvent: never redeliver
			return
		}
		fmt.Printf("%s %s %s\n", ev.Type, ev.Subject, ev.Data)
		m.Ack()
		handled <- struct{}{}
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Stop()

	for range 2 { // the example stops after the two key events keyreg appended
		select {
		case <-handled:
		case <-ctx.Done():
			log.Fatal(ctx.Err())
		}
	}
	// Output:
	// keyreg.key.renamed.v1 key/K1 {"name":"Billing","previous":"Prod"}
	// keyreg.key.revoked.v1 key/K1 {"previous_status":"active"}
}

// startKeyreg is keyreg's side of Example_subscriber: an embedded server listening on a
// free port of 127.0.0.1 with subscriber fraud, and a stream holding an event of
// workspace acme (which the subscriber's filter skips) and two of its key K1. It returns
// the server's URL, fraud's password and a function that stops the server.
func startKeyreg() (url, password string, stop func()) {
	dir, err := os.MkdirTemp("", "example-subscriber-")
	if err != nil {
		log.Fatal(err)
	}
	password = "example-password"
	s, err := natsserver.Start(natsserver.Options{StoreDir: dir, Listen: "127.0.0.1:0",
		Subscribers: []natsserver.Subscriber{{User: "fraud", Password: password, MaxConsumers: 4}}})
	if err != nil {
		log.Fatal(err)
	}
	stop = func() {
		s.Shutdown()
		s.WaitForShutdown()
		os.RemoveAll(dir)
	}
	nc, err := natsserver.ConnectInProcess(s)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := natslog.Open(ctx, nc, natslog.Options{})
	if err != nil {
		log.Fatal(err)
	}
	appendEvent := func(agg events.Aggregate, id string, p events.Payload) {
		e, err := events.NewEvent("acme", agg, id, p, events.Meta{Actor: "example"}, "", time.Now())
		if err != nil {
			log.Fatal(err)
		}
		data, err := e.Encode()
		if err != nil {
			log.Fatal(err)
		}
		msg := events.Message{Subject: events.Subject("acme", agg, id, e.Type), ID: e.ID, Data: data}
		if _, err := l.Append(ctx, []events.Message{msg}); err != nil {
			log.Fatal(err)
		}
	}
	appendEvent(events.AggWorkspace, "acme", events.WorkspaceCreated{Name: "Acme"})
	appendEvent(events.AggKey, "K1", events.KeyRenamed{Name: "Billing", Previous: "Prod"})
	appendEvent(events.AggKey, "K1", events.KeyRevoked{PreviousStatus: "active"})
	return s.ClientURL(), password, stop
}
