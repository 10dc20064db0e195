package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

// DefaultSSEHeartbeat is how often an idle event stream gets a comment line, so that
// proxies keep it open and clients notice a dead connection.
const DefaultSSEHeartbeat = 15 * time.Second

// Default bounds of the open event streams (Deps.SSEMaxPerKey, Deps.SSEMaxTotal). Each
// stream holds a consumer on the NATS server until it ends.
const (
	DefaultSSEMaxPerKey = 10
	DefaultSSEMaxTotal  = 1000
)

// streamCounts counts the open event streams, in all and per registry key. The zero value
// is ready to use.
type streamCounts struct {
	mu    sync.Mutex
	total int
	byKey map[string]int
}

// acquire counts a new stream of key, or refuses it: 429 when the key has perKey open
// streams, 503 when the server has total.
func (c *streamCounts) acquire(key string, perKey, total int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey[key] >= perKey {
		p := problem(http.StatusTooManyRequests, CodeTooManyStreams, "this key already has "+strconv.Itoa(perKey)+
			" open event streams, the most it may have; close one, or use another key")
		p.headers = http.Header{"Retry-After": {"10"}}
		return p
	}
	if c.total >= total {
		p := problem(http.StatusServiceUnavailable, CodeTooManyStreams, "the server has "+strconv.Itoa(total)+
			" open event streams, the most it serves; retry later")
		p.headers = http.Header{"Retry-After": {"10"}}
		return p
	}
	if c.byKey == nil {
		c.byKey = map[string]int{}
	}
	c.byKey[key]++
	c.total++
	return nil
}

func (c *streamCounts) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total--
	if c.byKey[key]--; c.byKey[key] <= 0 {
		delete(c.byKey, key)
	}
}

// closer ends the API's event streams when the server shuts down: http.Server.Shutdown
// waits for handlers to return and would otherwise wait for every open stream. The zero
// value is ready to use.
type closer struct {
	mu     sync.Mutex
	ch     chan struct{}
	closed bool
}

func (c *closer) done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *closer) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	if !c.closed {
		close(c.ch)
		c.closed = true
	}
}

// Close ends every open event stream (GET .../events) cleanly and makes new ones end at
// once. Call it when the server shuts down, before or while http.Server.Shutdown drains
// the requests (http.Server.RegisterOnShutdown(api.Close) does). Calling it again does
// nothing.
func (a *API) Close() { a.closing.close() }

type eventsInput struct {
	WS          string    `path:"ws" doc:"Workspace id"`
	Type        []string  `query:"type,explode" doc:"Only events of these types, e.g. keyreg.key.revoked.v1 (repeat the parameter, or separate with commas)"`
	Key         string    `query:"key" doc:"Only the events of this key (its id)"`
	After       string    `query:"after" pattern:"^[0-9]+$" doc:"Start after this stream sequence (0: from the first event). Without after, since or Last-Event-ID the stream starts with the next new event."`
	Since       time.Time `query:"since" doc:"Start with the first event stored at or after this time (RFC 3339)"`
	LastEventID string    `header:"Last-Event-ID" doc:"Resume after this stream sequence: the id of the last event received. Overrides after and since."`
}

// sseSchema describes the text/event-stream of GET .../events in the OpenAPI document.
var sseSchema = &huma.Schema{
	Type: huma.TypeString,
	Description: "Server-sent events (text/event-stream). Each event is three lines and a blank line:\n\n" +
		"    id: <stream sequence>\n    event: <CloudEvents type, e.g. keyreg.key.allowlist_updated.v1>\n" +
		"    data: <the CloudEvent 1.0 as stored, one line of JSON>\n\n" +
		"Lines starting with ':' are heartbeats (every 15 seconds when idle). The stream ends when the server shuts down; " +
		"resume with Last-Event-ID set to the last id received.",
}

