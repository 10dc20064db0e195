package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// Audit export formats.
const (
	// FormatJSONL is JSON Lines: one line per event,
	//
	//	{"sequence":N,"leaf_index":N-1,"event":<the CloudEvent as stored>,"proof":["<base64 hash>",...]}
	//
	// where proof is the RFC 6962 inclusion proof of the leaf in the tree of the export's
	// checkpoint, then one final line
	//
	//	{"checkpoint":{"tree_size":T,"root_hash":"<base64>","note":"<signed note>"},"statement":"<signed note>","workspace":"<ws>","events":N,"filter":{...}}
	//
	// where statement (see ExportStatement) is signed at export time and binds what the
	// export is: its workspace and filter, the stream sequence it is a snapshot of, the
	// size and root of the workspace's own audit tree then, and for a key's export the
	// key's last event. VerifyExport checks it offline.
	FormatJSONL = "jsonl"
	// FormatCSV is one row per change with the columns of CSVHeader.
	FormatCSV = "csv"
)

// CSVHeader is the first row of a CSV export. before and after are JSON of the values
// the event changed, before and after it (empty before for a creation); aggregate is the
// CloudEvent subject (key/<id>, identifier/<id>, ...); change is the event type's name
// (created, allowlist_updated, revoked, ...). A reason that a spreadsheet would run as a
// formula (starting with = + - @, a tab or a carriage return) is prefixed with '.
var CSVHeader = []string{"time", "actor", "actor_ip", "aggregate", "change", "before", "after", "sequence", "event_id", "reason"}

// ErrNoCheckpoint means a JSON Lines export needs a signed checkpoint and none can be had:
// none was sealed yet, and the exporter cannot seal.
var ErrNoCheckpoint = errors.New("replay: no signed checkpoint of the audit tree yet")

// ExportQuery is what to export.
type ExportQuery struct {
	Workspace events.Workspace
	// Filter selects the events; Export sets its MaxSeq to the views' checkpoint when
	// it starts (or lower), so an export is a consistent snapshot.
	Filter projections.AuditFilter
	// After exports only the events after this stream sequence.
	After  uint64
	Format string // FormatJSONL (default) or FormatCSV
}

// ExportStats describe a finished export.
type ExportStats struct {
	Events     int
	LastSeq    uint64                 // sequence of the last event exported, 0 for none
	Checkpoint events.CheckpointState // of a JSON Lines export
}

// Exporter writes audit exports from the views' history index and the log.
type Exporter struct {
	Log   events.Reader
	Store *projections.Store
	// Seal, when set, seals a checkpoint covering at least atLeast leaves and returns it
	// once the views have applied it. Without it, a JSON Lines export stops at the latest
	// checkpoint sealed, so every event it holds is proven.
	Seal func(ctx context.Context, atLeast uint64) (events.CheckpointState, error)
	// Attest, when set, signs the text of an export's statement (ExportStatement) as a
	// golang.org/x/mod/sumdb/note with the sealer's key and returns the signed note.
	// Without it a JSON Lines export carries no statement, and its completeness cannot be
	// proven.
	Attest func(text []byte) (string, error)
	// PageSize is how many index entries and events are read at a time; 0 means 1000.
	PageSize int
}

// Export writes the events of q to w in q.Format, in stream order, in constant memory
// whatever their number: it reads the index and the log a page at a time and flushes w
// after each page when w has a Flush method (http.ResponseWriter). A JSON Lines export
// uses the latest checkpoint if it covers the last event exported, and else seals a fresh
// one first (see Seal). It returns ErrNoCheckpoint, an *events.ValidationError for an
// unknown format, or the errors of the log, the views and w.
func (x Exporter) Export(ctx context.Context, w io.Writer, q ExportQuery) (ExportStats, error) {
	if q.Format == "" {
		q.Format = FormatJSONL
	}
	if q.Format != FormatJSONL && q.Format != FormatCSV {
		return ExportStats{}, events.Invalid("format", q.Format, "must be jsonl or csv")
	}
	hi := x.Store.Checkpoint()
	if q.Filter.MaxSeq == 0 || q.Filter.MaxSeq > hi {
		q.Filter.MaxSeq = hi
	}
	if hi == 0 {
		q.Filter.MaxSeq = 0
	}
	out := &flushWriter{w: w, bw: bufio.NewWriterSize(w, 64<<10)}
	var stats ExportStats
	var err error
	if q.Format == FormatCSV {
		stats, err = x.exportCSV(ctx, out, q)
	} else {
		stats, err = x.exportJSONL(ctx, out, q)
	}
	if ferr := out.flush(); err == nil {
		err = ferr
	}
	return stats, err
}

