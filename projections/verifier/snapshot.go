package verifier

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections/keyindex"
)

// A snapshot is the verify index of a keyreg server at a stream sequence, so that a
// verifier starts from it and follows the stream from the next sequence instead of
// reading it from the first event. keyreg serve writes one periodically and on shutdown
// (WriteSnapshot) into the stream SnapshotStream: the snapshot's body in chunks on
// SnapshotChunkSubject, then its head (format, sequence, where the chunks are, their
// SHA-256) on SnapshotHeadSubject; older snapshots are then purged. A snapshot holds only
// what the KEYREG stream holds (the folded state of each key: secret hashes, never
// secrets), and NATS subscribers may read it exactly as they may read that stream
// (natsserver.SubscriberPublishAllow), never write it.
const (
	SnapshotStream       = "KEYREG_VERIFY_SNAPSHOT"
	SnapshotHeadSubject  = "keyreg-snapshot.verify.head"
	SnapshotChunkSubject = "keyreg-snapshot.verify.chunk"
)

// snapshotFormat is the version of the snapshot body; a verifier ignores a snapshot of
// another format and reads the stream from its first event.
const snapshotFormat = 1

// snapshotChunk is the size of a chunk of a snapshot's body, under NATS's default
// maximum payload of 1 MiB.
const snapshotChunk = 512 << 10

// snapshotHeadWait bounds the wait for a snapshot's head.
const snapshotHeadWait = 5 * time.Second

// snapshotHead is the head message of a snapshot.
type snapshotHead struct {
	Format int `json:"format"`
	// Seq is the KEYREG stream sequence the snapshot holds every record up to (it may
	// hold later ones; a verifier skips what a key already holds).
	Seq uint64 `json:"seq"`
	// StreamCreated is when the KEYREG stream was created: a snapshot of another stream
	// (one restored from a backup, say) is not used.
	StreamCreated time.Time `json:"stream_created"`
	First         uint64    `json:"first"` // sequence of the first chunk in SnapshotStream
	Chunks        int       `json:"chunks"`
	Keys          int       `json:"keys"`
	Bytes         int64     `json:"bytes"`
	SHA256        string    `json:"sha256"`
}

// SnapshotInfo describes a snapshot written.
type SnapshotInfo struct {
	Seq   uint64 // the KEYREG stream sequence it holds every record up to
	Keys  int
	Bytes int64
}

// EnsureSnapshotStream creates SnapshotStream if it does not exist (file storage, with
// direct gets, replicas as given).
func EnsureSnapshotStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        SnapshotStream,
		Description: "keyreg: snapshots of the verify index for embedded verifiers",
		Subjects:    []string{SnapshotHeadSubject, SnapshotChunkSubject},
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		AllowDirect: true,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("verifier: snapshot stream %s: %w", SnapshotStream, err)
	}
	return s, nil
}

// WriteSnapshot writes a snapshot of the keys each calls its function with, into
// SnapshotStream (EnsureSnapshotStream first), then purges the snapshots before it. each
// returns the sequence of stream whose records the keys hold, all of them up to it (they
// may hold later ones), or an error: then no snapshot is written. stream is the KEYREG stream's name ("": events.StreamName).
// keyreg serve calls it with projections.Store.EachKey.
func WriteSnapshot(ctx context.Context, js jetstream.JetStream, stream string, each func(func(*events.KeyState) bool) (uint64, error)) (SnapshotInfo, error) {
	if stream == "" {
		stream = events.StreamName
	}
	ks, err := js.Stream(ctx, stream)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("verifier: snapshot: stream %s: %w", stream, err)
	}
	ss, err := js.Stream(ctx, SnapshotStream)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("verifier: snapshot: %w", err)
	}
	cw := &chunkWriter{ctx: ctx, js: js, sum: sha256.New()}
	bw := bufio.NewWriterSize(cw, snapshotChunk)
	enc := snapshotEncoder{w: bw}
	keys := 0
	seq, err := each(func(k *events.KeyState) bool {
		if enc.key(k) != nil {
			return false
		}
		keys++
		return true
	})
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("verifier: snapshot: %w", err)
	}
	if enc.err == nil {
		enc.err = bw.Flush()
	}
	if enc.err != nil {
		return SnapshotInfo{}, fmt.Errorf("verifier: snapshot: %w", enc.err)
	}
	if cw.chunks == 0 { // no keys: one empty chunk, so that First names a message
		if err := cw.publish(nil); err != nil {
			return SnapshotInfo{}, fmt.Errorf("verifier: snapshot: %w", err)
		}
	}
	head := snapshotHead{Format: snapshotFormat, Seq: seq, StreamCreated: ks.CachedInfo().Created,
		First: cw.first, Chunks: cw.chunks, Keys: keys, Bytes: cw.bytes, SHA256: hex.EncodeToString(cw.sum.Sum(nil))}
	data, err := json.Marshal(head)
	if err != nil {
		return SnapshotInfo{}, err
	}
	if _, err := js.Publish(ctx, SnapshotHeadSubject, data); err != nil {
		return SnapshotInfo{}, fmt.Errorf("verifier: snapshot head: %w", err)
	}
	if err := ss.Purge(ctx, jetstream.WithPurgeSequence(cw.first)); err != nil {
		return SnapshotInfo{}, fmt.Errorf("verifier: purge older snapshots: %w", err)
	}
	return SnapshotInfo{Seq: seq, Keys: keys, Bytes: cw.bytes}, nil
}

