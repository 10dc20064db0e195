package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// These tests hold claims of the README that nothing else tested (issue 11).

// sseStream reads GET .../events as a client would, line by line. Every read ends within
// a minute of opening: the request's context has that deadline.
type sseStream struct {
	t      *testing.T
	header http.Header
	sc     *bufio.Scanner
	body   io.Closer
	cancel context.CancelFunc
}

// sseEvent is one event of a stream, with the comment lines read before it.
type sseEvent struct {
	id       uint64
	typ      string
	data     string
	comments []string
}

// openEvents opens the event stream of ws with token; query is the URL's query ("" or
// "?after=0"), headers come in name, value pairs. The stream must answer 200.
func openEvents(t *testing.T, n *node, ws, token, query string, headers ...string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	req, err := http.NewRequestWithContext(ctx, "GET", n.url+"/v1/workspaces/"+ws+"/events"+query, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := n.h.HTTP.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET events%s: status %d: %s", query, resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	s := &sseStream{t: t, header: resp.Header, sc: sc, body: resp.Body, cancel: cancel}
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() { s.cancel(); s.body.Close() }

// startSeq returns the stream's Keyreg-Start-Sequence header.
func (s *sseStream) startSeq() uint64 {
	s.t.Helper()
	v, err := strconv.ParseUint(s.header.Get(wire.StartSequenceHeader), 10, 64)
	if err != nil {
		s.t.Fatalf("%s: %q: %v", wire.StartSequenceHeader, s.header.Get(wire.StartSequenceHeader), err)
	}
	return v
}

// next returns the next event, or false when the server ended the stream (the event's
// comments then hold the comment lines read before the end). A stream that neither sends
// nor ends before its deadline fails the test.
func (s *sseStream) next() (sseEvent, bool) {
	s.t.Helper()
	var e sseEvent
	for s.sc.Scan() {
		line := s.sc.Text()
		name, value, _ := strings.Cut(line, ": ")
		switch {
		case line == "":
			if e.id != 0 {
				return e, true
			}
		case strings.HasPrefix(line, ":"):
			e.comments = append(e.comments, line)
		case name == "id":
			id, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				s.t.Fatalf("event id %q: %v", value, err)
			}
			e.id = id
		case name == "event":
			e.typ = value
		case name == "data":
			e.data = value
		}
	}
	if err := s.sc.Err(); err != nil {
		s.t.Fatalf("the event stream neither sent nor ended in time: %v (read so far: %+v)", err, e)
	}
	return e, false
}

// ids reads count events and returns their ids.
func (s *sseStream) ids(count int) []uint64 {
	s.t.Helper()
	var out []uint64
	for range count {
		e, ok := s.next()
		if !ok {
			s.t.Fatalf("the stream ended after %v (comments %q)", out, e.comments)
		}
		out = append(out, e.id)
	}
	return out
}

// auditSeqs returns the sequences of ws's events, from the audit log.
func auditSeqs(f fixture) []uint64 {
	f.t.Helper()
	var page struct {
		Events []wire.HistoryEntry `json:"events"`
	}
	f.json("GET", "/v1/workspaces/"+f.ws+"/audit", f.writer, nil, 200, &page)
	var out []uint64
	for _, e := range page.Events {
		out = append(out, e.Sequence)
	}
	return out
}

// TestEventsStartAndResume holds the README's "Start" rule of the event stream: after
// Last-Event-ID, else after after=N (after=0: from the first event), else with the next
// new event; Keyreg-Start-Sequence is the first sequence the stream can send; resuming
// from the last id received misses nothing and repeats nothing.
func TestEventsStartAndResume(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	var last wire.KeyWithSecret
	for i := range 4 {
		last = f.createKey(map[string]any{"name": fmt.Sprint("k", i)})
	}
	want := auditSeqs(f) // the workspace, the writer key and four keys
	if len(want) != 6 || want[len(want)-1] != last.Key.Version {
		t.Fatalf("acme's events: %v, last key at %d", want, last.Key.Version)
	}

	s := openEvents(t, n, "acme", n.root, "?after=0")
	if got := s.startSeq(); got != 1 {
		t.Errorf("after=0: %s %d, want 1", wire.StartSequenceHeader, got)
	}
	if got := s.ids(len(want)); !slices.Equal(got, want) {
		t.Fatalf("after=0 sent %v, want %v", got, want)
	}

	s = openEvents(t, n, "acme", n.root, fmt.Sprintf("?after=%d", want[2]))
	if got := s.startSeq(); got != want[2]+1 {
		t.Errorf("after=%d: %s %d, want %d", want[2], wire.StartSequenceHeader, got, want[2]+1)
	}
	if got := s.ids(3); !slices.Equal(got, want[3:]) {
		t.Fatalf("after=%d sent %v, want %v", want[2], got, want[3:])
	}

	// Resume after the last id received: Last-Event-ID wins over after=.
	first := openEvents(t, n, "acme", n.root, "?after=0").ids(2)
	s = openEvents(t, n, "acme", n.root, "?after=0", "Last-Event-ID", fmt.Sprint(first[1]))
	if got := s.startSeq(); got != first[1]+1 {
		t.Errorf("Last-Event-ID %d: %s %d, want %d", first[1], wire.StartSequenceHeader, got, first[1]+1)
	}
	if got := append(first, s.ids(len(want)-2)...); !slices.Equal(got, want) {
		t.Fatalf("two streams, the second resumed with Last-Event-ID, sent %v, want %v", got, want)
	}

	// No start: the next new event (nothing else appends: the sealer is off).
	s = openEvents(t, n, "acme", n.root, "")
	if got := s.startSeq(); got != last.Key.Version+1 {
		t.Errorf("no start: %s %d, want %d", wire.StartSequenceHeader, got, last.Key.Version+1)
	}
	k := f.createKey(map[string]any{"name": "new"})
	if got := s.ids(1); got[0] != k.Key.Version {
		t.Fatalf("no start: the first event sent is %d, want the new key's %d", got[0], k.Key.Version)
	}
}

// TestEventsStreamEnds holds "A stream also ends once its key ... expires or loses
// keyreg.events.read (checked before every line sent)": the event that follows is not
// sent, the stream ends with a comment saying why.
func TestEventsStreamEnds(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	keys := "/v1/workspaces/acme/keys"
	rootKey := func(t *testing.T, body map[string]any) wire.KeyWithSecret {
		t.Helper()
		var k wire.KeyWithSecret
		n.json("POST", keys, n.root, body, 201, &k) // only a holder of keyreg.events.read may grant it
		return k
	}
	ended := func(t *testing.T, s *sseStream, after string) {
		t.Helper()
		e, ok := s.next()
		if ok {
			t.Fatalf("the stream sent event %d (%s) after its key %s", e.id, e.typ, after)
		}
		if !slices.ContainsFunc(e.comments, func(c string) bool { return strings.Contains(c, "no longer read") }) {
			t.Fatalf("the stream ended without saying why: %q", e.comments)
		}
	}

	t.Run("LosesPermission", func(t *testing.T) {
		k := rootKey(t, map[string]any{"name": "siem", "permissions": []string{"keyreg.events.read", "keyreg.keys.read"}})
		s := openEvents(t, n, "acme", k.Secret, "")
		a := f.createKey(map[string]any{"name": "a"})
		if got := s.ids(1); got[0] != a.Key.Version {
			t.Fatalf("got event %d, want %d", got[0], a.Key.Version)
		}
		n.json("PATCH", keys+"/"+k.Key.ID, n.root, map[string]any{"permissions": []string{"keyreg.keys.read"}}, 200, nil)
		ended(t, s, "lost keyreg.events.read")
	})

	t.Run("Expires", func(t *testing.T) {
		expires := time.Now().Add(5 * time.Second).UTC()
		k := rootKey(t, map[string]any{"name": "short", "permissions": []string{"keyreg.events.read"}, "expires_at": expires})
		s := openEvents(t, n, "acme", k.Secret, "")
		a := f.createKey(map[string]any{"name": "b"})
		if got := s.ids(1); got[0] != a.Key.Version {
			t.Fatalf("got event %d, want %d", got[0], a.Key.Version)
		}
		// Wait (at most 30 s) until the registry itself says the key expired.
		for deadline := time.Now().Add(30 * time.Second); f.verify(k.Secret, "10.0.0.1", "").Code != "EXPIRED"; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the key expiring at %s still verifies at %s", expires, time.Now().UTC())
			}
		}
		f.createKey(map[string]any{"name": "c"})
		ended(t, s, "expired")
	})
}