func (a *API) registerEvents() {
	huma.Register(a.huma, a.stream(huma.Operation{
		OperationID: "follow-events", Method: http.MethodGet, Path: "/v1/workspaces/{ws}/events", Tags: []string{"events"},
		Security: bearer,
		Summary:  "Follow a workspace's events (server-sent events)",
		Description: "Streams the workspace's events as they are stored, each as a server-sent event whose id is its stream " +
			"sequence, whose event is its type and whose data is the CloudEvent as stored. Filter by type and key; resume " +
			"with Last-Event-ID (or after=) and nothing is missed or repeated. Needs keyreg.events.read.",
		Responses: map[string]*huma.Response{
			"200": {Description: "The event stream", Content: map[string]*huma.MediaType{"text/event-stream": {Schema: sseSchema}}},
		},
	}), a.followEvents)
}

func (a *API) followEvents(ctx context.Context, in *eventsInput) (*huma.StreamResponse, error) {
	p, err := a.authorize(ctx, in.WS, PermEventsRead)
	if err != nil {
		return nil, err
	}
	ws := events.Workspace(in.WS)
	if _, err := a.d.Views.Workspace(ctx, ws); err != nil {
		return nil, a.fail(ctx, err)
	}
	types, err := parseTypes(in.Type)
	if err != nil {
		return nil, err
	}
	filter := events.WorkspaceFilter(ws)
	if in.Key != "" {
		if strings.ContainsAny(in.Key, ".*> \t\r\n") {
			return nil, invalid("key", in.Key, "key must be a key id")
		}
		filter = events.AggregateFilter(ws, events.AggKey, in.Key)
	}
	from, err := a.startSeq(ctx, in)
	if err != nil {
		return nil, err
	}
	perKey, total := a.d.SSEMaxPerKey, a.d.SSEMaxTotal
	if perKey <= 0 {
		perKey = DefaultSSEMaxPerKey
	}
	if total <= 0 {
		total = DefaultSSEMaxTotal
	}
	if err := a.streams.acquire(p.KeyID, perKey, total); err != nil {
		return nil, err
	}
	return &huma.StreamResponse{Body: func(hctx huma.Context) {
		defer a.streams.release(p.KeyID)
		allowed := func() bool {
			_, err := a.authorize(ctx, in.WS, PermEventsRead)
			return err == nil
		}
		a.streamEvents(hctx, filter, types, from, allowed)
	}}, nil
}

// parseTypes checks every requested type is a known event type.
func parseTypes(in []string) (map[events.Type]bool, error) {
	if len(in) == 0 {
		return nil, nil
	}
	known := make([]string, 0, len(events.Types))
	for _, t := range events.Types {
		known = append(known, string(t.Type))
	}
	out := map[events.Type]bool{}
	for _, v := range in {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t == "" {
				continue
			}
			if !slices.Contains(known, t) {
				return nil, invalid("type", t, "unknown event type "+strconv.Quote(t)+"; the types are "+strings.Join(known, ", "))
			}
			out[events.Type(t)] = true
		}
	}
	return out, nil
}

// startSeq returns the first sequence to send: after Last-Event-ID, else after `after`,
// else the first at or after `since`, else the next one stored.
func (a *API) startSeq(ctx context.Context, in *eventsInput) (uint64, error) {
	if in.LastEventID != "" {
		n, err := parseUint(strings.TrimSpace(in.LastEventID))
		if err != nil {
			return 0, invalid("Last-Event-ID", in.LastEventID, "Last-Event-ID must be the id (a stream sequence) of an event")
		}
		return n + 1, nil
	}
	if in.After != "" {
		n, err := parseUint(in.After)
		if err != nil {
			return 0, invalid("after", in.After, "after must be a stream sequence")
		}
		return n + 1, nil
	}
	if !in.Since.IsZero() {
		seq, err := events.SeqAtTime(ctx, a.d.Log, in.Since)
		if err != nil {
			return 0, a.unavailable(ctx, err)
		}
		return seq, nil
	}
	last, err := a.d.Log.LastSeq(ctx)
	if err != nil {
		return 0, a.unavailable(ctx, err)
	}
	return last + 1, nil
}

// unavailable logs why the event log cannot be read and answers 503.
func (a *API) unavailable(ctx context.Context, err error) error {
	p := problem(http.StatusServiceUnavailable, CodeUnavailable, "the event log cannot be read now; retry later")
	p.internal = err
	return a.fail(ctx, p)
}