// chunkWriter publishes what is written to it as chunks, one per Write (bufio.Writer
// writes full chunks), and sums it.
type chunkWriter struct {
	ctx    context.Context
	js     jetstream.JetStream
	sum    hash.Hash
	first  uint64
	chunks int
	bytes  int64
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		n := min(len(p), snapshotChunk)
		if err := c.publish(p[:n]); err != nil {
			return 0, err
		}
		p = p[n:]
	}
	return written, nil
}

func (c *chunkWriter) publish(p []byte) error {
	ack, err := c.js.Publish(c.ctx, SnapshotChunkSubject, p)
	if err != nil {
		return fmt.Errorf("chunk %d: %w", c.chunks, err)
	}
	if c.chunks == 0 {
		c.first = ack.Sequence
	} else if ack.Sequence != c.first+uint64(c.chunks) {
		return fmt.Errorf("chunk %d stored at %d, not after chunk %d at %d: another writer", c.chunks, ack.Sequence, c.chunks-1, c.first+uint64(c.chunks-1))
	}
	c.sum.Write(p)
	c.chunks++
	c.bytes += int64(len(p))
	return nil
}

// loadSnapshot loads the latest snapshot of SnapshotStream into x and returns the KEYREG
// sequence it holds every record up to. It returns an error, with x partly filled, for a
// missing, unreadable, corrupt or other-format snapshot, or one of another stream than
// ks (info as of now, whose last sequence must be at least the snapshot's).
func loadSnapshot(ctx context.Context, js jetstream.JetStream, ks *jetstream.StreamInfo, x *keyindex.Index) (uint64, error) {
	// A server from before snapshots refuses these requests without answering: a few
	// seconds, not all of ctx.
	hctx, cancel := context.WithTimeout(ctx, snapshotHeadWait)
	defer cancel()
	ss, err := js.Stream(hctx, SnapshotStream)
	if err != nil {
		return 0, err
	}
	m, err := ss.GetLastMsgForSubject(hctx, SnapshotHeadSubject)
	if err != nil {
		return 0, fmt.Errorf("head: %w", err)
	}
	var h snapshotHead
	if err := json.Unmarshal(m.Data, &h); err != nil {
		return 0, fmt.Errorf("head: %w", err)
	}
	switch {
	case h.Format != snapshotFormat:
		return 0, fmt.Errorf("format %d, this verifier reads %d", h.Format, snapshotFormat)
	case !h.StreamCreated.Equal(ks.Created):
		return 0, fmt.Errorf("of a stream created at %s, not this one (%s)", h.StreamCreated, ks.Created)
	case h.Seq > ks.State.LastSeq:
		return 0, fmt.Errorf("at sequence %d, beyond the stream's last %d", h.Seq, ks.State.LastSeq)
	}
	cr := &chunkReader{ctx: ctx, ss: ss, next: h.First, end: h.First + uint64(h.Chunks), sum: sha256.New()}
	dec := snapshotDecoder{r: bufio.NewReaderSize(cr, 64<<10)}
	batch := make([]events.KeyState, 0, 4096)
	for i := range h.Keys {
		k, err := dec.key()
		if err != nil {
			return 0, fmt.Errorf("key %d of %d: %w", i, h.Keys, err)
		}
		if batch = append(batch, k); len(batch) == cap(batch) {
			x.Put(batch...)
			batch = batch[:0]
		}
	}
	x.Put(batch...)
	if _, err := io.Copy(io.Discard, dec.r); err != nil { // the rest, for the sum
		return 0, err
	}
	if cr.read != h.Bytes || hex.EncodeToString(cr.sum.Sum(nil)) != h.SHA256 {
		return 0, fmt.Errorf("%d bytes, want %d with SHA-256 %s: corrupt", cr.read, h.Bytes, h.SHA256)
	}
	return h.Seq, nil
}

