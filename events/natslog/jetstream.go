package natslog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/keyreg/keyreg/events"
)

// JetStream error codes that mean an expected last sequence did not hold.
const (
	errCodeWrongLastSeq         jetstream.ErrorCode = 10071
	errCodeWrongLastSeqConstant jetstream.ErrorCode = 10164
)

// StreamConfig returns the configuration of the KEYREG stream: every subject under
// keyreg.>, file storage, no limits with Discard New, no deletes, purges or rollups,
// direct gets, and atomic batch publish.
func StreamConfig(replicas int) jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:               events.StreamName,
		Description:        "keyreg events: the only source of truth",
		Subjects:           []string{events.SubjectPrefix + ".>"},
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardNew,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxAge:             0,
		MaxMsgsPerSubject:  -1,
		Replicas:           replicas,
		Duplicates:         2 * time.Minute,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowRollup:        false,
		AllowDirect:        true,
		AllowAtomicPublish: true,
	}
}

// Log is the event log (events.Log) on a NATS JetStream stream.
type Log struct {
	nc            *nats.Conn
	js            jetstream.JetStream
	stream        jetstream.Stream
	directSubject string
	getSubject    string // the stream leader's message get: $JS.API.STREAM.MSG.GET.<stream>
	// replicated: the stream keeps more than one replica, so that a direct get may be
	// answered by a replica that lags behind the leader (see leaderGet).
	replicated bool
	minBatch   int           // see Options.MinBatchMessages
	attempt    time.Duration // see Options.AttemptTimeout
	stall      time.Duration // see Options.FollowStallTimeout
	logger     *slog.Logger  // see Options.Logger
}

// Options configure Open.
type Options struct {
	Replicas int // 1 for the embedded server, 3 on a cluster
	// MinBatchMessages is the fewest messages AppendGroup puts in one atomic batch; 0
	// means DefaultMinBatchMessages, 2 batches every group of more than one command.
	MinBatchMessages int
	// AttemptTimeout bounds the wait for one publish's acknowledgement; 0 means
	// DefaultAttemptTimeout. An append whose acknowledgement did not come within it asks
	// again, with the same message ids, until its context ends (see Append).
	AttemptTimeout time.Duration
	// FollowStallTimeout is how long a follower waits for a record its consumer holds
	// before it makes the consumer again (see FollowSubject); 0 means
	// DefaultFollowStallTimeout.
	FollowStallTimeout time.Duration
	// Logger takes what the log reports on its own (a follower that stood still); nil
	// means slog.Default().
	Logger *slog.Logger
}

// DefaultAttemptTimeout is Options.AttemptTimeout's default: far above a healthy
// acknowledgement (milliseconds), and short beside the leader election that follows the
// loss of a stream leader (seconds).
const DefaultAttemptTimeout = 2 * time.Second

// MaxAppendWait bounds the attempts of an Append whose context has no deadline.
const MaxAppendWait = 30 * time.Second

// Open creates the KEYREG stream, or checks an existing one and updates the
// settings that may change. It does not own nc: Close leaves it open.
func Open(ctx context.Context, nc *nats.Conn, opts Options) (*Log, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natslog: jetstream: %w", err)
	}
	want := StreamConfig(opts.Replicas)
	stream, err := js.Stream(ctx, events.StreamName)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		stream, err = js.CreateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("natslog: create stream %s: %w", events.StreamName, err)
		}
	case err != nil:
		return nil, fmt.Errorf("natslog: stream %s: %w", events.StreamName, err)
	default:
		have := stream.CachedInfo().Config
		if have.Storage != want.Storage || !reflect.DeepEqual(have.Subjects, want.Subjects) ||
			have.Retention != want.Retention {
			return nil, fmt.Errorf("natslog: stream %s exists with storage %s, subjects %v, retention %s; keyreg needs file storage, %v, limits",
				events.StreamName, have.Storage, have.Subjects, have.Retention, want.Subjects)
		}
		if !sameMutable(have, want) {
			want.Replicas = have.Replicas // changing replicas is an operator's decision
			if stream, err = js.UpdateStream(ctx, want); err != nil {
				return nil, fmt.Errorf("natslog: update stream %s: %w", events.StreamName, err)
			}
		}
	}
	minBatch := opts.MinBatchMessages
	if minBatch <= 0 {
		minBatch = DefaultMinBatchMessages
	}
	attempt := opts.AttemptTimeout
	if attempt <= 0 {
		attempt = DefaultAttemptTimeout
	}
	stall := opts.FollowStallTimeout
	if stall <= 0 {
		stall = DefaultFollowStallTimeout
	}
	return &Log{nc: nc, js: js, stream: stream,
		directSubject: "$JS.API.DIRECT.GET." + events.StreamName,
		getSubject:    "$JS.API.STREAM.MSG.GET." + events.StreamName,
		replicated:    stream.CachedInfo().Config.Replicas > 1,
		minBatch:      minBatch, attempt: attempt, stall: stall, logger: cmp.Or(opts.Logger, slog.Default())}, nil
}

