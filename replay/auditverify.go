package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/keyreg/keyreg/events"
)

// ErrExportInvalid is wrapped by every *VerifyError: the export failed a check.
var ErrExportInvalid = errors.New("replay: audit export does not verify")

// VerifyError is the first check an audit export failed: on which line (from 1), for the
// event with which sequence (0 when not about an event), and why.
type VerifyError struct {
	Line   int
	Seq    uint64
	Reason string
}

func (e *VerifyError) Error() string {
	if e.Seq != 0 {
		return fmt.Sprintf("line %d (sequence %d): %s", e.Line, e.Seq, e.Reason)
	}
	if e.Line != 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
	}
	return e.Reason
}

// Unwrap returns ErrExportInvalid.
func (e *VerifyError) Unwrap() error { return ErrExportInvalid }

// VerifyOptions say whom to trust and what to tolerate.
type VerifyOptions struct {
	// Keys are the verifier keys (golang.org/x/mod/sumdb/note format, as `keyreg audit
	// pubkey` prints them) of the sealers trusted; at least one.
	Keys []string
	// AllowGaps tolerates breaks of the prevhash chains, for exports filtered by event
	// type or actor, which leave out events of the aggregates they hold by design. The
	// breaks are counted in the summary instead.
	AllowGaps bool
}

// VerifySummary describes a verified (or partly verified) export.
type VerifySummary struct {
	Events     int    `json:"events"`     // event lines checked
	Aggregates int    `json:"aggregates"` // distinct aggregates among them
	FirstSeq   uint64 `json:"first_sequence"`
	LastSeq    uint64 `json:"last_sequence"`
	TreeSize   uint64 `json:"tree_size"` // of the checkpoint
	RootHash   string `json:"root_hash"` // of the checkpoint, base64
	Signer     string `json:"signer"`    // "<name>+<key hash>" of the key that signed the checkpoint
	Workspace  string `json:"workspace"` // as the export says
	// Complete reports that the export says it is unfiltered, and so every aggregate's
	// first exported event was checked to be its first event (empty prevhash).
	Complete bool `json:"complete"`
	// ChainBreaks counts the breaks tolerated with AllowGaps.
	ChainBreaks int           `json:"chain_gaps"`
	Filter      *ExportFilter `json:"filter"` // the filters the export says it applied
}

