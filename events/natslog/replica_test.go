package natslog_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
	"github.com/keyreg/keyreg/events/storetest"
)

// TestLogOnLaggingReplica runs the suite every events.Log passes on an R3 stream read
// through a replica that lags behind the leader as far as a replica can: it holds none of
// the stream. Every direct get of the log goes to a stand-in replica that answers as a
// replica that has not stored the messages yet does: 404. Appends go to the stream leader
// as always. Reads must still see every acknowledged append: a command decided on a stale
// read would refuse what it should do (workspace not found) or miss a stored retry.
func TestLogOnLaggingReplica(t *testing.T) {
	c := startCluster(t, 3)
	var asked atomic.Int64
	storetest.Run(t, func(t *testing.T) events.Log {
		l, stale := c.logOnLaggingReplica(t)
		t.Cleanup(func() { asked.Add(stale.Load()) })
		return l
	})
	if asked.Load() == 0 {
		t.Fatal("the stand-in replica answered no direct get: the test proved nothing")
	}
}

// TestReadOnLaggingReplica: on a replicated stream, Read, Get and an append's look for a
// retry already stored answer from the leader what a lagging replica lacks.
func TestReadOnLaggingReplica(t *testing.T) {
	c := startCluster(t, 3)
	l, stale := c.logOnLaggingReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	filter := events.AggregateFilter("acme", events.AggKey, "k1")
	var seqs []uint64
	for i := range 600 { // more than one direct batch (256)
		m := events.Message{Subject: fmt.Sprintf("keyreg.acme.key.k1.e%d", i), ID: events.NewID(), Data: []byte(`{}`)}
		if i%3 == 0 {
			m.Subject = "keyreg.acme.key.other.e"
		}
		s, err := l.Append(ctx, []events.Message{m})
		if err != nil {
			t.Fatal(err)
		}
		if i%3 != 0 {
			seqs = append(seqs, s[0])
		}
	}
	var got []uint64
	if err := l.Read(ctx, filter, 1, func(r events.Record) error {
		got = append(got, r.Seq)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, seqs) {
		t.Fatalf("Read through a lagging replica gave %d records, want the %d stored", len(got), len(seqs))
	}
	got = got[:0]
	if err := l.Read(ctx, filter, seqs[100], func(r events.Record) error {
		got = append(got, r.Seq)
		if len(got) == 3 {
			return errEnough
		}
		return nil
	}); !errors.Is(err, errEnough) {
		t.Fatalf("Read whose callback failed returned %v, want that failure", err)
	}
	if !slices.Equal(got, seqs[100:103]) {
		t.Fatalf("Read from %d gave %v, want %v", seqs[100], got, seqs[100:103])
	}
	r, err := l.Get(ctx, seqs[5])
	if err != nil || r.Seq != seqs[5] || r.Subject != "keyreg.acme.key.k1.e8" {
		t.Fatalf("Get(%d) through a lagging replica = %+v, %v", seqs[5], r, err)
	}
	if _, err := l.Get(ctx, 100000); err == nil {
		t.Fatal("Get of a sequence beyond the stream found something")
	}
	if stale.Load() == 0 {
		t.Fatal("the stand-in replica answered no direct get: the test proved nothing")
	}

	// A retry of an append stored already, without an expectation: the log looks for it
	// by the subject's last message, and must find it though the replica lacks it.
	m := events.Message{Subject: "keyreg.acme.identifier.i1.registered", ID: events.NewID(), Data: []byte(`{}`)}
	first, err := l.Append(ctx, []events.Message{m})
	if err != nil {
		t.Fatal(err)
	}
	again, err := l.Append(ctx, []events.Message{m})
	if err != nil || !slices.Equal(again, first) {
		t.Fatalf("a retried append answered %v, %v; want the first one's sequence %v", again, err, first)
	}
}

var errEnough = errors.New("enough")

// TestLeaderGetAsksAgain: a request to the stream leader sent while there is none (a
// leader lost, one being elected) is never answered; the log asks again rather than wait
// out its bound. Here the first leader get a Get sends is dropped, as a request that
// reached no leader is; the next ones reach the leader.
func TestLeaderGetAsksAgain(t *testing.T) {
	c := startCluster(t, 3)
	l, _ := c.logOnLaggingReplica(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seqs, err := l.Append(ctx, []events.Message{{Subject: "keyreg.acme.key.k1.created", ID: events.NewID(), Data: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	leaderGet := "$JS.API.STREAM.MSG.GET." + events.StreamName
	if err := c.servers[0].GlobalAccount().AddMapping(leaderGet, "lost.get"); err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	sub, err := c.conns[0].Subscribe("lost.get", func(m *nats.Msg) {
		if asked.Add(1) == 1 {
			return // no leader heard it
		}
		// Server 1 has no mapping: the request reaches the stream's leader from there.
		if a, err := c.conns[1].Request(leaderGet, m.Data, 10*time.Second); err == nil {
			m.Respond(a.Data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := c.conns[0].Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := l.Get(ctx, seqs[0])
	if err != nil || r.Seq != seqs[0] {
		t.Fatalf("Get(%d) with its first leader get lost = %+v, %v", seqs[0], r, err)
	}
	if asked.Load() < 2 {
		t.Fatalf("the leader was asked %d times, want the lost request asked again", asked.Load())
	}
}

// TestConflictReadsTheNearCopy: an append whose expectation fails looks for its messages
// among those stored since (they may be, after a lost acknowledgement). The conflict tells
// the filter's last sequence; a copy of the stream that holds the filter up to it answers,
// without a question to the stream leader (which, after a node's loss, answers its API
// only seconds after appends go through). A copy that lags is not trusted: the leader is
// asked.
func TestConflictReadsTheNearCopy(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, stale := c.logOnLaggingReplica(t)
	// Leader gets from server 0 go through a stand-in that counts them.
	leaderGet := "$JS.API.STREAM.MSG.GET." + events.StreamName
	if err := c.servers[0].GlobalAccount().AddMapping(leaderGet, "counted.get"); err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int64
	sub, err := c.conns[0].Subscribe("counted.get", func(m *nats.Msg) {
		asked.Add(1)
		if a, err := c.conns[1].Request(leaderGet, m.Data, 10*time.Second); err == nil {
			m.Respond(a.Data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	filter := events.AggregateFilter("acme", events.AggKey, "k1")
	first, err := l.Append(ctx, []events.Message{{Subject: "keyreg.acme.key.k1.created", ID: events.NewID(), Data: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	stale.Store(0)
	stale2 := events.Message{Subject: "keyreg.acme.key.k1.renamed", ID: events.NewID(), Data: []byte(`{}`), ExpectFilter: filter, ExpectSeq: 0}

	// The stand-in copy lacks the filter's record: the leader is asked.
	if _, err := l.Append(ctx, []events.Message{stale2}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("append at a stale expectation: %v, want a conflict", err)
	}
	if stale.Load() == 0 || asked.Load() == 0 {
		t.Fatalf("with a copy that lags: %d direct gets, %d leader gets; want both", stale.Load(), asked.Load())
	}

	// A copy that holds it: no leader get. (The stand-in goes; server 0's own replica
	// answers, once it has the record.)
	for _, subj := range []string{"$JS.API.DIRECT.GET." + events.StreamName, "$JS.API.DIRECT.GET." + events.StreamName + ".>"} {
		c.servers[0].GlobalAccount().RemoveMapping(subj)
	}
	js, _ := jetstream.New(c.conns[0])
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for { // server 0's replica may lag a moment
		if _, err := s.GetMsg(ctx, first[0]); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("server 0's replica never held the record")
		}
		time.Sleep(20 * time.Millisecond)
	}
	asked.Store(0)
	stale3 := stale2
	stale3.ID = events.NewID()
	if _, err := l.Append(ctx, []events.Message{stale3}); !errors.Is(err, events.ErrConflict) {
		t.Fatalf("append at a stale expectation: %v, want a conflict", err)
	}
	if asked.Load() != 0 {
		t.Fatalf("a conflict whose copy holds the filter asked the leader %d times", asked.Load())
	}

}

// testCluster is a NATS cluster of embedded servers, each with an in-process connection.
type testCluster struct {
	servers []*natsserver.Server
	conns   []*nats.Conn
}

// startCluster starts n clustered embedded servers on 127.0.0.1 (ports chosen now) and
// waits until their JetStream has a meta leader.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	ports := make([]int, n)
	var lns []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	var peers []string
	for i, p := range ports {
		lns[i].Close()
		peers = append(peers, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	c := &testCluster{servers: make([]*natsserver.Server, n), conns: make([]*nats.Conn, n)}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			c.servers[i], errs[i] = natsserver.Start(natsserver.Options{StoreDir: t.TempDir(), Cluster: &natsserver.Cluster{
				Name: "lag", ServerName: fmt.Sprintf("n%d", i), Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Peers: peers,
			}})
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for i, s := range c.servers {
			if c.conns[i] != nil {
				c.conns[i].Close()
			}
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
	}
	for i, s := range c.servers {
		nc, err := natsserver.ConnectInProcess(s)
		if err != nil {
			t.Fatal(err)
		}
		c.conns[i] = nc
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, routes := natsserver.MetaLeader(c.servers[0])
		if leader != "" && routes >= n-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no JetStream meta leader after 30s (routes %d)", routes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Direct gets published on server 0 go to the stand-in replica (logOnLaggingReplica).
	acc := c.servers[0].GlobalAccount()
	for src, dest := range map[string]string{
		"$JS.API.DIRECT.GET." + events.StreamName:        "stale.get",
		"$JS.API.DIRECT.GET." + events.StreamName + ".>": "stale.last.>",
	} {
		if err := acc.AddMapping(src, dest); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// logOnLaggingReplica creates the stream afresh with three replicas and returns a Log on
// server 0, whose direct gets all go to a stand-in replica (a subject mapping of server
// 0's account sends them there) that answers "not found", as a replica that has not
// stored the messages yet does; stale counts the direct gets it answered.
func (c *testCluster) logOnLaggingReplica(t *testing.T) (l *natslog.Log, stale *atomic.Int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(c.conns[0])
	if err != nil {
		t.Fatal(err)
	}
	for { // JetStream of a cluster just formed may not answer at once
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := js.DeleteStream(dctx, events.StreamName)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("delete stream: %v", err)
		}
		t.Logf("delete stream: %v (asking again)", err)
		time.Sleep(100 * time.Millisecond)
	}
	// Each attempt has a bound of its own, as serve's openClusterLog gives it: a request
	// that reached no meta leader (one being elected on a busy machine) is never answered
	// (seen in CI: one create took the whole minute).
	var info *jetstream.StreamInfo
	for {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err = natslog.Open(actx, c.conns[0], natslog.Options{Replicas: 3}); err == nil {
			var s jetstream.Stream
			s, err = js.Stream(actx, events.StreamName)
			if err == nil {
				info, err = s.Info(actx)
			}
			if err == nil && info.Cluster != nil && info.Cluster.Leader != "" && len(info.Cluster.Replicas) == 2 {
				acancel()
				break
			}
		}
		acancel()
		if ctx.Err() != nil {
			t.Fatalf("no R3 stream with a leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Publishes from server 0 reach the stream once the leader's interest in its subjects
	// has come over the routes.
	for !c.servers[0].GlobalAccount().SubscriptionInterest("keyreg.acme.key.k1.created") {
		if ctx.Err() != nil {
			t.Fatal("server 0 never learnt of the stream's subjects")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stale = new(atomic.Int64)
	notFound := func(m *nats.Msg) {
		stale.Add(1)
		reply := nats.NewMsg(m.Reply)
		reply.Header.Set("Status", "404")
		reply.Header.Set("Description", "Message Not Found")
		m.RespondMsg(reply)
	}
	for _, subj := range []string{"stale.get", "stale.last.>"} {
		sub, err := c.conns[0].Subscribe(subj, notFound)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sub.Unsubscribe() })
	}
	if err := c.conns[0].Flush(); err != nil {
		t.Fatal(err)
	}
	l, err = natslog.Open(ctx, c.conns[0], natslog.Options{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	return l, stale
}
