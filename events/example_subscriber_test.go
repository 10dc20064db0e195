package events_test

import (
	"context"
	"encoding/json"
	"log"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A service follows the key changes of workspace acme with a durable consumer, using
// nothing but nats.go: it resumes after the last event it acknowledged, across restarts.
// The connection uses the subscriber credentials of keyreg serve --nats-listen.
func Example_subscriber() {
	ctx := context.Background()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.UserInfo("subscriber", os.Getenv("KEYREG_NATS_PASSWORD")))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.CreateOrUpdateConsumer(ctx, "KEYREG", jetstream.ConsumerConfig{
		Durable:       "billing-acme",
		FilterSubject: "keyreg.acme.key.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		log.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev struct {
			ID      string          `json:"id"`
			Type    string          `json:"type"`    // keyreg.key.revoked.v1, ...
			Subject string          `json:"subject"` // key/<id>
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			m.Term() // not a CloudEvent: never redeliver
			return
		}
		log.Printf("%s %s %s", ev.Type, ev.Subject, ev.Data)
		m.Ack()
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Stop()
	<-ctx.Done()
}
