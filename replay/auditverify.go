package replay

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

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
	// pubkey` prints them) of the sealers trusted, with no bounds; Keys and KeySet hold at
	// least one between them.
	Keys []string
	// KeySet are trusted keys with the part of the log each is vouched for (ParseKeySet):
	// the checkpoint and the statement must be signed by a key vouched for the
	// checkpoint's tree size.
	KeySet []TrustedKey
	// AllowGaps tolerates breaks of the prevhash chains, for exports filtered by event
	// type or actor, which leave out events of the aggregates they hold by design. The
	// breaks are counted in the summary instead.
	AllowGaps bool
}

// VerifySummary describes a verified (or partly verified) export. Every field is checked,
// or read from a signed note.
type VerifySummary struct {
	Events     int    `json:"events"`     // event lines checked
	Aggregates int    `json:"aggregates"` // distinct aggregates among them
	FirstSeq   uint64 `json:"first_sequence"`
	LastSeq    uint64 `json:"last_sequence"`
	TreeSize   uint64 `json:"tree_size"` // of the checkpoint
	RootHash   string `json:"root_hash"` // of the checkpoint, base64
	Signer     string `json:"signer"`    // "<name>+<key hash>" of the key that signed the checkpoint
	Workspace  string `json:"workspace"` // as the signed statement says (else the trailer)
	// AsOf is the stream sequence the export is a snapshot of, and WorkspaceEvents the
	// number of events the workspace had then, as the signed statement says (0 without
	// one).
	AsOf            uint64 `json:"as_of_sequence,omitempty"`
	WorkspaceEvents int64  `json:"workspace_events,omitempty"`
	// Key is the key's last event as of AsOf, as the signed statement of a key's export
	// says.
	Key *KeyHead `json:"key,omitempty"`
	// Complete reports that the export is proven complete under the signature: an
	// unfiltered export is exactly the events of the signed workspace tree, or a key's
	// export is the key's whole chain, from its first event to the last one the signed
	// statement names. False on any failure.
	Complete bool `json:"complete"`
	// Proves says in a sentence what the export was checked to be; NotProven what it
	// cannot show (empty when Complete).
	Proves    string `json:"proves"`
	NotProven string `json:"not_proven,omitempty"`
	// ChainBreaks counts the breaks tolerated with AllowGaps.
	ChainBreaks int           `json:"chain_gaps"`
	Filter      *ExportFilter `json:"filter"` // the filters the export says it applied
}

// VerifyExport checks a JSON Lines audit export (FormatJSONL) offline, with only the
// sealers' public keys: the checkpoint's signature and that it signs the tree size and
// root it states; the export statement's signature, and that it names that checkpoint,
// the export's workspace and filter; every event's inclusion proof in the checkpoint's
// tree (so no event was changed, and each sits at its stream sequence); sequences strictly
// increasing and within the statement's snapshot; each event of the export's workspace and
// matching its filter; each aggregate's prevhash chain between its consecutive exported
// events (a break means an event of that aggregate is missing between them, or was
// changed); for an unfiltered export or a key's export, that each aggregate's first
// exported event is its first event (empty prevhash); and the event count the trailer
// states.
//
// Completeness (Complete): an unfiltered export must be exactly the leaves of the signed
// workspace tree (its size and the root recomputed from the exported events), so a
// missing, extra, reordered or changed event anywhere fails; a key's export must end
// with the key's last event the statement names. Other filters prove the events
// genuine, not the selection complete (see Proves and NotProven).
//
// The trailer is on the last line, so r is read twice: directly when it is an
// io.ReadSeeker (a file), else through a temporary file. Memory stays constant in the
// number of events, and grows with the number of aggregates.
//
// It returns the summary and nil, or the summary so far (Complete false) and the first
// failure: a *VerifyError (wrapping ErrExportInvalid), or an error reading r.
func VerifyExport(r io.Reader, opts VerifyOptions) (sum VerifySummary, err error) {
	defer func() {
		if err != nil {
			sum.Complete = false
			sum.Proves = ""
			sum.NotProven = "the export failed verification: nothing is proven"
		}
	}()
	set := slices.Clone(opts.KeySet)
	for _, k := range opts.Keys {
		set = append(set, TrustedKey{VerifierKey: k})
	}
	verifiers, err := parseVerifiers(set)
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
	tr, size, root, err := checkTrailer(trailerLine, verifiers, set)
	if err != nil {
		if ve, ok := err.(*VerifyError); ok {
			ve.Line = lastNo
		}
		return sum, err
	}
	sum.TreeSize, sum.RootHash, sum.Workspace, sum.Filter = size, tr.Checkpoint.RootHash, tr.Workspace, tr.Filter
	sum.Signer = tr.signer
	if tr.stmt != nil {
		sum.AsOf, sum.WorkspaceEvents, sum.Key = tr.stmt.AsOf, tr.stmt.WorkspaceSize, tr.stmt.Key
	}
	// Pass 2: the events.
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return sum, fmt.Errorf("replay: verify: %w", err)
	}
	v := &verifier{sum: &sum, size: int64(size), root: root, opts: opts, stmt: tr.stmt, last: map[string]aggLast{},
		fromStart: tr.Filter == nil || tr.Filter.keyOnly()}
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
	if err := v.complete(); err != nil {
		return sum, &VerifyError{Line: lastNo, Reason: err.Error()}
	}
	return sum, nil
}