// VerifyExport checks a JSON Lines audit export (FormatJSONL) offline, with only the
// sealers' public keys: the checkpoint's signature and that it signs the tree size and
// root it states; every event's inclusion proof in that tree (so no event was changed,
// and each sits at its stream sequence); sequences strictly increasing; each aggregate's
// prevhash chain between its consecutive exported events (a break means an event of that
// aggregate is missing between them, or was changed); for an unfiltered export, that each
// aggregate's first exported event is its first event; and the event count the export
// states.
//
// The checkpoint is on the last line, so r is read twice: directly when it is an
// io.ReadSeeker (a file), else through a temporary file. Memory stays constant in the
// number of events, and grows with the number of aggregates.
//
// It returns the summary and nil, or the summary so far and the first failure: a
// *VerifyError (wrapping ErrExportInvalid), or an error reading r.
func VerifyExport(r io.Reader, opts VerifyOptions) (VerifySummary, error) {
	var sum VerifySummary
	verifiers, err := parseVerifiers(opts.Keys)
	if err != nil {
		return sum, err
	}
	rs, ok := r.(io.ReadSeeker)
	var start int64
	if ok {
		start, err = rs.Seek(0, io.SeekCurrent)
		ok = err == nil // a pipe is an *os.File that cannot seek
	}
	if !ok {
		f, err := os.CreateTemp("", "keyreg-audit-*.jsonl")
		if err != nil {
			return sum, fmt.Errorf("replay: verify: %w", err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := io.Copy(f, r); err != nil {
			return sum, fmt.Errorf("replay: verify: read export: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return sum, fmt.Errorf("replay: verify: %w", err)
		}
		rs, start = f, 0
	}
	// Pass 1: the trailer.
	trailerLine, lastNo, err := lastLine(rs)
	if err != nil {
		return sum, err
	}
	if trailerLine == nil {
		return sum, &VerifyError{Reason: "the export is empty: no checkpoint line"}
	}
	tr, size, root, err := checkTrailer(trailerLine, verifiers)
	if err != nil {
		if ve, ok := err.(*VerifyError); ok {
			ve.Line = lastNo
		}
		return sum, err
	}
	sum.TreeSize, sum.RootHash, sum.Workspace, sum.Filter = size, tr.Checkpoint.RootHash, tr.Workspace, tr.Filter
	sum.Signer = tr.signer
	sum.Complete = tr.Filter == nil
	// Pass 2: the events.
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return sum, fmt.Errorf("replay: verify: %w", err)
	}
	v := &verifier{sum: &sum, size: int64(size), root: root, opts: opts, last: map[string]aggLast{}}
	br := bufio.NewReaderSize(rs, 256<<10)
	for no := 1; no < lastNo; no++ {
		line, err := readLine(br)
		if err != nil {
			return sum, fmt.Errorf("replay: verify: line %d: %w", no, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if err := v.event(line); err != nil {
			return sum, &VerifyError{Line: no, Seq: v.seq, Reason: err.Error()}
		}
	}
	sum.Aggregates = len(v.last)
	if tr.Events != sum.Events {
		return sum, &VerifyError{Line: lastNo, Reason: fmt.Sprintf("the export says it holds %d events, but it holds %d: it was cut or padded", tr.Events, sum.Events)}
	}
	return sum, nil
}

func parseVerifiers(keys []string) (note.Verifiers, error) {
	if len(keys) == 0 {
		return nil, errors.New("replay: verify: no verifier key given")
	}
	var list []note.Verifier
	for _, k := range keys {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("replay: verify: verifier key %q: %w", k, err)
		}
		list = append(list, v)
	}
	return note.VerifierList(list...), nil
}

// readLine returns the next line without its newline, whatever its length.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadBytes('\n')
	if err == io.EOF && len(line) > 0 {
		err = nil
	}
	return bytes.TrimSuffix(line, []byte("\n")), err
}

// lastLine returns the last non-blank line of r and its number (from 1).
func lastLine(r io.Reader) ([]byte, int, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	var last []byte
	lastNo := 0
	for no := 1; ; no++ {
		line, err := readLine(br)
		if err == io.EOF {
			return last, lastNo, nil
		}
		if err != nil {
			return nil, 0, fmt.Errorf("replay: verify: read export: %w", err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			last, lastNo = append(last[:0], line...), no
		}
	}
}

type trailer struct {
	ExportTrailer
	signer string
}

// checkTrailer checks the checkpoint's signature and that it signs the size and root the
// line states.
func checkTrailer(line []byte, verifiers note.Verifiers) (trailer, uint64, tlog.Hash, error) {
	var tr trailer
	if err := json.Unmarshal(line, &tr.ExportTrailer); err != nil || tr.Checkpoint == nil {
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the last line is not the export's checkpoint: the export was cut short"}
	}
	cp := tr.Checkpoint
	n, err := note.Open([]byte(cp.Note), verifiers)
	if err != nil {
		var unknown *note.UnverifiedNoteError
		var bad *note.InvalidSignatureError
		switch {
		case errors.As(err, &unknown):
			return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the checkpoint is not signed by a trusted key (" + signersOf(cp.Note) + "): " + err.Error()}
		case errors.As(err, &bad):
			return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the checkpoint's signature is invalid: its text was changed after signing"}
		}
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the checkpoint note does not verify: " + err.Error()}
	}
	size, root, err := events.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the signed checkpoint is malformed: " + err.Error()}
	}
	if size != cp.TreeSize {
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: fmt.Sprintf("the checkpoint states tree size %d but its signed note says %d", cp.TreeSize, size)}
	}
	if h, err := events.ParseTreeHash(cp.RootHash); err != nil || h != root {
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: fmt.Sprintf("the checkpoint states root hash %q but its signed note says %s", cp.RootHash, root)}
	}
	sig := n.Sigs[0]
	tr.signer = fmt.Sprintf("%s+%08x", sig.Name, sig.Hash)
	return tr, size, root, nil
}