func sameMutable(have, want jetstream.StreamConfig) bool {
	return have.Discard == want.Discard && have.MaxMsgs == want.MaxMsgs && have.MaxBytes == want.MaxBytes &&
		have.MaxAge == want.MaxAge && have.DenyDelete == want.DenyDelete && have.DenyPurge == want.DenyPurge &&
		have.AllowRollup == want.AllowRollup && have.AllowDirect == want.AllowDirect &&
		have.AllowAtomicPublish == want.AllowAtomicPublish && have.MaxMsgsPerSubject == want.MaxMsgsPerSubject
}

// JetStream returns the JetStream context, for tools that need more than the Log.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Close implements events.Log. The connection stays open: its owner closes it.
func (l *Log) Close() error { return nil }

// Append implements events.Appender. One message is published with a plain JetStream publish;
// several go in one atomic batch (all or none, one fsync). While the stream has no leader
// or no quorum, or the connection is down, it fails with an error wrapping
// events.ErrUnavailable, and also context.DeadlineExceeded when no answer came: the
// messages may be stored all the same (see unavailable). Reads fail so too.
func (l *Log) Append(ctx context.Context, msgs []events.Message) ([]uint64, error) {
	if len(msgs) == 0 {
		return nil, fmt.Errorf("natslog: append: no messages")
	}
	nmsgs, err := natsMsgs(msgs)
	if err != nil {
		return nil, err
	}
	// Each attempt waits for its acknowledgement at most l.attempt. No answer in time
	// means the stream's leader may be gone (a leader that dies takes the publishes it
	// was given with it), so ask again until ctx ends: the new leader answers once
	// elected. Asking again is safe: the stream drops a message id it already holds
	// (answering with the first one's sequence), and a batch whose expectations fail
	// because it is stored already is found by findStored below.
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, MaxAppendWait)
		defer cancel()
	}
	for {
		var seqs []uint64
		seqs, err = l.publish(ctx, nmsgs)
		if err == nil {
			return seqs, nil
		}
		if ctx.Err() != nil || !noAnswer(err) {
			break
		}
	}
	// A conflict or a duplicate after a lost ack: the messages may already be stored.
	if seqs, ok := l.findStored(ctx, msgs, conflictLastSeq(err)); ok {
		return seqs, nil
	}
	if isConflict(err) {
		return nil, fmt.Errorf("%w: append %s: %v", events.ErrConflict, msgs[0].Subject, err)
	}
	return nil, fmt.Errorf("natslog: append %s: %w", msgs[0].Subject, unavailable(err))
}

// publish makes one attempt at storing nmsgs, waiting at most l.attempt for the answer.
// One message is published with a plain JetStream publish; several go in one atomic
// batch.
func (l *Log) publish(ctx context.Context, nmsgs []*nats.Msg) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, l.attempt)
	defer cancel()
	if len(nmsgs) == 1 {
		ack, err := l.js.PublishMsg(ctx, nmsgs[0])
		if err != nil {
			return nil, err
		}
		// A duplicate's ack carries the sequence stored the first time.
		return []uint64{ack.Sequence}, nil
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, l.js, nmsgs)
	if err != nil {
		return nil, err
	}
	return consecutive(ack.Sequence-uint64(len(nmsgs))+1, len(nmsgs)), nil
}

