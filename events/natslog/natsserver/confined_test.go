package natsserver_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// connectConfined connects over TCP as a confined subscriber, with its inbox prefix.
func connectConfined(t *testing.T, url, user, password string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(user, password), nats.CustomInboxPrefix(events.InboxPrefix(user)),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// TestConfinedSubscribers starts a server with no subscriber, adds two confined ones at
// run time (bcrypt passwords), and checks each is held to its own consumers: it reads
// through them, but may neither delete, read from, update nor look at keyreg's or the
// other's, nor create more than its limit; a removed subscriber is disconnected and can
// no longer connect.
func TestConfinedSubscribers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := natsserver.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"}
	s, err := natsserver.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	own, err := natsserver.ConnectInProcess(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(own.Close)
	log, err := natslog.Open(ctx, own, natslog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		appendEvent(t, log, i)
	}
	ownJS, _ := jetstream.New(own)
	// keyreg's own follower: a consumer with a name no subscriber has.
	keyregCons, err := ownJS.CreateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "keyreg-projector", AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	_ = keyregCons

	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	const limit = 3
	opts.Subscribers = []natsserver.Subscriber{
		{User: "billing", Password: hash("pw-a"), MaxConsumers: limit},
		{User: "fraud", Password: hash("pw-b"), MaxConsumers: limit},
	}
	if err := natsserver.ReloadSubscribers(s, opts); err != nil {
		t.Fatal(err)
	}
	ncA, jsA := connectConfined(t, s.ClientURL(), "billing", "pw-a")
	_, jsB := connectConfined(t, s.ClientURL(), "fraud", "pw-b")
	if _, err := nats.Connect(s.ClientURL(), nats.UserInfo("billing", "wrong")); err == nil {
		t.Fatal("a wrong password connected")
	}

	// B has a durable consumer; A reads through its own.
	bCons, err := jsB.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "fraud-1", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("fraud creates its consumer: %v", err)
	}
	aCons, err := jsA.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Durable: "billing-1", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: "keyreg.acme.>"})
	if err != nil {
		t.Fatalf("billing creates its consumer: %v", err)
	}
	batch, err := aCons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		got++
	}
	if got != 5 {
		t.Fatalf("billing read %d events through its consumer, want 5", got)
	}

	// The attacks, each refused with a permissions violation.
	denied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: allowed", what)
			return
		}
		if !errors.Is(err, nats.ErrPermissionViolation) && !errors.Is(err, jetstream.ErrNoHeartbeat) &&
			!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			t.Logf("%s: %v", what, err)
		}
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }
	c1, x1 := short()
	denied("delete keyreg's consumer", jsA.DeleteConsumer(c1, events.StreamName, "keyreg-projector"))
	x1()
	c2, x2 := short()
	denied("delete fraud's consumer", jsA.DeleteConsumer(c2, events.StreamName, "fraud-1"))
	x2()
	c3, x3 := short()
	_, err = jsA.CreateOrUpdateConsumer(c3, events.StreamName, jetstream.ConsumerConfig{Durable: "fraud-1", FilterSubject: "keyreg.nothing.>"})
	denied("update fraud's consumer", err)
	x3()
	c4, x4 := short()
	_, err = jsA.Consumer(c4, events.StreamName, "fraud-1")
	denied("look at fraud's consumer", err)
	x4()
	// Read from fraud's consumer with a raw pull request.
	_, err = ncA.Request("$JS.API.CONSUMER.MSG.NEXT."+events.StreamName+".fraud-1", []byte(`{"batch":1,"expires":1000000000}`), 2*time.Second)
	denied("pull from fraud's consumer", err)
	c5, x5 := short()
	stA, err := jsA.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatalf("billing reads the stream info: %v", err)
	}
	names := stA.ConsumerNames(c5)
	for range names.Name() {
		t.Error("billing listed a consumer name")
	}
	denied("list consumers", names.Err())
	x5()
	c6, x6 := short()
	_, err = jsA.CreateConsumer(c6, events.StreamName, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy}) // server-chosen name
	denied("create an unnamed consumer", err)
	x6()

	// Up to its limit and no further.
	for i := 2; i <= limit; i++ {
		name := events.ConsumerNames("billing", limit)[i-1]
		if _, err := jsA.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{Name: name, AckPolicy: jetstream.AckNonePolicy}); err != nil {
			t.Fatalf("billing creates %s: %v", name, err)
		}
	}
	c7, x7 := short()
	_, err = jsA.CreateOrUpdateConsumer(c7, events.StreamName, jetstream.ConsumerConfig{Name: "billing-4", AckPolicy: jetstream.AckNonePolicy})
	denied("create a consumer beyond the limit", err)
	x7()

	// Every other consumer is untouched, and fraud's has not moved.
	for _, name := range []string{"keyreg-projector", "fraud-1"} {
		if _, err := ownJS.Consumer(ctx, events.StreamName, name); err != nil {
			t.Errorf("consumer %s: %v", name, err)
		}
	}
	if info, err := bCons.Info(ctx); err != nil || info.Delivered.Consumer != 0 {
		t.Errorf("fraud's consumer: delivered %+v, %v; want nothing delivered", info.Delivered, err)
	}
	n := 0
	ownStream, err := ownJS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for range ownStream.ConsumerNames(ctx).Name() {
		n++
	}
	if n != 2+limit {
		t.Errorf("%d consumers on the stream, want %d", n, 2+limit)
	}

	// Remove billing: its connection is closed and it cannot connect again.
	closed := make(chan struct{})
	ncA.SetClosedHandler(func(*nats.Conn) { close(closed) })
	ncA.SetReconnectHandler(func(*nats.Conn) {})
	opts.Subscribers = opts.Subscribers[1:]
	if err := natsserver.ReloadSubscribers(s, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := nats.Connect(s.ClientURL(), nats.UserInfo("billing", "pw-a"), nats.MaxReconnects(0)); err == nil {
		t.Fatal("a removed subscriber connected")
	}
	deadline := time.After(30 * time.Second)
	for ncA.IsConnected() {
		select {
		case <-deadline:
			t.Fatal("the removed subscriber's connection is still open")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := jsB.Stream(ctx, events.StreamName); err != nil {
		t.Fatalf("fraud after billing's removal: %v", err)
	}
}

// TestNoStreamConsumerCap: the embedded server does not cap the stream at nats-server's
// default of 1,000 consumers, so keyreg's own followers are never refused one.
func TestNoStreamConsumerCap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := natsserver.ConnectInProcess(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := natslog.Open(ctx, nc, natslog.Options{}); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for i := range 1001 {
		_, err := js.CreateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
			Name: "c" + strconv.Itoa(i), AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: time.Minute,
		})
		if err != nil {
			t.Fatalf("consumer %d: %v", i+1, err)
		}
	}
}