// signersOf lists the key names of a note's signature lines, for a failure message.
func signersOf(msg string) string {
	var names []string
	_, sigs, _ := strings.Cut(msg, "\n\n")
	for _, l := range strings.Split(sigs, "\n") {
		if name, ok := strings.CutPrefix(l, "— "); ok {
			name, _, _ = strings.Cut(name, " ")
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "no signature"
	}
	return "signed by " + strings.Join(names, ", ")
}

// aggLast is what the verifier remembers of an aggregate: its last exported event.
type aggLast struct {
	seq  uint64
	hash string // events.Hash of its stored bytes
}

type verifier struct {
	sum  *VerifySummary
	size int64
	root tlog.Hash
	opts VerifyOptions
	last map[string]aggLast // "<ws>/<aggregate>/<id>"
	seq  uint64             // of the line being checked
	prev uint64             // sequence of the previous event line
}

func (v *verifier) event(line []byte) error {
	v.seq = 0
	var l ExportLine
	if err := json.Unmarshal(line, &l); err != nil {
		return fmt.Errorf("not an event line of an export: %v", err)
	}
	if l.Event == nil {
		return errors.New("a line before the last has no event: a checkpoint line in the middle, or the export was spliced")
	}
	v.seq = l.Sequence
	switch {
	case l.Sequence == 0:
		return errors.New("no sequence")
	case l.Sequence <= v.prev:
		return fmt.Errorf("sequence %d comes after %d: events are out of order or repeated", l.Sequence, v.prev)
	case l.LeafIndex != int64(l.Sequence)-1:
		return fmt.Errorf("leaf index %d is not sequence - 1", l.LeafIndex)
	case l.LeafIndex >= v.size:
		return fmt.Errorf("the event is beyond the checkpoint's tree of %d leaves", v.size)
	}
	v.prev = l.Sequence
	proof := make(tlog.RecordProof, len(l.Proof))
	for i, s := range l.Proof {
		h, err := events.ParseTreeHash(s)
		if err != nil {
			return fmt.Errorf("proof hash %d: %v", i, err)
		}
		proof[i] = h
	}
	if err := tlog.CheckRecord(proof, v.size, v.root, l.LeafIndex, tlog.RecordHash(l.Event)); err != nil {
		return fmt.Errorf("the inclusion proof does not lead to the checkpoint's root: the event was changed, or it is not the stream's message %d", l.Sequence)
	}
	e, err := events.Decode(l.Event)
	if err != nil {
		return err
	}
	if v.sum.Workspace != "" && string(e.Workspace()) != v.sum.Workspace {
		return fmt.Errorf("event %s is of workspace %q, in an export of %q", e.ID, e.Workspace(), v.sum.Workspace)
	}
	agg := string(e.Workspace()) + "/" + e.Subject
	prev, seen := v.last[agg]
	switch {
	case seen && e.PrevHash != prev.hash:
		if !v.opts.AllowGaps {
			return fmt.Errorf("the prevhash of event %s of %s does not match its previous exported event (sequence %d): an event of %s is missing in between, or was changed",
				e.ID, e.Subject, prev.seq, e.Subject)
		}
		v.sum.ChainBreaks++
	case !seen && v.sum.Complete && e.PrevHash != "":
		return fmt.Errorf("event %s is the first exported event of %s but has a prevhash: the earlier events of %s are missing from an export that says it is unfiltered",
			e.ID, e.Subject, e.Subject)
	}
	v.last[agg] = aggLast{seq: l.Sequence, hash: events.Hash(l.Event)}
	if v.sum.FirstSeq == 0 {
		v.sum.FirstSeq = l.Sequence
	}
	v.sum.LastSeq = l.Sequence
	v.sum.Events++
	return nil
}