// flushWriter buffers and flushes through to the writer below at the end of each page.
type flushWriter struct {
	w  io.Writer
	bw *bufio.Writer
}

func (f *flushWriter) flush() error {
	if err := f.bw.Flush(); err != nil {
		return err
	}
	switch fw := f.w.(type) {
	case interface{ Flush() error }:
		return fw.Flush()
	case interface{ Flush() }:
		fw.Flush()
	}
	return nil
}

func (x Exporter) pageSize() int {
	if x.PageSize > 0 {
		return x.PageSize
	}
	return 1000
}

// each calls fn with each matching index entry and its record, a page at a time, calling
// page after each page.
func (x Exporter) each(ctx context.Context, q ExportQuery, fn func(projections.HistoryEntry, events.Record) error, page func() error) error {
	if q.Filter.MaxSeq == 0 {
		return nil // an empty log
	}
	after := q.After
	for {
		entries, err := x.Store.Audit(q.Workspace, q.Filter, after, x.pageSize())
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return nil
		}
		if err := x.bodies(ctx, q, entries, fn); err != nil {
			return err
		}
		if err := page(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		after = entries[len(entries)-1].Seq
	}
}

var errPageDone = errors.New("replay: page done")

// bodies fetches the records of entries from the log, in order: with one ordered read of
// the page's span of the stream when the page is dense, else one by one.
func (x Exporter) bodies(ctx context.Context, q ExportQuery, entries []projections.HistoryEntry, fn func(projections.HistoryEntry, events.Record) error) error {
	first, last := entries[0].Seq, entries[len(entries)-1].Seq
	if last-first+1 > 4*uint64(len(entries)) {
		for _, e := range entries {
			r, err := x.Log.Get(ctx, e.Seq)
			if err != nil {
				return fmt.Errorf("replay: export: event %d: %w", e.Seq, err)
			}
			if err := fn(e, r); err != nil {
				return err
			}
		}
		return nil
	}
	// Every subject: the span holds at most 4 records per entry, and the server reads
	// the whole stream faster than it matches a wildcard filter against each record.
	const filter = ">"
	i := 0
	err := x.Log.Read(ctx, filter, first, func(r events.Record) error {
		if i < len(entries) && entries[i].Seq < r.Seq {
			return fmt.Errorf("replay: export: the log has no event %d of %s", entries[i].Seq, filter)
		}
		if i < len(entries) && entries[i].Seq == r.Seq {
			if err := fn(entries[i], r); err != nil {
				return err
			}
			i++
		}
		if i == len(entries) {
			return errPageDone
		}
		return nil
	})
	if err != nil && !errors.Is(err, errPageDone) {
		return fmt.Errorf("replay: export: %w", err)
	}
	if i < len(entries) {
		return fmt.Errorf("replay: export: the log has no event %d of %s", entries[i].Seq, filter)
	}
	return nil
}

// scanLast returns how many events q selects and the sequence of the last, from the index.
func (x Exporter) scanLast(q ExportQuery) (int, uint64, error) {
	n, last, after := 0, uint64(0), q.After
	if q.Filter.MaxSeq == 0 {
		return 0, 0, nil
	}
	for {
		entries, err := x.Store.Audit(q.Workspace, q.Filter, after, x.pageSize())
		if err != nil || len(entries) == 0 {
			return n, last, err
		}
		n += len(entries)
		last = entries[len(entries)-1].Seq
		after = last
	}
}

// checkpointFor returns a checkpoint covering at least last leaves and the bound of the
// export: q.Filter.MaxSeq, lowered to the checkpoint's tree size when it cannot seal.
func (x Exporter) checkpointFor(ctx context.Context, q ExportQuery, last uint64) (events.CheckpointState, uint64, error) {
	cp, err := x.Store.SealedCheckpoint(ctx)
	if err != nil {
		return cp, 0, err
	}
	need := max(last, 1)
	if cp.TreeSize >= need {
		return cp, q.Filter.MaxSeq, nil
	}
	if x.Seal != nil {
		cp, err = x.Seal(ctx, need)
		if err != nil {
			return cp, 0, fmt.Errorf("replay: export: seal a checkpoint: %w", err)
		}
		if cp.TreeSize < need {
			return cp, 0, fmt.Errorf("replay: export: sealed a checkpoint of %d leaves, need %d", cp.TreeSize, need)
		}
		return cp, q.Filter.MaxSeq, nil
	}
	if !cp.Exists() {
		return cp, 0, ErrNoCheckpoint
	}
	return cp, min(q.Filter.MaxSeq, cp.TreeSize), nil
}

