package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
)

// The JetStream API has no snapshot helper in nats.go's jetstream package: these speak it
// directly, as the nats CLI does. A snapshot is a stream of chunks (an S2-compressed tar of
// the stream's files) sent to an inbox, each acknowledged by a reply; an empty message
// ends it, its Status header saying whether it failed. A restore is the same the other
// way: each chunk is a request, an empty one ends it and is answered with the stream.

// snapshotChunkTimeout bounds the wait for each chunk of a snapshot or the answer to each
// chunk of a restore: a server that went away fails the backup rather than hanging it.
const snapshotChunkTimeout = 30 * time.Second

// restoreChunkSize is the size of the chunks a restore sends.
const restoreChunkSize = 128 << 10

// streamMeta is a stream's configuration and state as JetStream gives them with a
// snapshot and wants them back for a restore, kept as they came.
type streamMeta struct {
	Config json.RawMessage `json:"config"`
	State  json.RawMessage `json:"state"`
}

// streamState is the part of a stream's state that a backup records.
type streamState struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// jsAPIError is the error of a JetStream API answer.
type jsAPIError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *jsAPIError) Error() string {
	return fmt.Sprintf("%s (%d/%d)", e.Description, e.Code, e.ErrCode)
}

// snapshotStream writes a snapshot of stream (without its consumers) to w, and returns
// the stream's configuration and state when the snapshot started. Appends go on during it.
func snapshotStream(ctx context.Context, nc *nats.Conn, stream string, w io.Writer) (streamMeta, streamState, error) {
	var meta streamMeta
	var st streamState
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return meta, st, fmt.Errorf("snapshot %s: %w", stream, err)
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(map[string]any{"deliver_subject": inbox, "no_consumers": true})
	rctx, cancel := context.WithTimeout(ctx, snapshotChunkTimeout)
	msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.SNAPSHOT."+stream, req)
	cancel()
	if err != nil {
		return meta, st, fmt.Errorf("snapshot %s: %w", stream, err)
	}
	var resp struct {
		Error *jsAPIError `json:"error"`
		streamMeta
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return meta, st, fmt.Errorf("snapshot %s: bad answer: %w", stream, err)
	}
	if resp.Error != nil {
		return meta, st, fmt.Errorf("snapshot %s: %w", stream, resp.Error)
	}
	meta = resp.streamMeta
	if err := json.Unmarshal(meta.State, &st); err != nil {
		return meta, st, fmt.Errorf("snapshot %s: bad state: %w", stream, err)
	}
	for {
		mctx, cancel := context.WithTimeout(ctx, snapshotChunkTimeout)
		m, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			return meta, st, fmt.Errorf("snapshot %s: waiting for a chunk: %w", stream, err)
		}
		if len(m.Data) == 0 { // the end
			if status := m.Header.Get("Status"); status != "" && status != "204" {
				return meta, st, fmt.Errorf("snapshot %s failed: %s %s", stream, status, m.Header.Get("Description"))
			}
			return meta, st, nil
		}
		if _, err := w.Write(m.Data); err != nil {
			return meta, st, fmt.Errorf("snapshot %s: %w", stream, err)
		}
		if m.Reply != "" {
			if err := m.Respond(nil); err != nil {
				return meta, st, fmt.Errorf("snapshot %s: ack: %w", stream, err)
			}
		}
	}
}

// errRestoreBroke marks the failure of a restore that JetStream had begun: on a cluster the
// stream it assigned stays (failed) until it is deleted.
var errRestoreBroke = errors.New("the restore broke off")

// restoreStream creates stream from a snapshot (meta and the chunks read from r), which
// must not exist yet, and returns its state. A failure once JetStream has taken the
// request wraps errRestoreBroke.
func restoreStream(ctx context.Context, nc *nats.Conn, stream string, meta streamMeta, r io.Reader) (streamState, error) {
	var st streamState
	req, _ := json.Marshal(meta)
	rctx, cancel := context.WithTimeout(ctx, snapshotChunkTimeout)
	msg, err := nc.RequestWithContext(rctx, "$JS.API.STREAM.RESTORE."+stream, req)
	cancel()
	if err != nil {
		return st, fmt.Errorf("restore stream %s: %w", stream, err)
	}
	var resp struct {
		Error          *jsAPIError `json:"error"`
		DeliverSubject string      `json:"deliver_subject"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return st, fmt.Errorf("restore stream %s: bad answer: %w", stream, err)
	}
	if resp.Error != nil {
		return st, fmt.Errorf("restore stream %s: %w", stream, resp.Error)
	}
	br := bufio.NewReaderSize(r, restoreChunkSize)
	chunk := make([]byte, restoreChunkSize)
	for {
		n, rerr := io.ReadFull(br, chunk)
		if n > 0 {
			ack, err := sendChunk(ctx, nc, resp.DeliverSubject, chunk[:n])
			if err != nil {
				return st, fmt.Errorf("restore stream %s: %w: send a chunk: %w", stream, errRestoreBroke, err)
			}
			if len(ack.Data) > 0 {
				var a struct {
					Error *jsAPIError `json:"error"`
				}
				if json.Unmarshal(ack.Data, &a) == nil && a.Error != nil {
					return st, fmt.Errorf("restore stream %s: %w: %w", stream, errRestoreBroke, a.Error)
				}
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return st, fmt.Errorf("restore stream %s: %w: read the snapshot: %w", stream, errRestoreBroke, rerr)
		}
	}
	// The end: the server unpacks the snapshot and answers with the stream.
	rctx, cancel = context.WithTimeout(ctx, 5*time.Minute)
	msg, err = nc.RequestWithContext(rctx, resp.DeliverSubject, nil)
	cancel()
	if err != nil {
		return st, fmt.Errorf("restore stream %s: %w: finish: %w", stream, errRestoreBroke, err)
	}
	var done struct {
		Error *jsAPIError `json:"error"`
		State streamState `json:"state"`
	}
	if err := json.Unmarshal(msg.Data, &done); err != nil {
		return st, fmt.Errorf("restore stream %s: %w: bad answer: %w", stream, errRestoreBroke, err)
	}
	if done.Error != nil {
		return st, fmt.Errorf("restore stream %s: %w: %w", stream, errRestoreBroke, done.Error)
	}
	return done.State, nil
}

// sendChunk sends one chunk of a restore and returns the answer. The server that takes
// the snapshot (on a cluster, the restored stream's first leader) may have just
// subscribed to subject: until its interest reaches the server nc is connected to, a
// request finds no responders and reaches nobody, so it is sent again, for a few seconds.
func sendChunk(ctx context.Context, nc *nats.Conn, subject string, chunk []byte) (*nats.Msg, error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, snapshotChunkTimeout)
		ack, err := nc.RequestWithContext(rctx, subject, chunk)
		cancel()
		if !errors.Is(err, nats.ErrNoResponders) || time.Now().After(deadline) {
			return ack, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