// TestRequestIDInEvents holds "every event records ... X-Request-Id (requestid, made up
// if absent)": the answer carries the request id, and the event (as streamed and as
// stored) records it.
func TestRequestIDInEvents(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	s := openEvents(t, n, "acme", n.root, "")
	requestID := func() string {
		t.Helper()
		e, ok := s.next()
		if !ok {
			t.Fatal("the stream ended")
		}
		var ev struct {
			RequestID string `json:"requestid"`
		}
		if err := json.Unmarshal([]byte(e.data), &ev); err != nil {
			t.Fatalf("event %d: %v: %s", e.id, err, e.data)
		}
		return ev.RequestID
	}
	keys := "/v1/workspaces/acme/keys"

	var k wire.KeyWithSecret
	h := f.json("POST", keys, f.writer, map[string]any{"name": "given"}, 201, &k, "X-Request-Id", "claims-req-1")
	if got := h.Get("X-Request-Id"); got != "claims-req-1" {
		t.Errorf("the answer's X-Request-Id is %q", got)
	}
	if got := requestID(); got != "claims-req-1" {
		t.Fatalf("streamed event: requestid %q, want the X-Request-Id sent", got)
	}
	var hist struct {
		Events []wire.HistoryEntry `json:"events"`
	}
	f.json("GET", keys+"/"+k.Key.ID+"/history", f.writer, nil, 200, &hist)
	if len(hist.Events) != 1 || !strings.Contains(string(hist.Events[0].Event), `"requestid":"claims-req-1"`) {
		t.Fatalf("stored event lacks the requestid: %+v", hist)
	}

	h = f.json("POST", keys, f.writer, map[string]any{"name": "made up"}, 201, nil)
	made := h.Get("X-Request-Id")
	if made == "" || made == "claims-req-1" {
		t.Fatalf("without X-Request-Id the answer's request id is %q", made)
	}
	if got := requestID(); got != made {
		t.Fatalf("streamed event: requestid %q, want the made-up %q", got, made)
	}
}

