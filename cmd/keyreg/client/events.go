package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// Errors of FollowEvents after which following again, from the last sequence received,
// is the thing to do.
var (
	// ErrStreamEnded means the server ended the event stream cleanly, as it does when it
	// shuts down.
	ErrStreamEnded = errors.New("client: the server ended the event stream")
	// ErrDisconnected means the server could not be reached or the connection broke.
	ErrDisconnected = errors.New("client: disconnected from the event stream")
)

// disconnected is an error that is ErrDisconnected and reads as its cause.
type disconnected struct{ err error }

func (d disconnected) Error() string        { return d.err.Error() }
func (d disconnected) Unwrap() error        { return d.err }
func (d disconnected) Is(target error) bool { return target == ErrDisconnected }

// EventsOptions choose the events FollowEvents gets and where it starts. The zero value
// gets every event of the workspace stored from now on.
type EventsOptions struct {
	// Types keeps only events of these types (e.g. "keyreg.key.revoked.v1"); empty: all.
	Types []string
	// Key keeps only the events of this key id.
	Key string
	// After, when not nil, starts after this stream sequence (0: from the first event),
	// sent as Last-Event-ID.
	After *uint64
	// Since, when not zero (and After is nil), starts with the first event stored at or
	// after it.
	Since time.Time
	// OnOpen, when set, is called once the stream is open with the sequence of the first
	// event it can send; with neither After nor Since, following again after startSeq-1
	// misses nothing after a dropped connection.
	OnOpen func(startSeq uint64)
}

// StreamEvent is one event of a workspace's event stream.
type StreamEvent struct {
	Seq  uint64          // stream sequence: resume after it
	Type string          // CloudEvents type, e.g. keyreg.key.allowlist_updated.v1
	Data json.RawMessage // the CloudEvent 1.0 JSON as stored
}

// maxEventLine bounds one line of the event stream (an event's JSON).
const maxEventLine = 8 << 20

// FollowEvents follows the events of workspace ws (GET /v1/workspaces/{ws}/events, needs
// keyreg.events.read) and calls fn for each, in stream order, until ctx is done (it then
// returns ctx.Err()), fn returns an error (returned), the server ends the stream
// (ErrStreamEnded) or the connection fails (an error matching ErrDisconnected). The
// client's http.Client must have no Timeout, or the stream ends with it. An answer other
// than 200 is an *Error.
func (c *Client) FollowEvents(ctx context.Context, ws string, o EventsOptions, fn func(StreamEvent) error) error {
	q := url.Values{}
	for _, t := range o.Types {
		q.Add("type", t)
	}
	if o.Key != "" {
		q.Set("key", o.Key)
	}
	if o.After == nil && !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	u := c.base + "/v1/workspaces/" + url.PathEscape(ws) + "/events"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("client: bad server address %q: %w", c.base, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if o.After != nil {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(*o.After, 10))
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return disconnected{fmt.Errorf("cannot reach keyreg at %s: %w", c.base, err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
		return problemError(resp, data)
	}
	if o.OnOpen != nil {
		start, err := strconv.ParseUint(resp.Header.Get(wire.StartSequenceHeader), 10, 64)
		if err != nil {
			return fmt.Errorf("client: event stream: bad %s header", wire.StartSequenceHeader)
		}
		o.OnOpen(start)
	}
	var fnErr error
	err = readSSE(resp.Body, func(ev StreamEvent) error {
		fnErr = fn(ev)
		return fnErr
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err == nil:
		return ErrStreamEnded
	case fnErr != nil:
		return fnErr
	}
	return disconnected{err}
}

// readSSE parses a text/event-stream (the subset keyreg sends: id, event, data and
// comment lines) and calls fn for each event. It returns nil at the end of the stream.
func readSSE(r io.Reader, fn func(StreamEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	var ev StreamEvent
	var data []byte
	hasData := false
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			if hasData {
				ev.Data = json.RawMessage(data)
				if err := fn(ev); err != nil {
					return err
				}
			}
			ev, data, hasData = StreamEvent{}, nil, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: heartbeat or notice
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			seq, err := strconv.ParseUint(value, 10, 64)
			if err != nil {
				return fmt.Errorf("client: event stream: bad id %q", value)
			}
			ev.Seq = seq
		case "event":
			ev.Type = value
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data, hasData = append(data, value...), true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("client: event stream: %w", err)
	}
	return nil
}