// keyOnly reports whether the filter selects a key's events and nothing else.
func (f *ExportFilter) keyOnly() bool {
	return f != nil && f.Key != "" && f.Actor == "" && len(f.Types) == 0 && f.Since == "" && f.Until == "" && f.After == 0
}

// complete checks, after the last event line, what the signed statement says the export
// holds, and sets Complete, Proves and NotProven.
func (v *verifier) complete() error {
	sum, st := v.sum, v.stmt
	genuine := fmt.Sprintf("these %d events are in the signed log (checkpoint of %d events) and unaltered", sum.Events, sum.TreeSize)
	switch {
	case st == nil:
		sum.Proves = genuine
		sum.NotProven = "completeness: the export carries no signed statement of what it holds (it was made by a node that cannot sign, or before keyreg signed them)"
	case sum.Filter == nil:
		have := int64(sum.Events)
		switch {
		case have < st.WorkspaceSize:
			return fmt.Errorf("%d of the workspace's events are missing: the signed statement says workspace %s had %d events as of sequence %d, the export holds %d",
				st.WorkspaceSize-have, st.Workspace, st.WorkspaceSize, st.AsOf, have)
		case have > st.WorkspaceSize:
			return fmt.Errorf("%d events too many: the signed statement says workspace %s had %d events as of sequence %d, the export holds %d",
				have-st.WorkspaceSize, st.Workspace, st.WorkspaceSize, st.AsOf, have)
		}
		if got := v.wsTree.root(); got != st.WorkspaceRoot {
			return fmt.Errorf("the exported events do not hash to the signed root of workspace %s's tree (%d events as of sequence %d): an event was replaced by another or the events were reordered",
				st.Workspace, st.WorkspaceSize, st.AsOf)
		}
		sum.Complete = true
		sum.Proves = fmt.Sprintf("complete: these are all %d events of workspace %s up to stream sequence %d, in stream order, unaltered, and nothing else (signed workspace tree and checkpoint of %d events)",
			sum.Events, st.Workspace, st.AsOf, sum.TreeSize)
	case sum.Filter.keyOnly():
		k := st.Key
		if k.Seq == 0 {
			if sum.Events != 0 {
				return fmt.Errorf("the signed statement says key %s had no event as of sequence %d, the export holds %d", k.ID, st.AsOf, sum.Events)
			}
		} else {
			last, seen := v.last[st.Workspace+"/key/"+k.ID]
			switch {
			case !seen:
				return fmt.Errorf("the key's events are missing: the signed statement says key %s's last event as of sequence %d is sequence %d, the export holds none",
					k.ID, st.AsOf, k.Seq)
			case last.seq < k.Seq:
				return fmt.Errorf("the key's newest events are missing: the signed statement says key %s's last event as of sequence %d is sequence %d, the export ends at sequence %d",
					k.ID, st.AsOf, k.Seq, last.seq)
			case last.seq != k.Seq || last.hash != k.Hash:
				return fmt.Errorf("the key's last exported event (sequence %d) is not the last event the signed statement names (sequence %d, hash %s)",
					last.seq, k.Seq, k.Hash)
			}
		}
		sum.Complete = true
		sum.Proves = fmt.Sprintf("complete: these are all %d events of key %s up to stream sequence %d, its unbroken chain from its first event to its last (sequence %d), unaltered",
			sum.Events, k.ID, st.AsOf, k.Seq)
	default:
		f, _ := json.Marshal(sum.Filter)
		sum.Proves = genuine + fmt.Sprintf(", of workspace %s up to stream sequence %d, and each matches the filter %s", st.Workspace, st.AsOf, f)
		sum.NotProven = "completeness of the filtered selection: an event matching the filter could have been left out"
	}
	return nil
}

