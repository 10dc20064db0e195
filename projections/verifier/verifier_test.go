package verifier_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/projections/keyindex"
	"github.com/keyreg/keyreg/projections/verifier"
)

// env is an embedded keyreg stream listening on 127.0.0.1 for subscribers, with keyreg's
// in-process log to append to. Subscribers reach it through its front.
type env struct {
	t     testing.TB
	dir   string
	addr  string // where the server listens
	front *front
	srv   *natsserver.Server
	conn  *nats.Conn
	log   *natslog.Log
}

// front is what the subscribers of a test dial: a dialer that reaches the server of the
// test that runs now, whatever port it chose. A server that restarts on a new port (port
// 0: no port is freed and bound again, which another process could take meanwhile) is
// reached again by a connection made before, through the URL it knows, as a service
// reaches keyreg again behind a fixed name. While no server runs, dialing fails at once.
type front struct {
	url  string // the URL subscribers connect to: the first server's
	mu   sync.Mutex
	addr string // the server's address now; "" while no server runs
}

func (f *front) set(addr string) {
	f.mu.Lock()
	f.addr = addr
	f.mu.Unlock()
}

// Dial implements nats.CustomDialer: it ignores the address asked for.
func (f *front) Dial(network, _ string) (net.Conn, error) {
	f.mu.Lock()
	addr := f.addr
	f.mu.Unlock()
	if addr == "" {
		return nil, errors.New("test front: no server running")
	}
	return (&net.Dialer{Timeout: 2 * time.Second}).Dial(network, addr)
}

// testSubscribers are the NATS users of the tests' streams.
var testSubscribers = []natsserver.Subscriber{{User: "svc", Password: "pw"},
	{User: "billing", Password: "pw-billing", MaxConsumers: 2}, {User: "fraud", Password: "pw-fraud", MaxConsumers: 2}}

// startEnv starts a stream with its data in dir, on a port of its choosing.
func startEnv(t testing.TB, dir string) *env { return startBehind(t, dir, &front{}) }

// restart starts the stream again on e's data, behind e's front, after e.stop.
func (e *env) restart() *env { return startBehind(e.t, e.dir, e.front) }

func startBehind(t testing.TB, dir string, f *front) *env {
	t.Helper()
	e, err := newEnv(dir, f, testSubscribers...)
	if err != nil {
		t.Fatal(err)
	}
	e.t = t
	t.Cleanup(e.stop)
	return e
}

// newEnv starts a stream with its data in dir and subscribers subs, behind f. Its caller
// stops it.
func newEnv(dir string, f *front, subs ...natsserver.Subscriber) (*env, error) {
	s, err := natsserver.Start(natsserver.Options{StoreDir: dir, Listen: "127.0.0.1:0", Subscribers: subs})
	if err != nil {
		return nil, err
	}
	nc, err := natsserver.ConnectInProcess(s)
	if err != nil {
		s.Shutdown()
		return nil, err
	}
	log, err := natslog.Open(context.Background(), nc, natslog.Options{})
	if err != nil {
		nc.Close()
		s.Shutdown()
		return nil, err
	}
	e := &env{dir: dir, addr: s.Addr().String(), front: f, srv: s, conn: nc, log: log}
	f.set(e.addr)
	if f.url == "" {
		f.url = s.ClientURL()
	}
	return e, nil
}