// noAnswer reports whether err says an acknowledgement did not come in time, or that an
// earlier attempt with the same message id is still being stored.
func noAnswer(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		apiErrorCode(err) == errCodeDuplicateInProcess
}

// natsMsgs makes the NATS messages of msgs: the event id as Nats-Msg-Id, the expectation
// as expected last subject sequence.
func natsMsgs(msgs []events.Message) ([]*nats.Msg, error) {
	nmsgs := make([]*nats.Msg, len(msgs))
	for i, m := range msgs {
		if m.ID == "" {
			return nil, fmt.Errorf("natslog: append: message %d has no id", i)
		}
		nm := nats.NewMsg(m.Subject)
		nm.Data = m.Data
		nm.Header.Set(jetstream.MsgIDHeader, m.ID)
		if m.ExpectFilter != "" {
			nm.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(m.ExpectSeq, 10))
			nm.Header.Set(jetstream.ExpectedLastSubjSeqSubjHeader, m.ExpectFilter)
		}
		nmsgs[i] = nm
	}
	return nmsgs, nil
}

func consecutive(first uint64, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		out[i] = first + uint64(i)
	}
	return out
}

// findStored looks for msgs already in the stream, as after a retry of an append whose
// acknowledgement was lost. Atomic batches are stored at consecutive sequences. last, when
// not 0, is the last sequence on the first message's expectation filter, as the leader
// reported it in a conflict: if they are stored, they are at or before it.
func (l *Log) findStored(ctx context.Context, msgs []events.Message, last uint64) ([]uint64, bool) {
	first := msgs[0]
	var found uint64
	if first.ExpectFilter != "" {
		// It is on the filter after the expected sequence, if anywhere. The nearest copy
		// answers when it holds the filter up to last; else ask exactly (Read).
		reached := false
		look := func(r events.Record) error {
			if r.MsgID == first.ID {
				found = r.Seq
				return errStop
			}
			reached = reached || (last > 0 && r.Seq >= last)
			return nil
		}
		if last == 0 || l.ReadNear(ctx, first.ExpectFilter, first.ExpectSeq+1, look) != nil || (found == 0 && !reached) {
			found = 0
			_ = l.Read(ctx, first.ExpectFilter, first.ExpectSeq+1, look)
		}
	} else {
		r, ok, err := l.leaderGet(ctx, msgGetRequest{LastFor: first.Subject})
		if err == nil && ok && r.MsgID == first.ID {
			found = r.Seq
		}
	}
	if found == 0 {
		return nil, false
	}
	seqs := consecutive(found, len(msgs))
	for i := 1; i < len(msgs); i++ {
		r, err := l.Get(ctx, seqs[i])
		if err != nil || r.MsgID != msgs[i].ID {
			return nil, false
		}
	}
	return seqs, true
}

var errStop = errors.New("stop")

// conflictLastSeq returns the last sequence on the expectation's filter that a conflict
// (err) reports, "wrong last sequence: N"; 0 when err says none.
func conflictLastSeq(err error) uint64 {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		var jsErr jetstream.JetStreamError
		if !errors.As(err, &jsErr) || jsErr.APIError() == nil {
			return 0
		}
		apiErr = jsErr.APIError()
	}
	n, ok := strings.CutPrefix(apiErr.Description, "wrong last sequence: ")
	if apiErr.ErrorCode != errCodeWrongLastSeq || !ok {
		return 0
	}
	seq, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0
	}
	return seq
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == errCodeWrongLastSeq || apiErr.ErrorCode == errCodeWrongLastSeqConstant
	}
	var jsErr jetstream.JetStreamError
	if errors.As(err, &jsErr) && jsErr.APIError() != nil {
		c := jsErr.APIError().ErrorCode
		return c == errCodeWrongLastSeq || c == errCodeWrongLastSeqConstant
	}
	return false
}

// LastSeq implements events.Reader.
func (l *Log) LastSeq(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("natslog: stream info: %w", unavailable(err))
	}
	return info.State.LastSeq, nil
}