// ExportLine is one event line of a JSON Lines export.
type ExportLine struct {
	Sequence  uint64          `json:"sequence"`
	LeafIndex int64           `json:"leaf_index"`
	Event     json.RawMessage `json:"event"`
	Proof     []string        `json:"proof"`
}

// ExportCheckpoint is the checkpoint of the final line of a JSON Lines export.
type ExportCheckpoint struct {
	TreeSize uint64 `json:"tree_size"`
	RootHash string `json:"root_hash"`
	Note     string `json:"note"`
}

// ExportTrailer is the final line of a JSON Lines export. Checkpoint and Statement are
// signed notes; Workspace, Events and Filter repeat, unsigned, what the statement says
// and how many event lines there are.
type ExportTrailer struct {
	Checkpoint *ExportCheckpoint `json:"checkpoint"`
	// Statement is the signed note of the export's ExportStatement; empty when the
	// exporter could not sign (then completeness is not proven).
	Statement string        `json:"statement,omitempty"`
	Workspace string        `json:"workspace,omitempty"`
	Events    int           `json:"events"`
	Filter    *ExportFilter `json:"filter,omitempty"`
}

// ExportFilter records the filters of an export. An export filtered by type or actor
// leaves out events of the aggregates it holds, so their prevhash chains have gaps by
// design.
type ExportFilter struct {
	Key   string   `json:"key,omitempty"`
	Actor string   `json:"actor,omitempty"`
	Types []string `json:"type,omitempty"`
	Since string   `json:"since,omitempty"`
	Until string   `json:"until,omitempty"`
	After uint64   `json:"after,omitempty"`
}

func exportFilter(q ExportQuery) *ExportFilter {
	f := &ExportFilter{Key: q.Filter.KeyID, Actor: q.Filter.Actor, After: q.After}
	for _, t := range q.Filter.Types {
		f.Types = append(f.Types, string(t))
	}
	if !q.Filter.Since.IsZero() {
		f.Since = q.Filter.Since.Format(time.RFC3339Nano)
	}
	if !q.Filter.Until.IsZero() {
		f.Until = q.Filter.Until.Format(time.RFC3339Nano)
	}
	if f.Key == "" && f.Actor == "" && f.Types == nil && f.Since == "" && f.Until == "" && f.After == 0 {
		return nil
	}
	return f
}

func (x Exporter) exportJSONL(ctx context.Context, w *flushWriter, q ExportQuery) (ExportStats, error) {
	_, last, err := x.scanLast(q)
	if err != nil {
		return ExportStats{}, err
	}
	cp, bound, err := x.checkpointFor(ctx, q, last)
	if err != nil {
		return ExportStats{}, err
	}
	// Every event selected is within the checkpoint's tree: the export is a snapshot as of
	// the smaller of the two.
	q.Filter.MaxSeq = min(bound, cp.TreeSize)
	stmt, err := x.statement(ctx, q, cp)
	if err != nil {
		return ExportStats{}, err
	}
	stats := ExportStats{Checkpoint: cp}
	prover, err := x.Store.NewProver(int64(cp.TreeSize))
	if err != nil {
		return stats, err
	}
	defer prover.Close()
	var line []byte
	err = x.each(ctx, q, func(e projections.HistoryEntry, r events.Record) error {
		if bytes.IndexByte(r.Data, '\n') >= 0 || !json.Valid(r.Data) {
			return fmt.Errorf("replay: export: event %d is not one line of JSON", r.Seq)
		}
		leaf := int64(r.Seq) - 1
		proof, err := prover.ProveRecord(leaf)
		if err != nil {
			return err
		}
		line = append(line[:0], `{"sequence":`...)
		line = strconv.AppendUint(line, r.Seq, 10)
		line = append(line, `,"leaf_index":`...)
		line = strconv.AppendInt(line, leaf, 10)
		line = append(line, `,"event":`...)
		line = append(line, r.Data...)
		line = append(line, `,"proof":[`...)
		for i, h := range proof {
			if i > 0 {
				line = append(line, ',')
			}
			line = append(line, '"')
			line = base64.StdEncoding.AppendEncode(line, h[:])
			line = append(line, '"')
		}
		line = append(line, "]}\n"...)
		stats.Events++
		stats.LastSeq = r.Seq
		_, err = w.bw.Write(line)
		return err
	}, func() error {
		if err := prover.Release(); err != nil {
			return err
		}
		return w.flush()
	})
	if err != nil {
		return stats, err
	}
	trailer := ExportTrailer{
		Checkpoint: &ExportCheckpoint{TreeSize: cp.TreeSize, RootHash: cp.RootHash, Note: cp.Note},
		Statement:  stmt, Workspace: string(q.Workspace), Events: stats.Events, Filter: exportFilter(q),
	}
	b, err := json.Marshal(trailer)
	if err != nil {
		return stats, err
	}
	_, err = w.bw.Write(append(b, '\n'))
	return stats, err
}