func parseVerifiers(keys []TrustedKey) (note.Verifiers, error) {
	if len(keys) == 0 {
		return nil, errors.New("replay: verify: no verifier key given")
	}
	var list []note.Verifier
	seen := map[string]bool{}
	for _, k := range keys {
		vkey := strings.TrimSpace(k.VerifierKey)
		if seen[vkey] {
			continue // a key given twice (a file and a flag) is one key, not an ambiguous pair
		}
		seen[vkey] = true
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("replay: verify: verifier key %q: %w", vkey, err)
		}
		list = append(list, v)
	}
	return note.VerifierList(list...), nil
}

// checkVouched checks that a signature of a note (what names it) is by a key that set
// vouches for size: a checkpoint's tree size, or an export statement's snapshot sequence
// (statement true; a statement of a snapshot that holds the key's retirement was surely
// signed after it).
func checkVouched(n *note.Note, what string, size uint64, set []TrustedKey, statement bool) error {
	var why []string
	at := "tree size"
	if statement {
		at = "snapshot sequence"
	}
	for _, sig := range n.Sigs {
		name := fmt.Sprintf("%s+%08x", sig.Name, sig.Hash)
		for _, k := range set {
			if !strings.HasPrefix(strings.TrimSpace(k.VerifierKey), name+"+") {
				continue
			}
			if k.vouches(size) {
				return nil
			}
			why = append(why, fmt.Sprintf("%s was retired at stream sequence %d, and the %s's %s %d is at or after it", name, k.RetiredSeq, what, at, size))
		}
	}
	if len(why) == 0 {
		return nil // bare keys: no bounds
	}
	return &VerifyError{Reason: "the " + what + " is signed by a key the key set does not vouch for at that point of the log: " + strings.Join(why, "; ")}
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
	stmt   *ExportStatement // nil when the export has none
}

// openNote checks a signed note of the trailer; what names it in messages.
func openNote(msg, what string, verifiers note.Verifiers) (*note.Note, error) {
	n, err := note.Open([]byte(msg), verifiers)
	if err != nil {
		var unknown *note.UnverifiedNoteError
		var bad *note.InvalidSignatureError
		switch {
		case errors.As(err, &unknown):
			return nil, &VerifyError{Reason: "the " + what + " is not signed by a trusted key (" + signersOf(msg) + "): " + err.Error()}
		case errors.As(err, &bad):
			return nil, &VerifyError{Reason: "the " + what + "'s signature is invalid: its text was changed after signing"}
		}
		return nil, &VerifyError{Reason: "the " + what + " note does not verify: " + err.Error()}
	}
	return n, nil
}