// streamEvents writes the events on filter from sequence from on as server-sent events
// until the client goes away, the API closes, following the log fails or the caller is no
// longer allowed (its key revoked, expired or changed: checked before every write).
func (a *API) streamEvents(hctx huma.Context, filter string, types map[events.Type]bool, from uint64, allowed func() bool) {
	w, flush, err := startSSE(hctx, from)
	if err != nil {
		return
	}

	ctx, cancel := context.WithCancel(hctx.Context())
	defer cancel()
	// Small buffers: many streams may be open, each going at its client's pace, and
	// what one holds ahead of its client is memory held for as long as it is open.
	recs := make(chan events.Record, 16)
	followErr := make(chan error, 1)
	go func() {
		followErr <- events.FollowFilter(ctx, a.d.Log, filter, from, func(r events.Record) error {
			select {
			case recs <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, events.FollowSmallBuffer())
	}()
	defer func() {
		cancel()
		<-followErr
	}()

	every := a.d.SSEHeartbeat
	if every <= 0 {
		every = DefaultSSEHeartbeat
	}
	heartbeat := time.NewTicker(every)
	defer heartbeat.Stop()
	var buf bytes.Buffer
	for {
		buf.Reset()
		select {
		case <-ctx.Done():
			return
		case <-a.closing.done():
			w.Write([]byte(": the server is shutting down; resume with Last-Event-ID\n\n"))
			flush()
			return
		case err := <-followErr:
			followErr <- err // for the deferred wait
			if ctx.Err() == nil {
				a.d.Logger.Warn("event stream ended", "filter", filter, "err", err)
			}
			return
		case <-heartbeat.C:
			buf.WriteString(":\n\n")
		case r := <-recs:
			if !appendSSE(&buf, r, types) {
				continue
			}
			// Check the caller against views that have applied r: the event that takes
			// the caller's right away is not sent.
			if a.d.Waiter != nil && a.d.Waiter.WaitFor(ctx, r.Seq) != nil {
				return
			}
			heartbeat.Reset(every)
		}
		if !allowed() {
			w.Write([]byte(": the key may no longer read these events\n\n"))
			flush()
			return
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return
		}
		if flush() != nil {
			return
		}
	}
}

// startSSE sends the status and headers of an event stream starting at sequence from, and
// a first comment line, and returns the body writer and its flush.
func startSSE(hctx huma.Context, from uint64) (io.Writer, func() error, error) {
	w := hctx.BodyWriter()
	flush := func() error { return nil }
	if rw, ok := w.(http.ResponseWriter); ok {
		flush = http.NewResponseController(rw).Flush
	}
	hctx.SetHeader("Content-Type", "text/event-stream")
	hctx.SetHeader("Cache-Control", "no-cache")
	hctx.SetHeader("X-Accel-Buffering", "no")
	hctx.SetHeader(wire.StartSequenceHeader, uitoa(from))
	hctx.SetStatus(http.StatusOK)
	if _, err := w.Write([]byte(": keyreg events from sequence " + uitoa(from) + "\n\n")); err != nil {
		return nil, nil, err
	}
	return w, flush, flush()
}

// appendSSE appends record r as one server-sent event, unless types is set and r's type is
// not in it. A record that is not an event is sent as type "unknown".
func appendSSE(buf *bytes.Buffer, r events.Record, types map[events.Type]bool) bool {
	typ := events.Type("unknown")
	if e, err := events.Decode(r.Data); err == nil {
		typ = e.Type
	}
	if types != nil && !types[typ] {
		return false
	}
	buf.WriteString("id: ")
	buf.WriteString(strconv.FormatUint(r.Seq, 10))
	buf.WriteString("\nevent: ")
	buf.WriteString(strings.Map(noNewline, string(typ)))
	buf.WriteByte('\n')
	for line := range bytes.SplitSeq(r.Data, []byte("\n")) {
		buf.WriteString("data: ")
		buf.Write(bytes.TrimSuffix(line, []byte("\r")))
		buf.WriteByte('\n')
	}
	buf.WriteByte('\n')
	return true
}

func noNewline(r rune) rune {
	if r == '\n' || r == '\r' {
		return ' '
	}
	return r
}