// TestAllowlistLimit holds "at most 1000" allowlist entries: exactly 1000 are accepted
// (and every one applies), 1001 are refused with a problem naming the field, on create and
// on replace.
func TestAllowlistLimit(t *testing.T) {
	n := startNode(t, "")
	f := newFixture(t, n, "acme")
	list := func(count int) []string {
		out := make([]string, count)
		for i := range out {
			out[i] = fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
		}
		return out
	}
	keys := "/v1/workspaces/acme/keys"
	refused := func(method, path string, body any) {
		t.Helper()
		st, _, b := f.do(method, path, f.writer, body)
		var p problemBody
		json.Unmarshal(b, &p)
		if st != 400 || p.Code != "invalid_input" || p.Field != "allowlist" || !strings.Contains(p.Value, "1001") {
			t.Fatalf("%s %s with 1001 entries: %d %s", method, path, st, b)
		}
	}

	k := f.createKey(map[string]any{"name": "big", "allowlist": list(1000)})
	if len(k.Key.Allowlist) != 1000 {
		t.Fatalf("created with %d entries, want 1000", len(k.Key.Allowlist))
	}
	if v := f.verify(k.Secret, "10.3.231.9", ""); v.Code != "VALID" { // in the 1000th entry
		t.Fatalf("an address of the last entry: %s", v.Code)
	}
	if v := f.verify(k.Secret, "10.3.232.9", ""); v.Code != "IP_NOT_ALLOWED" { // one past it
		t.Fatalf("an address past the last entry: %s", v.Code)
	}
	refused("POST", keys, map[string]any{"name": "too big", "allowlist": list(1001)})

	small := f.createKey(map[string]any{"name": "small"})
	var got wire.Key
	f.json("PUT", keys+"/"+small.Key.ID+"/allowlist", f.writer, map[string]any{"allowlist": list(1000)}, 200, &got)
	if len(got.Allowlist) != 1000 {
		t.Fatalf("replaced with %d entries, want 1000", len(got.Allowlist))
	}
	refused("PUT", keys+"/"+small.Key.ID+"/allowlist", map[string]any{"allowlist": list(1001)})
}