// checkTrailer checks the checkpoint's signature and that it signs the size and root the
// line states, and the statement's signature and that it agrees with the trailer.
func checkTrailer(line []byte, verifiers note.Verifiers, set []TrustedKey) (trailer, uint64, tlog.Hash, error) {
	var tr trailer
	if err := json.Unmarshal(line, &tr.ExportTrailer); err != nil || tr.Checkpoint == nil {
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the last line is not the export's checkpoint: the export was cut short"}
	}
	cp := tr.Checkpoint
	n, err := openNote(cp.Note, "checkpoint", verifiers)
	if err != nil {
		return tr, 0, tlog.Hash{}, err
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
	if err := checkVouched(n, "checkpoint", size, set, false); err != nil {
		return tr, 0, tlog.Hash{}, err
	}
	sig := n.Sigs[0]
	tr.signer = fmt.Sprintf("%s+%08x", sig.Name, sig.Hash)
	if tr.Statement == "" {
		return tr, size, root, nil
	}
	sn, err := openNote(tr.Statement, "export statement", verifiers)
	if err != nil {
		return tr, 0, tlog.Hash{}, err
	}
	st, err := ParseStatement([]byte(sn.Text))
	if err != nil {
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: "the signed export statement is " + strings.TrimPrefix(err.Error(), "malformed export statement: ")}
	}
	if err := checkVouched(sn, "export statement", st.AsOf, set, true); err != nil {
		return tr, 0, tlog.Hash{}, err
	}
	stFilter, _ := json.Marshal(st.Filter)
	trFilter, _ := json.Marshal(tr.Filter)
	switch {
	case st.TreeSize != size || st.RootHash != root:
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: fmt.Sprintf("the signed export statement names checkpoint %d %s, not the export's checkpoint %d %s: they are of different exports",
			st.TreeSize, base64.StdEncoding.EncodeToString(st.RootHash[:]), size, cp.RootHash)}
	case st.AsOf > size:
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: fmt.Sprintf("the signed export statement is as of sequence %d, beyond its checkpoint of %d events", st.AsOf, size)}
	case st.Workspace != tr.Workspace:
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: fmt.Sprintf("the trailer says workspace %q but the signed export statement says %q", tr.Workspace, st.Workspace)}
	case !bytes.Equal(stFilter, trFilter):
		return tr, 0, tlog.Hash{}, &VerifyError{Reason: fmt.Sprintf("the trailer says filter %s but the signed export statement says %s", trFilter, stFilter)}
	}
	tr.stmt = &st
	return tr, size, root, nil
}

