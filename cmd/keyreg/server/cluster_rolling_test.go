package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/internal/nodetest"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// rollClient is the HTTP client of the rolling restart and SSE resume tests: its own
// connection pool, so that connections to a stopped node are not shared with other tests.
var rollClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// rollAnswer is one answered request: its status, headers and body; err is set when no
// answer came (the connection failed or the request's deadline passed).
type rollAnswer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// rollDo sends one request to url with token; body is nil or a value sent as JSON, headers
// come in name, value pairs. It never fails the test: it may run on writer goroutines.
func rollDo(ctx context.Context, method, url, token string, body any, headers ...string) rollAnswer {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return rollAnswer{err: err}
		}
		r = bytes.NewReader(b)
	}
	// A bound past the server's own (its write timeout, 60s): the server must answer
	// every request itself, even when a write waits out its 20s command bound and the
	// views' 10s on a loaded machine.
	ctx, cancel := context.WithTimeout(ctx, 70*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return rollAnswer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := rollClient.Do(req)
	if err != nil {
		return rollAnswer{err: err}
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return rollAnswer{err: err}
	}
	return rollAnswer{status: resp.StatusCode, header: resp.Header, body: out}
}

// rollRead GETs path on n, waiting until n's views have applied minSeq (Keyreg-Min-Sequence),
// and returns the 200 answer's body. A 503 with Retry-After (the views not there yet, the
// stream electing a leader) is asked again until ctx ends; anything else fails the test.
func rollRead(ctx context.Context, t *testing.T, n *nodetest.Node, token, path string, minSeq uint64) []byte {
	t.Helper()
	for {
		a := rollDo(ctx, "GET", n.URL+path, token, nil, wire.MinSequenceHeader, strconv.FormatUint(minSeq, 10))
		switch {
		case a.err == nil && a.status == 200:
			return a.body
		case a.err == nil && a.status == 503 && a.header.Get("Retry-After") != "":
		default:
			t.Fatalf("GET %s%s (min seq %d): %d %v %s", n.URL, path, minSeq, a.status, a.err, a.body)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s%s (min seq %d): still 503 when the test's deadline passed: %s", n.URL, path, minSeq, a.body)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rollSeq returns the Keyreg-Sequence of a write's answer, 0 if it has none.
func rollSeq(h http.Header) uint64 {
	seq, _ := strconv.ParseUint(h.Get(wire.SequenceHeader), 10, 64)
	return seq
}

// rollAck is an acknowledged change (a 2xx): the key, the stream sequence the answer gave
// (Keyreg-Sequence, equal to the key's version and ETag), and what the event must hold
// (the allowlist entry written, or the name of a created key).
type rollAck struct {
	key     string
	seq     uint64
	created bool
	mark    string
}

// rollLoad runs writers spread over a cluster's nodes and keeps what they were answered.
// A node under restart is marked by an odd gen: its writers use another node meanwhile.
type rollLoad struct {
	c     *nodetest.Cluster
	token string
	keys  []string // the keys whose allowlists the writers update

	gen []atomic.Uint64 // per node: odd while it is stopped or not yet ready again

	mu       sync.Mutex
	acks     []rollAck
	maxSeq   uint64         // the highest acknowledged sequence
	bad      []string       // any other failure: what the test reports
	byNode   map[int]int    // acknowledged changes per node
	statuses map[string]int // every failure, by kind, for the log
	created  atomic.Int64
}

func (l *rollLoad) ack(a rollAck, node int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks = append(l.acks, a)
	l.maxSeq = max(l.maxSeq, a.seq)
	l.byNode[node]++
}

// highest returns the highest acknowledged sequence and how many changes were acknowledged.
func (l *rollLoad) highest() (uint64, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxSeq, len(l.acks)
}

// node returns the node writer g should use: its own, unless that one is under restart.
func (l *rollLoad) node(g int) int {
	for i := range len(l.gen) {
		n := (g + i) % len(l.gen)
		if l.gen[n].Load()%2 == 0 {
			return n
		}
	}
	return g % len(l.gen)
}

// failure records a request that got no 2xx. A connection error counts as expected only
// when node i was under restart at some moment of the request (its gen odd at the start,
// or changed during it); a 503 only with a Retry-After header. Everything else is bad.
func (l *rollLoad) failure(i int, genBefore uint64, what string, a rollAnswer) {
	genAfter := l.gen[i].Load()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case a.err != nil && (genBefore%2 == 1 || genAfter != genBefore):
		l.statuses["connection error (node restarting)"]++
	case a.err != nil:
		l.statuses["connection error (node serving)"]++
		l.bad = append(l.bad, fmt.Sprintf("%s on node %d, not under restart: %v", what, i+1, a.err))
	case a.status == 503 && a.header.Get("Retry-After") != "":
		var p struct{ Detail string }
		json.Unmarshal(a.body, &p)
		l.statuses["503 with Retry-After: "+p.Detail[:min(len(p.Detail), 48)]]++
	default:
		l.statuses[strconv.Itoa(a.status)]++
		l.bad = append(l.bad, fmt.Sprintf("%s on node %d: %d (Retry-After %q) %s", what, i+1, a.status, a.header.Get("Retry-After"), a.body))
	}
}

// write makes writer g's r-th change: mostly an allowlist update of key g or g+1 (so each
// key has two writers, on different nodes: the nodes race on every key), every eighth a key
// creation (the first 600 of them).
func (l *rollLoad) write(ctx context.Context, g, r int) {
	i := l.node(g)
	n := l.c.Nodes[i]
	gen := l.gen[i].Load()
	mark := fmt.Sprintf("10.%d.%d.%d", g, r>>8&255, r&255)
	var a rollAnswer
	var what string
	create := r%8 == 7 && l.created.Add(1) <= 600
	if create {
		what = "create key " + mark
		a = rollDo(ctx, "POST", n.URL+"/v1/workspaces/acme/keys", l.token, map[string]any{"name": "k-" + mark, "permissions": []string{"users.track"}})
	} else {
		key := l.keys[(g+r%2)%len(l.keys)]
		what = "PUT allowlist " + mark + " of key " + key
		a = rollDo(ctx, "PUT", n.URL+"/v1/workspaces/acme/keys/"+key+"/allowlist", l.token, map[string]any{"allowlist": []string{mark + "/32"}})
	}
	if ctx.Err() != nil && a.err != nil {
		return // the load ended under this request
	}
	if a.err != nil || a.status/100 != 2 {
		l.failure(i, gen, what, a)
		time.Sleep(20 * time.Millisecond) // not a busy loop against a node that is going
		return
	}
	var k wire.Key
	if create {
		var ks wire.KeyWithSecret
		if err := json.Unmarshal(a.body, &ks); err != nil {
			l.failure(i, gen, what+": decode", rollAnswer{status: a.status, header: a.header, body: a.body})
			return
		}
		k = ks.Key
		mark = "k-" + mark
	} else if err := json.Unmarshal(a.body, &k); err != nil {
		l.failure(i, gen, what+": decode", rollAnswer{status: a.status, header: a.header, body: a.body})
		return
	}
	seq := rollSeq(a.header)
	if seq == 0 || seq != k.Version || a.header.Get("ETag") != strconv.Quote(strconv.FormatUint(k.Version, 10)) {
		l.mu.Lock()
		l.bad = append(l.bad, fmt.Sprintf("%s on node %d: %d with Keyreg-Sequence %q, ETag %q, version %d", what, i+1, a.status,
			a.header.Get(wire.SequenceHeader), a.header.Get("ETag"), k.Version))
		l.mu.Unlock()
		return
	}
	l.ack(rollAck{key: k.ID, seq: seq, created: create, mark: mark}, i)
}

// waitAcks waits until more than n changes are acknowledged in all (the load goes on).
func (l *rollLoad) waitAcks(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for {
		if _, got := l.highest(); got > n {
			return
		}
		select {
		case <-ctx.Done():
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("fewer than %d changes acknowledged before the deadline: failures %v %q", n, l.statuses, l.bad[:min(len(l.bad), 5)])
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestEmbeddedClusterRollingRestart (issue 13, "a rolling restart of all three nodes under
// load"): 16 writers spread over a three-node embedded cluster update the allowlists of 16
// keys (two writers on different nodes per key) and create keys, each keeping the Keyreg-Sequence of every 2xx (which must equal
// its ETag and the version in its body: the stream sequence of the key's last event). The nodes
// are restarted one at a time: SIGTERM, wait for the exit (status 0), start again on the
// same data dir, wait for /readyz 200; a node's writers use another node meanwhile. Then:
//   - every failed request was a connection error to the node under restart, or a 503
//     with Retry-After (a 500, a 503 without it, any other status, or a connection error
//     to a node not under restart fails the test);
//   - the first /readyz 200 of a restarted node reports a checkpoint at or past every
//     change acknowledged before it was started again;
//   - no acknowledged change is lost: on every node, each one is in its key's history at
//     the sequence its answer gave, holding what was written; every history ascends and
//     ends at its key's version;
//   - the nodes converge: with Keyreg-Min-Sequence the highest acknowledged sequence, the
//     workspace's key list, every key and every key's history read the same, byte for byte,
//     on the three nodes.
func TestEmbeddedClusterRollingRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{})
	n1 := c.Nodes[0]
	n1.JSON("POST", "/v1/workspaces", c.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var writer wire.KeyWithSecret
	n1.JSON("POST", "/v1/workspaces/acme/keys", c.Root, map[string]any{"name": "writer",
		"permissions": []string{"keyreg.keys.read", "keyreg.keys.write"}}, 201, &writer)
	l := &rollLoad{c: c, token: writer.Secret, gen: make([]atomic.Uint64, len(c.Nodes)), byNode: map[int]int{}, statuses: map[string]int{}}
	var setup uint64
	for i := range 16 {
		var k wire.KeyWithSecret
		h := n1.JSON("POST", "/v1/workspaces/acme/keys", writer.Secret, map[string]any{"name": fmt.Sprintf("shared-%d", i),
			"permissions": []string{"users.track"}}, 201, &k)
		l.keys = append(l.keys, k.Key.ID)
		setup = rollSeq(h)
	}
	for _, n := range c.Nodes { // every node has the keys before it takes writes on them
		rollRead(ctx, t, n, writer.Secret, "/v1/workspaces/acme/keys/"+l.keys[len(l.keys)-1], setup)
	}

	// The writers stop starting changes at the end rather than cancel those under way, so
	// that every change stored has its answer.
	const writers = 16
	var stop atomic.Bool
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; !stop.Load() && ctx.Err() == nil; r++ {
				l.write(ctx, g, r)
			}
		}()
	}
	defer func() { stop.Store(true); wg.Wait() }()

	type restart struct {
		before, ready uint64 // highest acknowledged sequence before the start; /readyz's first 200 checkpoint
		notReady      int    // /readyz answers other than 200 before it
	}
	var restarts []restart
	var outputs []*nodetest.SyncBuffer // what the stopped processes printed
	l.waitAcks(ctx, t, 300)
	for i := range c.Nodes {
		l.gen[i].Add(1) // under restart: its writers move to another node
		outputs = append(outputs, c.Nodes[i].Output)
		if err := c.Nodes[i].Stop(); err != nil {
			t.Fatalf("node %d: SIGTERM: %v\n%s", i+1, err, c.Nodes[i].Output.String())
		}
		_, acked := l.highest()
		l.waitAcks(ctx, t, acked+100) // the other two nodes take writes while it is down
		before, _ := l.highest()
		n := c.Start(i)
		r := restart{before: before}
		for {
			a := rollDo(ctx, "GET", n.URL+"/readyz", "", nil)
			if a.err == nil && a.status == 200 {
				var h struct{ Checkpoint uint64 }
				if err := json.Unmarshal(a.body, &h); err != nil {
					t.Fatalf("node %d /readyz: %s: %v", i+1, a.body, err)
				}
				r.ready = h.Checkpoint
				break
			}
			if a.err == nil && a.status != 503 {
				t.Fatalf("node %d /readyz while catching up: %d %s, want 503 or 200", i+1, a.status, a.body)
			}
			r.notReady++
			if ctx.Err() != nil {
				t.Fatalf("node %d not ready again before the test's deadline: %v %s\n%s", i+1, a.err, a.body, n.Output.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if r.ready < r.before {
			t.Fatalf("node %d answered /readyz 200 at checkpoint %d, before the change %d acknowledged before it started", i+1, r.ready, r.before)
		}
		restarts = append(restarts, r)
		l.gen[i].Add(1)
		_, acked = l.highest()
		l.waitAcks(ctx, t, acked+100) // load on the three nodes before the next restart
	}
	stop.Store(true)
	wg.Wait()

	top, total := l.highest()
	// The views converge on the stream up to a last change made after the load: every
	// change stored before it has a lower sequence.
	last := rollWrite(ctx, t, c.Nodes[0], writer.Secret, l.keys[0], "10.255.0.1")
	t.Logf("acknowledged %d changes (per node %v), highest sequence %d, the last change %d; failures: %v; restarts (highest acked before start, first ready checkpoint, /readyz not ready answers): %+v",
		total, l.byNode, top, last, l.statuses, restarts)
	if len(l.bad) > 0 {
		for i, out := range outputs {
			var errs []string
			for line := range strings.Lines(out.String()) {
				if (strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || strings.Contains(line, "shutting down")) && len(errs) < 8 {
					errs = append(errs, line)
				}
			}
			t.Logf("node %d logged before its restart: %s", i+1, errs)
		}
		t.Fatalf("%d failed requests were neither a connection error to the node under restart nor a 503 with Retry-After; first ones: %q",
			len(l.bad), l.bad[:min(len(l.bad), 10)])
	}

	// Every node: the list of keys, each key and its history, identical; every ack in it.
	byKey := map[string][]rollAck{}
	for _, a := range l.acks {
		byKey[a.key] = append(byKey[a.key], a)
	}
	var want map[string][]byte // node 1's answers, by path
	var listed int
	for i, n := range c.Nodes {
		got := map[string][]byte{}
		var ids []string
		for after := ""; ; {
			path := "/v1/workspaces/acme/keys?limit=1000&after=" + after
			b := rollRead(ctx, t, n, writer.Secret, path, last)
			got[path] = b
			var page struct {
				Keys []wire.Key `json:"keys"`
				Next string     `json:"next"`
			}
			if err := json.Unmarshal(b, &page); err != nil {
				t.Fatalf("node %d: %s: %v", i+1, b, err)
			}
			for _, k := range page.Keys {
				ids = append(ids, k.ID)
			}
			if after = page.Next; after == "" {
				break
			}
		}
		for id := range byKey {
			if !slices.Contains(ids, id) {
				t.Fatalf("node %d does not list key %s, acknowledged %d times", i+1, id, len(byKey[id]))
			}
		}
		for _, id := range ids {
			path := "/v1/workspaces/acme/keys/" + id
			kb := rollRead(ctx, t, n, writer.Secret, path, last)
			got[path] = kb
			var k wire.Key
			if err := json.Unmarshal(kb, &k); err != nil {
				t.Fatalf("node %d: key %s: %s: %v", i+1, id, kb, err)
			}
			var hist []wire.HistoryEntry
			for after := uint64(0); ; {
				hpath := fmt.Sprintf("%s/history?limit=1000&after=%d", path, after)
				b := rollRead(ctx, t, n, writer.Secret, hpath, last)
				got[hpath] = b
				var page struct {
					Events []wire.HistoryEntry `json:"events"`
					Next   uint64              `json:"next"`
				}
				if err := json.Unmarshal(b, &page); err != nil {
					t.Fatalf("node %d: history of %s: %s: %v", i+1, id, b, err)
				}
				hist = append(hist, page.Events...)
				if after = page.Next; after == 0 {
					break
				}
			}
			if len(hist) == 0 || hist[len(hist)-1].Sequence != k.Version {
				t.Fatalf("node %d: key %s at version %d: its history (%d events) does not end at that sequence", i+1, id, k.Version, len(hist))
			}
			at := map[uint64]json.RawMessage{}
			for j, e := range hist {
				if j > 0 && e.Sequence <= hist[j-1].Sequence {
					t.Fatalf("node %d: history of key %s: sequence %d after %d", i+1, id, e.Sequence, hist[j-1].Sequence)
				}
				at[e.Sequence] = e.Event
			}
			for _, a := range byKey[id] {
				event, ok := at[a.seq]
				if !ok {
					t.Fatalf("node %d: the change to key %s acknowledged at sequence %d is not in its history", i+1, id, a.seq)
				}
				var ev struct {
					Type string `json:"type"`
					Data struct {
						Name      string   `json:"name"`
						Allowlist []string `json:"allowlist"`
					} `json:"data"`
				}
				if err := json.Unmarshal(event, &ev); err != nil {
					t.Fatalf("node %d: key %s, sequence %d: %v", i+1, id, a.seq, err)
				}
				switch {
				case a.created && (ev.Type != "keyreg.key.created.v1" || ev.Data.Name != a.mark),
					!a.created && (ev.Type != "keyreg.key.allowlist_updated.v1" || !slices.Equal(ev.Data.Allowlist, []string{a.mark + "/32"})):
					t.Fatalf("node %d: key %s, sequence %d holds %s, want the change acknowledged (%+v)", i+1, id, a.seq, event, a)
				}
			}
		}
		if i == 0 {
			want, listed = got, len(ids)
			continue
		}
		if len(got) != len(want) {
			t.Fatalf("node %d answered %d reads, node 1 %d: the key lists differ", i+1, len(got), len(want))
		}
		for path, b := range want {
			if !bytes.Equal(got[path], b) {
				t.Fatalf("node %d: GET %s:\n%s\nnode 1:\n%s", i+1, path, got[path], b)
			}
		}
	}
	t.Logf("%d keys and their histories identical on the three nodes; %d acknowledged changes found in every node's histories", listed, total)
}

// sseRead follows an event stream (GET .../events), read by a goroutine. With resume set,
// it behaves as an EventSource client: a stream the server ends is opened again, at most
// resume times, with Last-Event-ID the id of the last event received.
type sseRead struct {
	ctx     context.Context
	node    *nodetest.Node
	ws      string
	token   string
	resume  int
	resumed int    // how many times it was opened again
	last    uint64 // the id of the last event taken

	events chan sseEvent // each event as it arrives; closed when the stream ends
	err    error         // why it ended, once events is closed
	mu     sync.Mutex
	notes  []string // the comment lines the streams sent
}

// sseOpen opens ws's event stream on n with token, query ("" or "?after=0") and headers
// (name, value pairs), and reads it until it ends or the test ends; a resumed stream
// starts after the last event taken, the Last-Event-ID of headers or 0. The stream must
// answer 200, or 503 with Retry-After until it does.
func sseOpen(ctx context.Context, t *testing.T, n *nodetest.Node, ws, token string, resume int, query string, headers ...string) *sseRead {
	t.Helper()
	s := &sseRead{ctx: ctx, node: n, ws: ws, token: token, resume: resume}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Last-Event-ID" {
			s.last, _ = strconv.ParseUint(headers[i+1], 10, 64)
		}
	}
	s.connect(t, query, headers...)
	return s
}

func (s *sseRead) connect(t *testing.T, query string, headers ...string) {
	t.Helper()
	for {
		ctx, cancel := context.WithCancel(s.ctx)
		t.Cleanup(cancel)
		req, err := http.NewRequestWithContext(ctx, "GET", s.node.URL+"/v1/workspaces/"+s.ws+"/events"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+s.token)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := rollClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s events%s %q: %v", s.node.URL, query, headers, err)
		}
		if resp.StatusCode == 200 {
			s.events = make(chan sseEvent, 1024)
			go s.read(resp.Body, s.events)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("GET %s events%s %q: %d %s", s.node.URL, query, headers, resp.StatusCode, b)
		}
		select {
		case <-s.ctx.Done():
			t.Fatalf("GET %s events%s: 503 until the test's deadline: %s", s.node.URL, query, b)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// read sends body's events to events, then closes it.
func (s *sseRead) read(body io.ReadCloser, events chan<- sseEvent) {
	defer close(events)
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	var e sseEvent
	var err error
	defer func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
	}()
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), ": ")
		switch {
		case sc.Text() == "":
			if e.id != 0 {
				events <- e
			}
			e = sseEvent{}
		case name == "id":
			id, perr := strconv.ParseUint(value, 10, 64)
			if perr != nil {
				err = fmt.Errorf("event id %q: %w", value, perr)
				return
			}
			e.id = id
		case name == "event":
			e.typ = value
		case name == "data":
			e.data = value
		case strings.HasPrefix(sc.Text(), ":"):
			s.mu.Lock()
			s.notes = append(s.notes, sc.Text())
			s.mu.Unlock()
		}
	}
	if err = sc.Err(); err == nil {
		err = io.EOF
	}
}

// take returns the next n events; it fails the test if the stream ends first (and may not
// be resumed) or the test's ctx ends (a stream that stops sending).
func (s *sseRead) take(t *testing.T, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	for len(out) < n {
		select {
		case e, ok := <-s.events:
			if ok {
				out = append(out, e)
				s.last = e.id
				continue
			}
			var warns []string
			for line := range strings.Lines(s.node.Output.String()) {
				if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
					warns = append(warns, line)
				}
			}
			s.mu.Lock()
			ended, notes := s.err, s.notes
			s.mu.Unlock()
			if s.resumed >= s.resume {
				t.Fatalf("the event stream of %s ended after %d of %d events (resumed %d times): %v; it sent the comments %q; the node logged %s",
					s.node.URL, len(out), n, s.resumed, ended, notes, warns)
			}
			s.resumed++
			t.Logf("the event stream of %s ended (%v; the node logged %s): resumed after id %d", s.node.URL, ended, warns, s.last)
			s.connect(t, "", "Last-Event-ID", strconv.FormatUint(s.last, 10))
		case <-s.ctx.Done():
			t.Fatalf("the event stream sent %d of %d events before the test's deadline: %+v", len(out), n, out)
		}
	}
	return out
}

// rollWrite replaces key's allowlist on n with mark/32, asking again (same Idempotency-Key)
// on a 503 with Retry-After or a connection error, and returns the change's sequence.
func rollWrite(ctx context.Context, t *testing.T, n *nodetest.Node, token, key, mark string) uint64 {
	t.Helper()
	for {
		a := rollDo(ctx, "PUT", n.URL+"/v1/workspaces/acme/keys/"+key+"/allowlist", token,
			map[string]any{"allowlist": []string{mark + "/32"}}, "Idempotency-Key", "roll-"+mark)
		switch {
		case a.err == nil && a.status == 200:
			if seq := rollSeq(a.header); seq != 0 {
				return seq
			}
			t.Fatalf("PUT allowlist %s on %s: no %s header", mark, n.URL, wire.SequenceHeader)
		case a.err == nil && a.status == 503 && a.header.Get("Retry-After") != "":
		default:
			t.Fatalf("PUT allowlist %s on %s: %d %v %s", mark, n.URL, a.status, a.err, a.body)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("PUT allowlist %s on %s: not stored before the test's deadline (%d %v)", mark, n.URL, a.status, a.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestEmbeddedClusterSSEResume (issue 13, "SSE clients resume on another node with
// Last-Event-ID"): a client follows workspace acme's events on node 1 of an embedded
// cluster while 10 changes are made, and keeps the id of the 6th event it read. Node 1 is
// killed (SIGKILL); 10 more changes are made on node 2, and one on node 3. The client
// reconnects to node 2 with Last-Event-ID and receives exactly the 15 changes after that
// id, in order, with no gap, no duplicate and nothing else: each id is the Keyreg-Sequence
// its write was answered with. The client does what an EventSource does: a stream that
// the server ends (right after the kill, a node may not yet get its consumer on the
// stream, and ends the stream at once) is opened again with the last id it received, at
// most three times. The ids mean the same on every
// node: node 2 and node 3, read from the workspace's start, send the same events with the
// same ids, byte for byte, and the events node 1 sent before its death are among them,
// identical.
func TestEmbeddedClusterSSEResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := nodetest.StartCluster(t, nodetest.ClusterOptions{})
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	n1.JSON("POST", "/v1/workspaces", c.Root, map[string]any{"id": "acme", "name": "Acme"}, 201, nil)
	var reader, target wire.KeyWithSecret
	n1.JSON("POST", "/v1/workspaces/acme/keys", c.Root, map[string]any{"name": "follower",
		"permissions": []string{"keyreg.events.read", "keyreg.keys.read", "keyreg.keys.write"}}, 201, &reader)
	h := n1.JSON("POST", "/v1/workspaces/acme/keys", reader.Secret, map[string]any{"name": "target", "permissions": []string{"users.track"}}, 201, &target)
	for _, n := range []*nodetest.Node{n2, n3} {
		rollRead(ctx, t, n, reader.Secret, "/v1/workspaces/acme/keys/"+target.Key.ID, rollSeq(h))
	}

	// The client follows on node 1 from the next event on.
	follow := sseOpen(ctx, t, n1, "acme", reader.Secret, 0, "")
	seqs := map[uint64]string{} // every change made while following: sequence -> allowlist mark
	var order []uint64
	write := func(n *nodetest.Node, i int) {
		mark := fmt.Sprintf("10.1.0.%d", i)
		seq := rollWrite(ctx, t, n, reader.Secret, target.Key.ID, mark)
		if _, dup := seqs[seq]; dup {
			t.Fatalf("two changes answered with sequence %d", seq)
		}
		seqs[seq] = mark
		order = append(order, seq)
	}
	for i := range 10 {
		write([]*nodetest.Node{n1, n2, n3}[i%3], i)
	}
	seen := follow.take(t, 6)
	for j, e := range seen {
		if e.id != order[j] || e.typ != "keyreg.key.allowlist_updated.v1" || !strings.Contains(e.data, `"`+seqs[e.id]+`/32"`) {
			t.Fatalf("event %d on node 1: id %d %s %s, want the change answered with sequence %d (allowlist %s)", j, e.id, e.typ, e.data, order[j], seqs[order[j]])
		}
	}
	last := seen[len(seen)-1].id

	c.Kill(0)
	select { // node 1's stream ends with the process
	case <-ctx.Done():
		t.Fatal("node 1's event stream did not end after SIGKILL")
	case <-func() chan struct{} {
		done := make(chan struct{})
		go func() {
			for range follow.events {
			}
			close(done)
		}()
		return done
	}():
	}
	for i := 10; i < 20; i++ {
		write(n2, i)
	}

	write(n3, 20) // the last change: the resumed stream is read up to it

	resumed := sseOpen(ctx, t, n2, "acme", reader.Secret, 3, "", "Last-Event-ID", strconv.FormatUint(last, 10))
	want := order[6:]
	var got []sseEvent
	for len(got) == 0 || got[len(got)-1].id < order[len(order)-1] {
		got = append(got, resumed.take(t, 1)...)
	}
	if !slices.Equal(sseIDs(got), want) {
		t.Fatalf("resumed on node 2 after id %d: ids %v, want %v (the changes after it, in order)", last, sseIDs(got), want)
	}
	for j, e := range got {
		if e.typ != "keyreg.key.allowlist_updated.v1" || !strings.Contains(e.data, `"`+seqs[e.id]+`/32"`) {
			t.Fatalf("resumed event %d on node 2: id %d %s %s, want the change answered with sequence %d (allowlist %s)",
				j, e.id, e.typ, e.data, want[j], seqs[want[j]])
		}
	}

	// The ids are stream sequences, the same on every node: nodes 2 and 3 from the start
	// send the same events with the same ids, and node 1's events are among them.
	from2 := sseOpen(ctx, t, n2, "acme", reader.Secret, 3, "?after=0")
	from3 := sseOpen(ctx, t, n3, "acme", reader.Secret, 3, "?after=0")
	var all2, all3 []sseEvent
	for len(all2) == 0 || all2[len(all2)-1].id < order[len(order)-1] {
		all2 = append(all2, from2.take(t, 1)...)
	}
	all3 = from3.take(t, len(all2))
	byID := map[uint64]sseEvent{}
	for j := range all2 {
		if all2[j].id != all3[j].id || all2[j].typ != all3[j].typ || all2[j].data != all3[j].data {
			t.Fatalf("event %d from the start: node 2 sent id %d %s, node 3 id %d %s", j, all2[j].id, all2[j].data, all3[j].id, all3[j].data)
		}
		if j > 0 && all2[j].id <= all2[j-1].id {
			t.Fatalf("node 2 from the start: id %d after %d", all2[j].id, all2[j-1].id)
		}
		byID[all2[j].id] = all2[j]
	}
	for _, e := range seen {
		if byID[e.id].data != e.data || byID[e.id].typ != e.typ {
			t.Fatalf("node 1 sent id %d as %s, node 2 sends it as %s", e.id, e.data, byID[e.id].data)
		}
	}
	for seq := range seqs {
		if _, ok := byID[seq]; !ok {
			t.Fatalf("the change answered with sequence %d is not in node 2's stream from the start (ids %v)", seq, sseIDs(all2))
		}
	}
	t.Logf("resumed on node 2 after id %d: %d events, ids %v (streams ended by the server and resumed again: %d); %d events from the start identical on nodes 2 and 3",
		last, len(got), sseIDs(got), resumed.resumed+from2.resumed+from3.resumed, len(all2))
}

// sseIDs returns the ids of es.
func sseIDs(es []sseEvent) []uint64 {
	ids := make([]uint64, len(es))
	for i, e := range es {
		ids[i] = e.id
	}
	return ids
}