// chunkReader reads the chunks of a snapshot in order, and sums them.
type chunkReader struct {
	ctx       context.Context
	ss        jetstream.Stream
	next, end uint64
	buf       []byte
	sum       hash.Hash
	read      int64
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.next >= c.end {
			return 0, io.EOF
		}
		m, err := c.ss.GetMsg(c.ctx, c.next)
		if err != nil {
			return 0, fmt.Errorf("chunk at %d: %w", c.next, err)
		}
		if m.Subject != SnapshotChunkSubject {
			return 0, fmt.Errorf("chunk at %d is on %s", c.next, m.Subject)
		}
		c.next++
		c.buf = m.Data
		c.sum.Write(m.Data)
		c.read += int64(len(m.Data))
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// snapshotEncoder writes keys in the snapshot's binary layout: strings and lists with
// their length first (lists as length+1, 0 for nil, so that nil and empty stay apart),
// 64-digit lowercase hex hashes as their 32 bytes, times as time.MarshalBinary.
type snapshotEncoder struct {
	w   *bufio.Writer
	err error
	buf []byte
}

func (e *snapshotEncoder) key(k *events.KeyState) error {
	e.buf = e.buf[:0]
	e.str(k.ID)
	e.str(string(k.Workspace))
	e.str(k.Name)
	e.buf = binary.AppendUvarint(e.buf, listLen(k.Permissions == nil, len(k.Permissions)))
	for _, p := range k.Permissions {
		e.str(string(p))
	}
	e.buf = binary.AppendUvarint(e.buf, listLen(k.Allowlist == nil, len(k.Allowlist)))
	for _, p := range k.Allowlist {
		b, _ := p.MarshalBinary()
		e.bytes(b)
	}
	e.str(k.Status)
	e.optTime(k.ExpiresAt)
	e.hash(k.SecretHash)
	e.hash(k.PreviousHash)
	e.optTime(k.PreviousValidUntil)
	e.time(k.CreatedAt)
	e.str(k.CreatedBy)
	e.time(k.UpdatedAt)
	e.buf = binary.AppendUvarint(e.buf, k.Version)
	e.hash(k.LastHash)
	if e.err == nil {
		_, e.err = e.w.Write(e.buf)
	}
	return e.err
}

func listLen(isNil bool, n int) uint64 {
	if isNil {
		return 0
	}
	return uint64(n) + 1
}

func (e *snapshotEncoder) str(s string) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(s)))
	e.buf = append(e.buf, s...)
}

func (e *snapshotEncoder) bytes(b []byte) {
	e.buf = binary.AppendUvarint(e.buf, uint64(len(b)))
	e.buf = append(e.buf, b...)
}

// hash writes a 64-digit lowercase hex string as 1 and its 32 bytes, anything else as 0
// and the string.
func (e *snapshotEncoder) hash(s string) {
	var d [32]byte
	if len(s) == 64 && hex.EncodeToString(mustDecodeHex(s, &d)) == s {
		e.buf = append(e.buf, 1)
		e.buf = append(e.buf, d[:]...)
		return
	}
	e.buf = append(e.buf, 0)
	e.str(s)
}

