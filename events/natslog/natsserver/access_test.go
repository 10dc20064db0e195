package natsserver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// listeningServer starts an embedded server listening on a free port of 127.0.0.1 with one
// subscriber "svc"/"s3cret", opens the log in-process and appends n events.
func listeningServer(t *testing.T, n int) (*natsserver.Server, *natslog.Log) {
	t.Helper()
	s, err := natsserver.Start(natsserver.Options{
		StoreDir: t.TempDir(), Listen: "127.0.0.1:0",
		Subscribers: []natsserver.Subscriber{{User: "svc", Password: "s3cret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := natsserver.ConnectInProcess(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	log, err := natslog.Open(context.Background(), nc, natslog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		appendEvent(t, log, i)
	}
	return s, log
}

func appendEvent(t *testing.T, log *natslog.Log, i int) uint64 {
	t.Helper()
	seqs, err := log.Append(context.Background(), []events.Message{{
		Subject: fmt.Sprintf("keyreg.acme.key.K%d.created", i), ID: events.NewID(), Data: []byte(fmt.Sprintf(`{"n":%d}`, i)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return seqs[0]
}

// subscriberConn connects over TCP as the subscriber and collects the asynchronous errors
// the server reports (permissions violations).
type subscriberConn struct {
	*nats.Conn
	mu   sync.Mutex
	errs []string
}

func connectSubscriber(t *testing.T, s *natsserver.Server) *subscriberConn {
	t.Helper()
	sc := &subscriberConn{}
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("svc", "s3cret"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		sc.mu.Lock()
		sc.errs = append(sc.errs, err.Error())
		sc.mu.Unlock()
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sc.Conn = nc
	return sc
}

// violation waits for the server to report a publish permissions violation on subject.
func (sc *subscriberConn) violation(t *testing.T, subject string) {
	t.Helper()
	want := `Permissions Violation for Publish to "` + subject + `"`
	for range 200 {
		sc.mu.Lock()
		for _, e := range sc.errs {
			if strings.Contains(e, want) {
				sc.mu.Unlock()
				return
			}
		}
		sc.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("no permissions violation reported for %s; errors: %v", subject, sc.errs)
}

func TestSubscriberCannotWrite(t *testing.T) {
	s, log := listeningServer(t, 3)
	ctx := context.Background()
	sc := connectSubscriber(t, s)
	js, err := jetstream.New(sc.Conn)
	if err != nil {
		t.Fatal(err)
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 500*time.Millisecond) }

	// A core publish on an event subject is dropped by the server.
	if err := sc.Publish("keyreg.acme.key.FORGED.revoked", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	sc.Flush()
	sc.violation(t, "keyreg.acme.key.FORGED.revoked")

	// So is a JetStream publish: no acknowledgement comes.
	c, cancel := short()
	_, err = js.Publish(c, "keyreg.acme.key.FORGED.created", []byte(`{}`))
	cancel()
	if err == nil {
		t.Error("a subscriber's JetStream publish was acknowledged")
	}
	sc.violation(t, "keyreg.acme.key.FORGED.created")

	stream, err := js.Stream(ctx, events.StreamName) // stream info is allowed
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	refused := []struct {
		name, subject string
		do            func(context.Context) error
	}{
		{"DeleteStream", "$JS.API.STREAM.DELETE.KEYREG", func(c context.Context) error { return js.DeleteStream(c, events.StreamName) }},
		{"PurgeStream", "$JS.API.STREAM.PURGE.KEYREG", func(c context.Context) error { return stream.Purge(c) }},
		{"DeleteMsg", "$JS.API.STREAM.MSG.DELETE.KEYREG", func(c context.Context) error { return stream.DeleteMsg(c, 1) }},
		{"SecureDeleteMsg", "$JS.API.STREAM.MSG.DELETE.KEYREG", func(c context.Context) error { return stream.SecureDeleteMsg(c, 2) }},
		{"UpdateStream", "$JS.API.STREAM.UPDATE.KEYREG", func(c context.Context) error {
			cfg := natslog.StreamConfig(1)
			cfg.DenyPurge, cfg.DenyDelete = false, false
			_, err := js.UpdateStream(c, cfg)
			return err
		}},
		{"CreateStream", "$JS.API.STREAM.CREATE.EVIL", func(c context.Context) error {
			_, err := js.CreateStream(c, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
			return err
		}},
	}
	t.Run("Refused", func(t *testing.T) {
		for _, r := range refused {
			t.Run(r.name, func(t *testing.T) {
				t.Parallel() // each waits for an answer that never comes
				c, cancel := short()
				defer cancel()
				if err := r.do(c); err == nil {
					t.Fatalf("%s by a subscriber succeeded", r.name)
				}
				sc.violation(t, r.subject)
			})
		}
	})

	// The stream is as it was: same messages, same protections.
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 || info.State.LastSeq != 3 || !info.Config.DenyPurge || !info.Config.DenyDelete {
		t.Fatalf("after refused writes: state %+v, deny purge %v, deny delete %v", info.State, info.Config.DenyPurge, info.Config.DenyDelete)
	}
	if last, _ := log.LastSeq(ctx); last != 3 {
		t.Fatalf("LastSeq %d, want 3", last)
	}
	// keyreg's own connection still appends.
	if seq := appendEvent(t, log, 3); seq != 4 {
		t.Fatalf("in-process append at %d, want 4", seq)
	}
}

func TestSubscriberAuthentication(t *testing.T) {
	s, _ := listeningServer(t, 0)
	for name, opts := range map[string][]nats.Option{
		"NoCredentials":  nil,
		"WrongPassword":  {nats.UserInfo("svc", "guess")},
		"InProcessUser":  {nats.UserInfo(natsserver.InProcessUser, "")},
		"InProcessGuess": {nats.UserInfo(natsserver.InProcessUser, "guess")},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), append(opts, nats.MaxReconnects(0))...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("err = %v, want an authorization error", err)
			}
		})
	}
	if _, err := natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Subscribers: []natsserver.Subscriber{{User: natsserver.InProcessUser, Password: "x"}}}); err == nil {
		t.Error("a subscriber named like the in-process user was accepted")
	}
}

// TestSubscriberReads: over TCP with subscriber credentials, a core subscription sees every
// new event in order, an ordered consumer reads the stream from the start, a durable pull
// consumer is created, read and acknowledged, and direct gets answer.
func TestSubscriberReads(t *testing.T) {
	s, log := listeningServer(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := connectSubscriber(t, s)
	js, err := jetstream.New(sc.Conn)
	if err != nil {
		t.Fatal(err)
	}

	live, err := sc.SubscribeSync("keyreg.acme.>")
	if err != nil {
		t.Fatal(err)
	}
	sc.Flush()
	for i := 5; i < 10; i++ {
		appendEvent(t, log, i)
	}
	for i := 5; i < 10; i++ {
		m, err := live.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("live event %d: %v", i, err)
		}
		if want := fmt.Sprintf("keyreg.acme.key.K%d.created", i); m.Subject != want {
			t.Fatalf("live event %d on %s, want %s", i, m.Subject, want)
		}
	}

	oc, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	for i := range 10 {
		m, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("ordered consumer, message %d: %v", i+1, err)
		}
		md, _ := m.Metadata()
		if md.Sequence.Stream != uint64(i+1) || string(m.Data()) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("ordered consumer: seq %d %s, want %d", md.Sequence.Stream, m.Data(), i+1)
		}
	}

	dc, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: "billing", FilterSubject: "keyreg.acme.key.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatalf("durable consumer: %v", err)
	}
	batch, err := dc.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack: %v", err)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("durable consumer read %d messages, want 10", n)
	}
	info, err := dc.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream != 10 || info.NumPending != 0 {
		t.Fatalf("durable consumer after acks: ack floor %d, pending %d", info.AckFloor.Stream, info.NumPending)
	}
	// The same durable, reopened by name, resumes after the acknowledged messages.
	appendEvent(t, log, 10)
	dc2, err := js.Consumer(ctx, events.StreamName, "billing")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dc2.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := m.Metadata(); md.Sequence.Stream != 11 {
		t.Fatalf("reopened durable resumed at %d, want 11", md.Sequence.Stream)
	}
	if err := js.DeleteConsumer(ctx, events.StreamName, "billing"); err != nil {
		t.Fatalf("delete own consumer: %v", err)
	}

	// The requests tools such as the nats CLI make: account info, stream names, and the
	// older durable-create subject.
	for subject, body := range map[string]string{
		"$JS.API.INFO":         "",
		"$JS.API.STREAM.NAMES": "",
		"$JS.API.CONSUMER.DURABLE.CREATE.KEYREG.legacy": `{"stream_name":"KEYREG","config":{"durable_name":"legacy","deliver_policy":"all",` +
			`"ack_policy":"explicit","filter_subject":"keyreg.acme.>"}}`,
		"$JS.API.CONSUMER.NAMES.KEYREG": "",
	} {
		m, err := sc.Request(subject, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		if strings.Contains(string(m.Data), `"error"`) {
			t.Fatalf("%s: %s", subject, m.Data)
		}
	}
	if c, err := js.Consumer(ctx, events.StreamName, "legacy"); err != nil || c.CachedInfo().NumPending != 11 {
		t.Fatalf("legacy durable: %v", err)
	}

	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetMsg(ctx, 3, jetstream.WithGetMsgSubject("keyreg.acme.key.K2.created"))
	if err != nil {
		t.Fatalf("direct get: %v", err)
	}
	if string(raw.Data) != `{"n":2}` {
		t.Fatalf("direct get: %s", raw.Data)
	}
	last, err := stream.GetLastMsgForSubject(ctx, "keyreg.acme.key.K4.*")
	if err != nil || last.Sequence != 5 {
		t.Fatalf("direct get last by subject: %v %v", last, err)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if len(sc.errs) > 0 {
		t.Fatalf("reads reported errors: %v", sc.errs)
	}
}