// Get implements events.Reader. On a replicated stream a direct get may be answered by a
// replica that has not stored seq yet, even though the stream has it (an append
// acknowledged by a majority that did not include this replica): a direct get that finds
// nothing there is asked of the stream leader (leaderGet), whose answer is exact.
func (l *Log) Get(ctx context.Context, seq uint64) (events.Record, error) {
	raw, err := l.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) && l.replicated && seq > 0 {
		r, found, err := l.leaderGet(ctx, msgGetRequest{Seq: seq})
		if err != nil {
			return events.Record{}, err
		}
		if !found {
			return events.Record{}, fmt.Errorf("%w: sequence %d", events.ErrNotFound, seq)
		}
		return r, nil
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return events.Record{}, fmt.Errorf("%w: sequence %d", events.ErrNotFound, seq)
	}
	if err != nil {
		return events.Record{}, fmt.Errorf("natslog: get %d: %w", seq, unavailable(err))
	}
	return events.Record{Seq: raw.Sequence, Subject: raw.Subject, MsgID: raw.Header.Get(jetstream.MsgIDHeader), Time: raw.Time.UTC(), Data: raw.Data}, nil
}

// msgGetRequest asks the stream leader for one message (nats-server's JSApiMsgGetRequest):
// the one at Seq; the first on NextFor from Seq on; or the last on LastFor.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

// leaderGetTimeout bounds the wait for the stream leader's answer to one leaderGet, and
// leaderGetAttempt the wait for one request's: a leader answers a get in milliseconds.
const (
	leaderGetTimeout = 10 * time.Second
	leaderGetAttempt = 500 * time.Millisecond
)