// mustDecodeHex decodes s into d and returns d's bytes, or nil if s is not hex.
func mustDecodeHex(s string, d *[32]byte) []byte {
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return nil
	}
	return d[:]
}

func (e *snapshotEncoder) time(t time.Time) {
	b, err := t.MarshalBinary()
	if err != nil && e.err == nil {
		e.err = err
	}
	e.bytes(b)
}

func (e *snapshotEncoder) optTime(t *time.Time) {
	if t == nil {
		e.buf = append(e.buf, 0)
		return
	}
	e.buf = append(e.buf, 1)
	e.time(*t)
}

// snapshotDecoder reads what snapshotEncoder wrote.
type snapshotDecoder struct {
	r   *bufio.Reader
	err error
}

// errSnapshotValue is the error of a value that cannot be in a snapshot.
var errSnapshotValue = errors.New("bad value")

func (d *snapshotDecoder) key() (events.KeyState, error) {
	var k events.KeyState
	k.ID = d.str()
	k.Workspace = events.Workspace(d.str())
	k.Name = d.str()
	if n := d.listLen(); n > 0 {
		k.Permissions = make([]events.Permission, n-1)
		for i := range k.Permissions {
			k.Permissions[i] = events.Permission(d.str())
		}
	}
	if n := d.listLen(); n > 0 {
		k.Allowlist = make([]netip.Prefix, n-1)
		for i := range k.Allowlist {
			if err := k.Allowlist[i].UnmarshalBinary(d.bytes()); err != nil && d.err == nil {
				d.err = err
			}
		}
	}
	k.Status = d.str()
	k.ExpiresAt = d.optTime()
	k.SecretHash = d.hash()
	k.PreviousHash = d.hash()
	k.PreviousValidUntil = d.optTime()
	k.CreatedAt = d.time()
	k.CreatedBy = d.str()
	k.UpdatedAt = d.time()
	k.Version = d.uvarint()
	k.LastHash = d.hash()
	return k, d.err
}

func (d *snapshotDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.r)
	if err != nil {
		d.err = err
	}
	return v
}

// listLen reads a list's length+1 (0: nil), at most 1<<16.
func (d *snapshotDecoder) listLen() int {
	n := d.uvarint()
	if n > 1<<16 {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *snapshotDecoder) fail() {
	if d.err == nil {
		d.err = errSnapshotValue
	}
}

func (d *snapshotDecoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > 1<<20 {
		d.fail()
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.err = err
		return nil
	}
	return b
}

func (d *snapshotDecoder) str() string { return string(d.bytes()) }

func (d *snapshotDecoder) hash() string {
	if d.err != nil {
		return ""
	}
	tag, err := d.r.ReadByte()
	switch {
	case err != nil:
		d.err = err
	case tag == 0:
		return d.str()
	case tag == 1:
		var b [32]byte
		if _, err := io.ReadFull(d.r, b[:]); err != nil {
			d.err = err
			return ""
		}
		return hex.EncodeToString(b[:])
	default:
		d.fail()
	}
	return ""
}

func (d *snapshotDecoder) time() time.Time {
	var t time.Time
	if b := d.bytes(); d.err == nil {
		if err := t.UnmarshalBinary(b); err != nil {
			d.err = err
		}
	}
	return t
}

func (d *snapshotDecoder) optTime() *time.Time {
	if d.err != nil {
		return nil
	}
	tag, err := d.r.ReadByte()
	switch {
	case err != nil:
		d.err = err
	case tag == 1:
		t := d.time()
		return &t
	case tag != 0:
		d.fail()
	}
	return nil
}

// LatestSnapshot returns the KEYREG stream sequence of the latest snapshot in
// SnapshotStream, and false when there is none or its head cannot be read.
func LatestSnapshot(ctx context.Context, js jetstream.JetStream) (uint64, bool) {
	ss, err := js.Stream(ctx, SnapshotStream)
	if err != nil {
		return 0, false
	}
	m, err := ss.GetLastMsgForSubject(ctx, SnapshotHeadSubject)
	if err != nil {
		return 0, false
	}
	var h snapshotHead
	if json.Unmarshal(m.Data, &h) != nil || h.Format != snapshotFormat {
		return 0, false
	}
	return h.Seq, true
}