// signersOf lists the keys of a note's signature lines, as "<name>+<key hash>" (the start
// of the verifier key, "keyreg+1a2b3c4d"), for a failure message.
func signersOf(msg string) string {
	var names []string
	_, sigs, _ := strings.Cut(msg, "\n\n")
	for _, l := range strings.Split(sigs, "\n") {
		if rest, ok := strings.CutPrefix(l, "— "); ok {
			name, b64, _ := strings.Cut(rest, " ")
			if b, err := base64.StdEncoding.DecodeString(b64); err == nil && len(b) >= 4 {
				name += fmt.Sprintf("+%02x%02x%02x%02x", b[0], b[1], b[2], b[3])
			}
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
	stmt *ExportStatement // nil when the export has none
	// fromStart: each aggregate's first exported event must be its first event.
	fromStart bool
	last      map[string]aggLast // "<ws>/<aggregate>/<id>"
	seq       uint64             // of the line being checked
	prev      uint64             // sequence of the previous event line
	wsTree    treeBuilder        // the tree of the exported events, for an unfiltered export
}

// treeBuilder computes the RFC 6962 root of a sequence of leaves as they come, in memory
// logarithmic in their number: a stack of the roots of complete subtrees, of decreasing
// sizes.
type treeBuilder struct {
	stack []subtree
}

type subtree struct {
	size int64
	hash tlog.Hash
}

func (b *treeBuilder) add(leaf tlog.Hash) {
	b.stack = append(b.stack, subtree{1, leaf})
	for n := len(b.stack); n >= 2 && b.stack[n-2].size == b.stack[n-1].size; n = len(b.stack) {
		b.stack[n-2] = subtree{2 * b.stack[n-2].size, tlog.NodeHash(b.stack[n-2].hash, b.stack[n-1].hash)}
		b.stack = b.stack[:n-1]
	}
}

// root returns the root of the leaves added so far (that of the empty tree for none).
func (b *treeBuilder) root() tlog.Hash {
	if len(b.stack) == 0 {
		h, _ := tlog.TreeHash(0, nil)
		return h
	}
	h := b.stack[len(b.stack)-1].hash
	for i := len(b.stack) - 2; i >= 0; i-- {
		h = tlog.NodeHash(b.stack[i].hash, h)
	}
	return h
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
	if v.stmt != nil && l.Sequence > v.stmt.AsOf {
		return fmt.Errorf("the event is after sequence %d, which the signed export statement says the export is a snapshot of", v.stmt.AsOf)
	}
	leaf := tlog.RecordHash(l.Event)
	if err := tlog.CheckRecord(proof, v.size, v.root, l.LeafIndex, leaf); err != nil {
		return fmt.Errorf("the inclusion proof does not lead to the checkpoint's root: the event was changed, or it is not the stream's message %d", l.Sequence)
	}
	e, err := events.Decode(l.Event)
	if err != nil {
		return err
	}
	if v.sum.Workspace != "" && string(e.Workspace()) != v.sum.Workspace {
		return fmt.Errorf("event %s is of workspace %q, in an export of %q", e.ID, e.Workspace(), v.sum.Workspace)
	}
	if err := v.sum.Filter.check(e, l.Sequence); err != nil {
		return err
	}
	agg := string(e.Workspace()) + "/" + e.Subject
	prev, seen := v.last[agg]
	switch {
	case seen && e.PrevHash != prev.hash:
		if !v.opts.AllowGaps || v.fromStart && v.stmt != nil {
			return fmt.Errorf("the prevhash of event %s of %s does not match its previous exported event (sequence %d): an event of %s is missing in between, or was changed",
				e.ID, e.Subject, prev.seq, e.Subject)
		}
		v.sum.ChainBreaks++
	case !seen && v.fromStart && e.PrevHash != "":
		return fmt.Errorf("event %s is the first exported event of %s but has a prevhash: the earlier events of %s are missing from an export that starts at its first event",
			e.ID, e.Subject, e.Subject)
	}
	if v.sum.Filter == nil {
		v.wsTree.add(leaf)
	}
	v.last[agg] = aggLast{seq: l.Sequence, hash: events.Hash(l.Event)}
	if v.sum.FirstSeq == 0 {
		v.sum.FirstSeq = l.Sequence
	}
	v.sum.LastSeq = l.Sequence
	v.sum.Events++
	return nil
}

// check returns why event e (at stream sequence seq) does not belong in an export with
// filter f, or nil (always for a nil f).
func (f *ExportFilter) check(e events.Event, seq uint64) error {
	if f == nil {
		return nil
	}
	mismatch := func(what string) error {
		return fmt.Errorf("event %s (%s of %s) does not match the export's filter: %s", e.ID, e.Type, e.Subject, what)
	}
	switch {
	case f.Key != "" && e.Subject != "key/"+f.Key:
		return mismatch("not of key " + f.Key)
	case f.Actor != "" && e.Actor != f.Actor:
		return mismatch("not caused by " + f.Actor)
	case len(f.Types) > 0 && !slices.Contains(f.Types, string(e.Type)):
		return mismatch("not of the types " + strings.Join(f.Types, ", "))
	case f.After != 0 && seq <= f.After:
		return mismatch(fmt.Sprintf("not after sequence %d", f.After))
	}
	for _, b := range []struct {
		name, at string
		out      func(time.Time) bool
	}{{"since", f.Since, e.Time.Before}, {"until", f.Until, e.Time.After}} {
		if b.at == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, b.at)
		if err != nil {
			return fmt.Errorf("the export's filter has %s %q, not an RFC 3339 time", b.name, b.at)
		}
		if b.out(t) {
			return mismatch(fmt.Sprintf("its time %s is not %s %s", e.Time.Format(time.RFC3339Nano), b.name, b.at))
		}
	}
	return nil
}