// leaderGet asks the stream leader for one message ($JS.API.STREAM.MSG.GET, which only
// the leader answers). Direct gets are answered by any replica, and a replica may lag
// behind the leader by the appends a majority acknowledged without it; the leader holds
// every acknowledged append, so its answer is exact. found is false when the stream holds
// no such message. An error that says the stream cannot answer now (no leader, no answer
// in time) wraps events.ErrUnavailable.
func (l *Log) leaderGet(ctx context.Context, req msgGetRequest) (r events.Record, found bool, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return events.Record{}, false, err
	}
	// Only the leader answers, so a request sent while there is none (a leader lost, one
	// being elected) goes unanswered: ask again every leaderGetAttempt, so that the new
	// leader answers soon after it is elected.
	ctx, cancel := context.WithTimeout(ctx, leaderGetTimeout)
	defer cancel()
	var m *nats.Msg
	for {
		actx, cancel := context.WithTimeout(ctx, leaderGetAttempt)
		m, err = l.nc.RequestWithContext(actx, l.getSubject, body)
		cancel()
		if err == nil || ctx.Err() != nil || !noAnswer(err) {
			break
		}
	}
	if err != nil {
		return events.Record{}, false, fmt.Errorf("natslog: get %+v from the stream leader: %w", req, unavailable(err))
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Seq     uint64    `json:"seq"`
			Header  []byte    `json:"hdrs"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return events.Record{}, false, fmt.Errorf("natslog: get %+v from the stream leader: %w", req, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return events.Record{}, false, nil
	case resp.Error != nil:
		return events.Record{}, false, fmt.Errorf("natslog: get %+v from the stream leader: %w", req, unavailable(resp.Error))
	case resp.Message == nil:
		return events.Record{}, false, fmt.Errorf("natslog: get %+v from the stream leader: an answer without a message", req)
	}
	msg := resp.Message
	r = events.Record{Seq: msg.Seq, Subject: msg.Subject, Time: msg.Time.UTC(), Data: msg.Data}
	if len(msg.Header) > 0 {
		h, err := nats.DecodeHeadersMsg(msg.Header)
		if err != nil {
			return events.Record{}, false, fmt.Errorf("natslog: get %+v from the stream leader: headers: %w", req, err)
		}
		r.MsgID = h.Get(jetstream.MsgIDHeader)
	}
	return r, true, nil
}

// readBatch is how many messages one direct batch get asks for.
const readBatch = 256

// Direct gets that find no server to answer are asked again this many times, this long
// apart: a replicated stream just created (or a replica just restarted) answers them a
// moment later, as nats.go retries publishes that find no responders.
const (
	directRetries   = 10
	directRetryWait = 250 * time.Millisecond
)

// Read implements events.Reader with direct batch gets, so reading one aggregate costs no
// consumer and no stream info request. Messages stored while Read runs may be included.
//
// On a replicated stream the replica that answers direct gets may lag behind the leader
// (see leaderGet) and hold only the first of filter's records. Read then asks the leader
// for the next record on filter after the last it read: none, and the read is complete
// (exact as of that moment, as a read of the leader's store is); one, and Read takes it
// and reads on from there. It costs one request to the leader per Read.
func (l *Log) Read(ctx context.Context, filter string, from uint64, fn func(events.Record) error) error {
	if from == 0 {
		from = 1
	}
	for {
		next, err := l.readDirect(ctx, filter, from, fn)
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil || !l.replicated {
			return err
		}
		r, found, err := l.leaderGet(ctx, msgGetRequest{Seq: next, NextFor: filter})
		if err != nil || !found {
			return err
		}
		if err := fn(r); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		from = r.Seq + 1
	}
}

// ReadNear implements events.NearReader: Read without the question to the stream leader,
// so that on a replicated stream it may lack the latest acknowledged appends (see Read).
func (l *Log) ReadNear(ctx context.Context, filter string, from uint64, fn func(events.Record) error) error {
	_, err := l.readDirect(ctx, filter, max(from, 1), fn)
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// readDirect reads filter from sequence from on with direct batch gets, as far as the
// replica that answers holds it, and returns the sequence after the last record read.
func (l *Log) readDirect(ctx context.Context, filter string, from uint64, fn func(events.Record) error) (uint64, error) {
	for tries := 0; ; {
		n, next, err := l.directBatch(ctx, filter, from, readBatch, fn)
		if errors.Is(err, errStop) {
			return next, err
		}
		if n == 0 && errors.Is(err, nats.ErrNoResponders) && tries < directRetries {
			tries++
			select {
			case <-ctx.Done():
				return from, unavailable(ctx.Err())
			case <-time.After(directRetryWait):
			}
			continue
		}
		if err != nil || n < readBatch {
			return next, unavailable(err)
		}
		from = next
	}
}

// directBatch asks the stream for up to batch messages on filter from sequence from (a
// JetStream direct batch get) and calls fn for each. It returns how many came and the
// sequence after the last one.
func (l *Log) directBatch(ctx context.Context, filter string, from uint64, batch int, fn func(events.Record) error) (int, uint64, error) {
	inbox := l.nc.NewInbox()
	ch := make(chan *nats.Msg, batch+1)
	sub, err := l.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, from, fmt.Errorf("natslog: read %s: %w", filter, err)
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(struct {
		Seq   uint64 `json:"seq"`
		Subj  string `json:"next_by_subj"`
		Batch int    `json:"batch"`
	}{from, filter, batch})
	if err := l.nc.PublishRequest(l.directSubject, inbox, req); err != nil {
		return 0, from, fmt.Errorf("natslog: read %s: %w", filter, err)
	}
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	n := 0
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return n, from, ctx.Err()
		case <-timeout.C:
			return n, from, fmt.Errorf("natslog: read %s from %d: %w", filter, from, context.DeadlineExceeded)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "204", "404": // end of batch; no (more) messages
				return n, from, nil
			case "503": // no server answers direct gets of the stream now
				return n, from, fmt.Errorf("natslog: read %s from %d: %w", filter, from, nats.ErrNoResponders)
			}
			return n, from, fmt.Errorf("natslog: read %s from %d: %s %s", filter, from, m.Header.Get("Status"), m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return n, from, fmt.Errorf("natslog: read %s: bad sequence header: %w", filter, err)
		}
		ts, err := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		if err != nil {
			return n, from, fmt.Errorf("natslog: read %s: bad time header: %w", filter, err)
		}
		n++
		from = seq + 1
		r := events.Record{Seq: seq, Subject: m.Header.Get(jetstream.SubjectHeader), MsgID: m.Header.Get(jetstream.MsgIDHeader), Time: ts.UTC(), Data: m.Data}
		if err := fn(r); err != nil {
			return n, from, err
		}
	}
}

// Follow implements events.Reader with an ordered consumer, which recovers from gaps and
// reconnects by itself.
func (l *Log) Follow(ctx context.Context, from uint64, fn func(events.Record) error) error {
	return l.FollowSubject(ctx, "", from, fn)
}