// stop shuts the server down; its front then fails to dial until a restart.
func (e *env) stop() {
	e.front.mu.Lock()
	if e.front.addr == e.addr {
		e.front.addr = ""
	}
	e.front.mu.Unlock()
	e.conn.Close()
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// connect connects over TCP through the front with opts.
func (e *env) connect(opts ...nats.Option) *nats.Conn {
	e.t.Helper()
	nc, err := nats.Connect(e.front.url, append([]nats.Option{nats.SetCustomDialer(e.front)}, opts...)...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// subscriber connects as the read-only subscriber, reconnecting for ever.
func (e *env) subscriber() *nats.Conn {
	e.t.Helper()
	return e.connect(nats.UserInfo("svc", "pw"), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
}

// add appends one event of aggregate agg/id in workspace ws and returns its sequence.
func (e *env) add(ws events.Workspace, agg events.Aggregate, id string, p events.Payload) uint64 {
	e.t.Helper()
	seq, err := e.append(ws, agg, id, p)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

// append appends one event of aggregate agg/id in workspace ws, as keyreg's commands do,
// and returns its sequence.
func (e *env) append(ws events.Workspace, agg events.Aggregate, id string, p events.Payload) (uint64, error) {
	ev, err := events.NewEvent(ws, agg, id, p, events.Meta{}, "", time.Now())
	if err != nil {
		return 0, err
	}
	b, err := ev.Encode()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	seqs, err := e.log.Append(ctx, []events.Message{{Subject: events.Subject(ws, agg, id, p.EventType()), ID: ev.ID, Data: b}})
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

func secret(name string) string { return events.FormatSecret(sha256.Sum256([]byte(name))) }

func prefixes(s ...string) []netip.Prefix {
	out := []netip.Prefix{}
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

var (
	inside  = netip.MustParseAddr("10.1.2.3")
	outside = netip.MustParseAddr("192.0.2.1")
)

func (e *env) createKey(id string, allow ...string) uint64 {
	return e.add("acme", events.AggKey, id, &events.KeyCreated{
		Name: id, Permissions: []events.Permission{"users.track"}, Allowlist: prefixes(allow...), SecretHash: events.HashSecret(secret(id)),
	})
}

// start starts a verifier on nc with opts (none: a MaxLag of a minute, so that a slow
// machine does not make its answers UNAVAILABLE in tests about other things).
func start(t testing.TB, nc *nats.Conn, opts ...verifier.Options) *verifier.Verifier {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	o := verifier.Options{MaxLag: time.Minute}
	if len(opts) > 0 {
		o = opts[0]
	}
	v, err := verifier.Start(ctx, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func waitFor(t testing.TB, v *verifier.Verifier, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, v *verifier.Verifier, key string, ip netip.Addr, perm events.Permission, code string) {
	t.Helper()
	if r := v.Verify(secret(key), ip, perm, time.Now()); r.Code != code {
		t.Errorf("Verify(%s, %s, %q) = %s, want %s", key, ip, perm, r.Code, code)
	}
}

// TestVerifierFollowsChanges: over a subscriber's TCP connection, the verifier starts
// caught up, and an allowlist change, a rotation, a permission change and a revocation
// each reach it and change its answer; events of other aggregates are ignored.
func TestVerifierFollowsChanges(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.add("acme", events.AggWorkspace, "acme", &events.WorkspaceCreated{Name: "Acme"})
	e.createKey("K1", "10.0.0.0/8")
	last := e.createKey("K2")
	v := start(t, e.subscriber())
	if v.Applied() != last || v.Keys() != 2 || v.Err() != nil {
		t.Fatalf("after Start: applied %d (want %d), %d keys, err %v", v.Applied(), last, v.Keys(), v.Err())
	}
	expect(t, v, "K1", inside, "users.track", keyindex.CodeValid)
	expect(t, v, "K1", outside, "users.track", keyindex.CodeIPNotAllowed)
	expect(t, v, "K1", inside, "users.export", keyindex.CodePermissionDenied)
	expect(t, v, "K1", inside, "", keyindex.CodeValid)
	expect(t, v, "nobody", inside, "", keyindex.CodeNotFound)
	if r := v.Verify("kr_short", inside, "", time.Now()); r.Code != keyindex.CodeMalformed {
		t.Errorf("malformed secret: %s", r.Code)
	}

	// The allowlist moves: the answers follow.
	waitFor(t, v, e.add("acme", events.AggKey, "K1", &events.AllowlistUpdated{Allowlist: prefixes("192.0.2.0/24"), Previous: prefixes("10.0.0.0/8")}))
	expect(t, v, "K1", outside, "users.track", keyindex.CodeValid)
	expect(t, v, "K1", inside, "users.track", keyindex.CodeIPNotAllowed)

	// Permissions change.
	waitFor(t, v, e.add("acme", events.AggKey, "K1", &events.KeyPermissionsUpdated{Permissions: []events.Permission{"users.export"}}))
	expect(t, v, "K1", outside, "users.export", keyindex.CodeValid)
	expect(t, v, "K1", outside, "users.track", keyindex.CodePermissionDenied)

	// A rotation with grace: both secrets work until the old one's time is up.
	until := time.Now().Add(time.Hour)
	waitFor(t, v, e.add("acme", events.AggKey, "K2", &events.KeySecretRotated{
		SecretHash: events.HashSecret(secret("K2b")), PreviousHash: events.HashSecret(secret("K2")), PreviousValidUntil: until,
	}))
	expect(t, v, "K2", inside, "", keyindex.CodeValid)
	expect(t, v, "K2b", inside, "", keyindex.CodeValid)
	unbounded := start(t, e.subscriber(), verifier.Options{MaxLag: -1}) // asked about an hour ahead
	if r := unbounded.Verify(secret("K2"), inside, "", until); r.Code != keyindex.CodeNotFound {
		t.Errorf("old secret after its grace: %s", r.Code)
	}
	if r := v.Verify(secret("K2"), inside, "", until); r.Code != keyindex.CodeUnavailable {
		t.Errorf("asked an hour ahead, a verifier bounded to a minute's lag answered %s", r.Code)
	}

	// Other aggregates pass by.
	e.add("acme", events.AggIdentifier, "I1", &events.IdentifierRegistered{Kind: events.KindSegment, Name: "Lapsed"})

	// A revocation.
	seq := e.add("acme", events.AggKey, "K1", &events.KeyRevoked{PreviousStatus: events.StatusActive})
	waitFor(t, v, seq)
	expect(t, v, "K1", outside, "users.export", keyindex.CodeRevoked)
	if k, ok := v.Key("acme", "K1"); !ok || k.Status != events.StatusRevoked || k.Version != seq {
		t.Errorf("Key(acme, K1) = %+v", k)
	}

	// The same answers as keyreg's own views built from the same log.
	store, err := projections.Open(t.TempDir(), projections.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var recs []events.Record
	e.log.Read(context.Background(), ">", 1, func(r events.Record) error { recs = append(recs, r); return nil })
	if err := store.Apply(recs); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	last = recs[len(recs)-1].Seq // the verifier's answers carry the sequence it applied: the stream's last
	for _, key := range []string{"K1", "K2", "K2b", "K3"} {
		for _, ip := range []netip.Addr{inside, outside, {}} {
			for _, perm := range []events.Permission{"", "users.track", "users.export"} {
				a, b := store.Verify(secret(key), ip, perm, now), v.Verify(secret(key), ip, perm, now)
				if a.AppliedSeq = last; fmt.Sprint(a) != fmt.Sprint(b) {
					t.Errorf("Verify(%s, %s, %q): keyreg %+v, verifier %+v", key, ip, perm, a, b)
				}
			}
		}
	}
}

// TestVerifierSurvivesRestart: the NATS server goes away and comes back (on the same
// data, reached through the same URL); the verifier reconnects, its consumer (ordered, or named billing-1 with a
// confined subscriber's credentials) is recreated after the last event it applied, and a
// revocation made meanwhile reaches it.
func TestVerifierSurvivesRestart(t *testing.T) {
	for _, name := range []string{"", "billing-1"} {
		t.Run("consumer="+name, func(t *testing.T) {
			dir := t.TempDir()
			e := startEnv(t, dir)
			e.createKey("K1")
			var mu sync.Mutex
			var transient []error
			nc := e.subscriber()
			if name != "" {
				nc = e.confined("billing", "pw-billing")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			v, err := verifier.Start(ctx, nc, verifier.Options{ConsumerName: name, OnError: func(err error) { mu.Lock(); transient = append(transient, err); mu.Unlock() }})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			expect(t, v, "K1", inside, "", keyindex.CodeValid)

			e.stop()
			e2 := e.restart()
			seq := e2.add("acme", events.AggKey, "K1", &events.KeyRevoked{PreviousStatus: events.StatusActive})
			if err := v.WaitFor(ctx, seq); err != nil {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("after the restart: %v (transient errors %v)", err, transient)
			}
			expect(t, v, "K1", inside, "", keyindex.CodeRevoked)
			waitFor(t, v, e2.createKey("K2"))
			expect(t, v, "K2", inside, "", keyindex.CodeValid)
			if v.Err() != nil || v.Keys() != 2 {
				t.Fatalf("err %v, %d keys", v.Err(), v.Keys())
			}
		})
	}
}

// TestVerifierStops: an event it cannot apply stops the verifier where it was (Err and
// WaitFor say why, Verify answers UNAVAILABLE); Close and a closed connection stop it too.
func TestVerifierStops(t *testing.T) {
	e := startEnv(t, t.TempDir())
	good := e.createKey("K1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed := start(t, e.subscriber())
	closed.Close()
	if !errors.Is(closed.Err(), verifier.ErrClosed) || !errors.Is(closed.WaitFor(ctx, 1_000_000), verifier.ErrClosed) {
		t.Fatalf("after Close: %v", closed.Err())
	}
	expect(t, closed, "K1", inside, "", keyindex.CodeUnavailable)

	v := start(t, e.subscriber())
	bad, err := e.log.Append(context.Background(), []events.Message{{
		Subject: "keyreg.acme.key.K1.exploded", ID: events.NewID(),
		Data: []byte(`{"specversion":"1.0","id":"x","source":"keyreg/acme","type":"keyreg.key.exploded.v1","subject":"key/K1","time":"2026-01-01T00:00:00Z","datacontenttype":"application/json","data":{}}`),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitFor(ctx, bad[0]); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor past a bad event: %v", err)
	}
	if v.Err() == nil || v.Applied() != good {
		t.Fatalf("after a bad event: err %v, applied %d (want %d)", v.Err(), v.Applied(), good)
	}
	expect(t, v, "K1", inside, "", keyindex.CodeUnavailable)

	nc := e.subscriber()
	if _, err := verifier.Start(ctx, nc, verifier.Options{}); err == nil {
		t.Fatal("Start succeeded on a stream with an event it cannot apply")
	}
	nc.Close()
	if _, err := verifier.Start(ctx, nc, verifier.Options{}); err == nil {
		t.Fatal("Start succeeded on a closed connection")
	}
	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancelShort()
	if _, err := verifier.Start(short, e.subscriber(), verifier.Options{Stream: "OTHER"}); err == nil {
		t.Fatal("Start succeeded on another stream, which subscribers may not read")
	}
}

// TestVerifierConnectionClosed: closing the service's connection stops the verifier.
func TestVerifierConnectionClosed(t *testing.T) {
	e := startEnv(t, t.TempDir())
	e.createKey("K1")
	nc := e.subscriber()
	v := start(t, nc)
	nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.WaitFor(ctx, 1_000_000); !errors.Is(err, verifier.ErrClosed) {
		t.Fatalf("WaitFor after the connection closed: %v", err)
	}
}

// TestVerifierFailsClosed: a verifier that stopped following the stream (Close, or its
// NATS server gone for good) does not answer VALID for a key revoked meanwhile: it answers
// UNAVAILABLE, and says how far behind it is.
func TestVerifierFailsClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("Close", func(t *testing.T) {
		e := startEnv(t, t.TempDir())
		created := e.createKey("K1")
		v := start(t, e.subscriber())
		expect(t, v, "K1", inside, "", keyindex.CodeValid)
		v.Close()
		revoked := e.add("acme", events.AggKey, "K1", &events.KeyRevoked{PreviousStatus: events.StatusActive})
		if r := v.Verify(secret("K1"), inside, "", time.Now()); r.Valid || r.Code != keyindex.CodeUnavailable || r.KeyID != "" {
			t.Fatalf("after Close, a key revoked since: %+v", r)
		}
		if v.Applied() != created || v.Lag(v.CaughtUpAt().Add(time.Minute)) != time.Minute {
			t.Fatalf("applied %d (want %d), lag a minute after catching up %s", v.Applied(), created, v.Lag(v.CaughtUpAt().Add(time.Minute)))
		}
		fresh := start(t, e.subscriber())
		waitFor(t, fresh, revoked)
		expect(t, fresh, "K1", inside, "", keyindex.CodeRevoked) // the revocation is real
	})

	t.Run("ServerGone", func(t *testing.T) {
		dir := t.TempDir()
		e := startEnv(t, dir)
		e.createKey("K1")
		v := start(t, e.connect(nats.UserInfo("svc", "pw"), nats.NoReconnect()))
		expect(t, v, "K1", inside, "", keyindex.CodeValid)
		e.stop()
		if err := v.WaitFor(ctx, 1_000_000); !errors.Is(err, verifier.ErrClosed) {
			t.Fatalf("after the server went away: %v", err)
		}
		e2 := e.restart()
		e2.add("acme", events.AggKey, "K1", &events.KeyRevoked{PreviousStatus: events.StatusActive})
		expect(t, v, "K1", inside, "", keyindex.CodeUnavailable)
	})
}

// TestVerifierMaxLag: a verifier that still follows but cannot confirm it is caught up
// (its server unreachable while the connection tries to reconnect) answers UNAVAILABLE
// once MaxLag has passed, and answers again, with the changes made meanwhile, once it has
// caught up.
func TestVerifierMaxLag(t *testing.T) {
	const maxLag = 300 * time.Millisecond
	dir := t.TempDir()
	e := startEnv(t, dir)
	e.createKey("K1")
	v := start(t, e.subscriber(), verifier.Options{MaxLag: maxLag})
	at := v.CaughtUpAt()
	if r := v.Verify(secret("K1"), inside, "", at); r.Code != keyindex.CodeValid {
		t.Fatalf("at CaughtUpAt: %s", r.Code)
	}
	if r := v.Verify(secret("K1"), inside, "", at.Add(maxLag+time.Millisecond)); r.Code != keyindex.CodeUnavailable {
		t.Fatalf("MaxLag after CaughtUpAt: %s", r.Code)
	}

	e.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := func() string { return v.Verify(secret("K1"), inside, "", time.Now()).Code }
	for code() != keyindex.CodeUnavailable {
		if ctx.Err() != nil {
			t.Fatalf("the server is gone, and after 30s the verifier still answers %s (lag %s)", code(), v.Lag(time.Now()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lag := v.Lag(time.Now()); lag <= maxLag || v.Err() != nil {
		t.Fatalf("UNAVAILABLE with lag %s (bound %s), err %v", lag, maxLag, v.Err())
	}

	e2 := e.restart()
	seq := e2.add("acme", events.AggKey, "K1", &events.KeyRevoked{PreviousStatus: events.StatusActive})
	if err := v.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	c := code()
	for c == keyindex.CodeUnavailable {
		if ctx.Err() != nil {
			t.Fatalf("back with the server, the verifier still answers UNAVAILABLE (lag %s)", v.Lag(time.Now()))
		}
		time.Sleep(10 * time.Millisecond)
		c = code()
	}
	if c != keyindex.CodeRevoked {
		t.Fatalf("after catching up: %s, want REVOKED", c)
	}
}

// BenchmarkVerify checks a valid secret against a verifier holding 1000 keys, from one
// goroutine and from all.
func BenchmarkVerify(b *testing.B) {
	e := startEnv(b, b.TempDir())
	var last uint64
	for i := range 1000 {
		last = e.createKey("K"+strconv.Itoa(i), "10.0.0.0/8", "2001:db8::/32")
	}
	v := start(b, e.subscriber())
	waitFor(b, v, last)
	sec := secret("K500")
	now := time.Now()
	b.Run("Serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r := v.Verify(sec, inside, "users.track", now); !r.Valid {
				b.Fatal(r.Code)
			}
		}
	})
	b.Run("Parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if r := v.Verify(sec, inside, "users.track", now); !r.Valid {
					b.Error(r.Code)
					return
				}
			}
		})
	})
}

// BenchmarkPropagation measures, per allowlist change, the time from the start of the
// append (fsync included) to the first Verify of a verifier on a subscriber's TCP
// connection that gives the new answer; and the part of it after the append was
// acknowledged. It reports the p50, p99 and max of each over b.N changes (run with
// -benchtime=3000x or more for a stable p99).
func BenchmarkPropagation(b *testing.B) { benchPropagation(b, "") }

// BenchmarkPropagationNamed is BenchmarkPropagation for a verifier of the confined
// subscriber billing following through its named consumer billing-1.
func BenchmarkPropagationNamed(b *testing.B) { benchPropagation(b, "billing-1") }

func benchPropagation(b *testing.B, consumerName string) {
	e := startEnv(b, b.TempDir())
	e.createKey("K1", "10.0.0.0/8")
	nc := e.subscriber()
	if consumerName != "" {
		nc = e.confined("billing", "pw-billing")
	}
	v := start(b, nc, verifier.Options{MaxLag: time.Minute, ConsumerName: consumerName})
	ctx := context.Background()
	total := make([]time.Duration, 0, b.N)
	afterAck := make([]time.Duration, 0, b.N)
	allow := [2][]netip.Prefix{prefixes("192.0.2.0/24"), prefixes("10.0.0.0/8")}
	ips := [2]netip.Addr{outside, inside}
	i := 0
	for b.Loop() {
		i++
		ev, _ := events.NewEvent("acme", events.AggKey, "K1", &events.AllowlistUpdated{Allowlist: allow[i%2]}, events.Meta{}, "", time.Now())
		data, _ := ev.Encode()
		msg := []events.Message{{Subject: events.Subject("acme", events.AggKey, "K1", events.TypeAllowlistUpdated), ID: ev.ID, Data: data}}
		t0 := time.Now()
		seqs, err := e.log.Append(ctx, msg)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := v.WaitFor(ctx, seqs[0]); err != nil {
			b.Fatal(err)
		}
		if r := v.Verify(secret("K1"), ips[i%2], "users.track", t1); !r.Valid {
			b.Fatalf("change %d: %s", i, r.Code)
		}
		t2 := time.Now()
		total = append(total, t2.Sub(t0))
		afterAck = append(afterAck, t2.Sub(t1))
	}
	report := func(name string, d []time.Duration) {
		slices.Sort(d)
		q := func(p float64) float64 { return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) }
		b.ReportMetric(q(0.50), name+"-p50-µs")
		b.ReportMetric(q(0.99), name+"-p99-µs")
		b.ReportMetric(float64(d[len(d)-1].Microseconds()), name+"-max-µs")
	}
	if len(total) > 0 {
		report("append-to-answer", total)
		report("ack-to-answer", afterAck)
	}
}