func (x Exporter) exportCSV(ctx context.Context, w *flushWriter, q ExportQuery) (ExportStats, error) {
	cw := csv.NewWriter(w.bw)
	if err := cw.Write(CSVHeader); err != nil {
		return ExportStats{}, err
	}
	var stats ExportStats
	row := make([]string, len(CSVHeader))
	err := x.each(ctx, q, func(e projections.HistoryEntry, r events.Record) error {
		d, err := events.DecodeRecord(r)
		if err != nil {
			return err
		}
		before, after, err := d.Payload.Change().JSON()
		if err != nil {
			return fmt.Errorf("replay: export: event %d: %w", r.Seq, err)
		}
		ev := d.Event
		row[0] = ev.Time.Format(time.RFC3339Nano)
		row[1], row[2], row[3] = ev.Actor, ev.ActorIP, ev.Subject
		row[4] = ev.Type.Name()
		row[5], row[6] = before, after
		row[7], row[8], row[9] = strconv.FormatUint(r.Seq, 10), ev.ID, csvSafe(ev.Reason)
		stats.Events++
		stats.LastSeq = r.Seq
		return cw.Write(row)
	}, func() error {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return err
		}
		return w.flush()
	})
	if err != nil {
		return stats, err
	}
	cw.Flush()
	return stats, cw.Error()
}

// csvSafe keeps a spreadsheet from running free text as a formula.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// StatementOrigin is the first line of the text of every export statement.
const StatementOrigin = "keyreg " + events.StreamName + " export"

// ExportStatement is what the exporter signs, at export time with the sealer's key, about
// one JSON Lines export, so that everything VerifyExport reports as proven is under a
// signature. Its text (FormatText) is
//
//	keyreg KEYREG export
//	checkpoint <tree size> <root hash, base64>
//	as-of <stream sequence>
//	workspace <ws> <size of its tree> <root hash of its tree, base64>
//	filter <the export's ExportFilter as JSON, or none>
//	key <id> <sequence of its last event> <events.Hash of that event>   (key exports only)
//
// checkpoint is the checkpoint the export's inclusion proofs lead to; as-of is the stream
// sequence the export is a snapshot of (at most the checkpoint's size); the workspace line
// gives the size and root of the workspace's own audit tree (projections.Store.WorkspaceTree)
// as of that sequence, so an unfiltered export must be exactly its leaves; the key line
// gives the key's last event as of that sequence (0 and "-" when it has none), so a key's
// export must end there.
type ExportStatement struct {
	TreeSize      uint64
	RootHash      tlog.Hash
	AsOf          uint64
	Workspace     string
	WorkspaceSize int64
	WorkspaceRoot tlog.Hash
	Filter        *ExportFilter // nil: none
	Key           *KeyHead      // set when Filter.Key is
}

// KeyHead is a key's last event as of an export's snapshot.
type KeyHead struct {
	ID   string `json:"id"`
	Seq  uint64 `json:"last_sequence"` // 0 when the key has no event
	Hash string `json:"last_hash"`     // events.Hash of its stored bytes; "-" when none
}

// FormatText returns the statement's text, as signed.
func (s ExportStatement) FormatText() []byte {
	b := fmt.Appendf(nil, "%s\ncheckpoint %d %s\nas-of %d\nworkspace %s %d %s\n", StatementOrigin,
		s.TreeSize, base64.StdEncoding.EncodeToString(s.RootHash[:]), s.AsOf,
		s.Workspace, s.WorkspaceSize, base64.StdEncoding.EncodeToString(s.WorkspaceRoot[:]))
	if s.Filter == nil {
		b = append(b, "filter none\n"...)
	} else {
		f, _ := json.Marshal(s.Filter)
		b = fmt.Appendf(b, "filter %s\n", f)
	}
	if s.Key != nil {
		b = fmt.Appendf(b, "key %s %d %s\n", s.Key.ID, s.Key.Seq, s.Key.Hash)
	}
	return b
}

// ParseStatement parses the text of an export statement, as FormatText writes it, and
// nothing else: text that FormatText would not write exactly is an error.
func ParseStatement(text []byte) (ExportStatement, error) {
	var s ExportStatement
	bad := func(what string) (ExportStatement, error) {
		return ExportStatement{}, fmt.Errorf("malformed export statement: %s", what)
	}
	lines := strings.Split(string(text), "\n")
	if len(lines) < 6 || lines[0] != StatementOrigin || lines[len(lines)-1] != "" {
		return bad("want " + StatementOrigin + " then checkpoint, as-of, workspace and filter lines")
	}
	var root, wsRoot string
	if _, err := fmt.Sscanf(lines[1], "checkpoint %d %s", &s.TreeSize, &root); err != nil {
		return bad("checkpoint line")
	}
	if _, err := fmt.Sscanf(lines[2], "as-of %d", &s.AsOf); err != nil {
		return bad("as-of line")
	}
	if _, err := fmt.Sscanf(lines[3], "workspace %s %d %s", &s.Workspace, &s.WorkspaceSize, &wsRoot); err != nil || s.WorkspaceSize < 0 {
		return bad("workspace line")
	}
	var err error
	if s.RootHash, err = events.ParseTreeHash(root); err != nil {
		return bad("checkpoint root")
	}
	if s.WorkspaceRoot, err = events.ParseTreeHash(wsRoot); err != nil {
		return bad("workspace root")
	}
	f, ok := strings.CutPrefix(lines[4], "filter ")
	switch {
	case !ok:
		return bad("filter line")
	case f != "none":
		dec := json.NewDecoder(strings.NewReader(f))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s.Filter); err != nil || s.Filter == nil {
			return bad("filter")
		}
	}
	rest := lines[5 : len(lines)-1]
	if s.Filter != nil && s.Filter.Key != "" {
		if len(rest) != 1 {
			return bad("no key line in a key's export")
		}
		s.Key = &KeyHead{}
		if _, err := fmt.Sscanf(rest[0], "key %s %d %s", &s.Key.ID, &s.Key.Seq, &s.Key.Hash); err != nil || s.Key.ID != s.Filter.Key {
			return bad("key line")
		}
	}
	if !bytes.Equal(s.FormatText(), text) {
		return bad("not in canonical form")
	}
	return s, nil
}

// statement returns the signed statement of the export of q (whose MaxSeq is the export's
// bound) with the proofs of checkpoint cp, or "" without Attest.
func (x Exporter) statement(ctx context.Context, q ExportQuery, cp events.CheckpointState) (string, error) {
	if x.Attest == nil {
		return "", nil
	}
	root, err := events.ParseTreeHash(cp.RootHash)
	if err != nil {
		return "", fmt.Errorf("replay: export: checkpoint: %w", err)
	}
	asOf := q.Filter.MaxSeq
	n, wsRoot, err := x.Store.WorkspaceTree(q.Workspace, asOf)
	if err != nil {
		return "", fmt.Errorf("replay: export: %w", err)
	}
	st := ExportStatement{TreeSize: cp.TreeSize, RootHash: root, AsOf: asOf, Workspace: string(q.Workspace),
		WorkspaceSize: n, WorkspaceRoot: wsRoot, Filter: exportFilter(q)}
	if id := q.Filter.KeyID; id != "" {
		_, last, err := x.scanLast(ExportQuery{Workspace: q.Workspace, Filter: projections.AuditFilter{KeyID: id, MaxSeq: asOf}})
		if err != nil {
			return "", err
		}
		st.Key = &KeyHead{ID: id, Seq: last, Hash: "-"}
		if last != 0 {
			r, err := x.Log.Get(ctx, last)
			if err != nil {
				return "", fmt.Errorf("replay: export: event %d: %w", last, err)
			}
			st.Key.Hash = events.Hash(r.Data)
		}
	}
	signed, err := x.Attest(st.FormatText())
	if err != nil {
		return "", fmt.Errorf("replay: export: sign the statement: %w", err)
	}
	return signed, nil
}
