package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands/sealer"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/replay"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("audit", "Read, export and verify the audit log",
		`Every change is an event of the log: who (actor: the key id of the caller), when, from
where (actor IP), why (--reason of the change) and what changed, before and after.

"audit log" reads a workspace's events with filters; "audit export" streams them as JSON
Lines with tamper evidence, or as CSV for a spreadsheet; "audit verify" checks a JSON Lines
export offline, with only the published key set ("audit pubkey": one key per node, as the
log records them; "audit signer retire" withdraws one): the signed checkpoint,
each event's inclusion proof in the Merkle tree over the whole stream, and each key's chain
of events. They need a key with keyreg.audit.read (or keyreg.admin).

The workspace is -w/--workspace, else $KEYREG_WORKSPACE.`,
		`  keyreg audit log -w acme --key 01JDX3... --since 2026-01-01T00:00:00Z
  keyreg audit export -w acme -o acme-audit.jsonl
  keyreg audit pubkey > keyreg.pub
  keyreg audit verify acme-audit.jsonl --pubkey @keyreg.pub`)
	ws := addWorkspaceFlag(cmd)
	cmd.AddCommand(newAuditLogCmd(g, ws), newAuditExportCmd(g, ws), newAuditVerifyCmd(g), newAuditPubkeyCmd(g), newAuditSignerCmd(g))
	return cmd
}

// auditFlags are the filters of audit log and audit export.
type auditFlags struct {
	key, actor   string
	types        []string
	since, until string
	after        uint64
}

func addAuditFlags(cmd *cobra.Command) *auditFlags {
	a := &auditFlags{}
	f := cmd.Flags()
	f.StringVar(&a.key, "key", "", "only the events of this key `ID`")
	f.StringVar(&a.actor, "actor", "", "only the events caused by this key `ID`")
	f.StringSliceVar(&a.types, "type", nil, "only events of this `TYPE`: keyreg.key.revoked.v1, key.revoked or revoked (repeatable)")
	f.StringVar(&a.since, "since", "", "only events at or after this `TIME` (RFC 3339)")
	f.StringVar(&a.until, "until", "", "only events at or before this `TIME` (RFC 3339)")
	f.Uint64Var(&a.after, "after", 0, "only events after this stream `SEQUENCE`")
	return a
}

func (a *auditFlags) query() (client.AuditQuery, error) {
	q := client.AuditQuery{Key: a.key, Actor: a.actor, Types: a.types, After: a.after}
	for _, t := range []struct {
		name, in string
		out      *time.Time
	}{{"--since", a.since, &q.Since}, {"--until", a.until, &q.Until}} {
		if t.in == "" {
			continue
		}
		v, err := time.Parse(time.RFC3339Nano, t.in)
		if err != nil {
			return q, usagef("%s %q: use RFC 3339, e.g. 2026-01-02T15:04:05Z", t.name, t.in)
		}
		*t.out = v
	}
	return q, nil
}

func newAuditLogCmd(g *globals, ws *string) *cobra.Command {
	var (
		limit int
		all   bool
	)
	cmd := &cobra.Command{
		Use:   "log [--key ID] [--actor ID] [--type T ...] [--since T] [--until T] [--after SEQ] [--limit N | --all]",
		Short: "Show a workspace's audit log: who changed what, when, from where, before and after",
		Long: `Shows a workspace's events, oldest first: sequence, time, the aggregate (key/<id>,
identifier/<id>, ...), the change, the actor and its address, the reason, and the values
before and after the change. --json prints the stored CloudEvents.`,
		Example: `  keyreg audit log -w acme
  keyreg audit log -w acme --key 01JDX3... --all
  keyreg audit log -w acme --type revoked --type allowlist_updated --since 2026-01-01T00:00:00Z
  keyreg audit log -w acme --actor 01JDX2... --json | jq '.events[].event.type'`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many events (1 to 1000)")
	cmd.Flags().BoolVar(&all, "all", false, "every matching event, page after page")
	af := addAuditFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		q, err := af.query()
		if err != nil {
			return err
		}
		q.Limit = limit
		if all {
			q.Limit = 1000
		}
		var page client.History
		var entries []wire.HistoryEntry
		for {
			page, err = g.client().AuditLog(cmd.Context(), wsID, q)
			if err != nil {
				return err
			}
			entries = append(entries, page.Events...)
			if !all || page.Next == 0 {
				break
			}
			q.After = page.Next
		}
		if all {
			page.Next = 0
		}
		if g.json {
			return g.printJSON(client.History{Events: entries, Next: page.Next})
		}
		if err := printAudit(g.stdout, entries); err != nil {
			return err
		}
		if page.Next != 0 {
			fmt.Fprintf(g.stdout, "\nMore: add --after %d (or --all)\n", page.Next)
		}
		return nil
	}
	return cmd
}

// printAudit prints events as a table, with the values before and after each change.
func printAudit(w io.Writer, entries []wire.HistoryEntry) error {
	t := newTable(w, "SEQ", "TIME", "AGGREGATE", "CHANGE", "ACTOR", "FROM", "REASON", "BEFORE", "AFTER")
	for _, e := range entries {
		ev, err := events.Decode(e.Event)
		if err != nil {
			return fmt.Errorf("audit: event %d: %w", e.Sequence, err)
		}
		before, after := "", string(ev.Data)
		if p, err := ev.Payload(); err == nil {
			if b, a, err := p.Change().JSON(); err == nil {
				before, after = b, a
			}
		}
		t.row(fmtVersion(e.Sequence), fmtTime(ev.Time), ev.Subject, ev.Type.Name(), firstNonEmpty(ev.Actor, "-"),
			firstNonEmpty(ev.ActorIP, "-"), firstNonEmpty(ev.Reason, "-"), firstNonEmpty(before, "-"), firstNonEmpty(after, "-"))
	}
	return t.flush()
}

func newAuditExportCmd(g *globals, ws *string) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "export [--format jsonl|csv] [-o FILE] [--key ID] [--actor ID] [--type T ...] [--since T] [--until T] [--after SEQ]",
		Short: "Export a workspace's audit log, verifiable offline (JSON Lines) or as CSV",
		Long: `Streams the selected events of a workspace, however many, to FILE (or stdout).

jsonl (default): one line per event, {"sequence","leaf_index","event","proof"}: the CloudEvent
as stored and its inclusion proof in the Merkle tree over the whole stream; then a last line
with the signed checkpoint of that tree and a signed statement of what the export holds
(the workspace's own Merkle tree, a key's last event), which proves an unfiltered or a
key's export complete. "keyreg audit verify" checks it offline.

csv: a header, then one row per change: time, actor, actor_ip, aggregate, change, before,
after, sequence, event_id, reason.

The export is a snapshot of the log when it starts. An export filtered by --type or --actor
leaves out events of the keys it shows, so verify it with --allow-gaps; the completeness of
an export filtered by --type, --actor, --since, --until or --after is not proven.`,
		Example: `  keyreg audit export -w acme -o acme-2026.jsonl --since 2026-01-01T00:00:00Z
  keyreg audit export -w acme --format csv --key 01JDX3... -o key-history.csv
  keyreg audit export -w acme | gzip > acme-audit.jsonl.gz`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl (with proofs, verifiable) or csv")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to `FILE` instead of stdout")
	af := addAuditFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		if format != client.ExportJSONL && format != client.ExportCSV {
			return usagef("--format %q: use jsonl or csv", format)
		}
		q, err := af.query()
		if err != nil {
			return err
		}
		if out == "" || out == "-" {
			_, err := g.client().AuditExport(cmd.Context(), wsID, q, format, g.stdout)
			return err
		}
		tmp := out + ".partial"
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		n, err := g.client().AuditExport(cmd.Context(), wsID, q, format, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp, out)
		}
		if err != nil {
			os.Remove(tmp)
			return err
		}
		fmt.Fprintf(g.stderr, "keyreg: exported the audit log of %s to %s (%d bytes)\n", wsID, out, n)
		return nil
	}
	return cmd
}

// verifyReport is the --json output of audit verify. Complete and Proves repeat the
// summary's: complete is false, and ok too, on any failure.
type verifyReport struct {
	OK        bool                 `json:"ok"`
	Complete  bool                 `json:"complete"`
	Proves    string               `json:"proves,omitempty"`
	NotProven string               `json:"not_proven,omitempty"`
	Error     string               `json:"error,omitempty"`
	Summary   replay.VerifySummary `json:"summary"`
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var (
		keys      []string
		allowGaps bool
	)
	cmd := &cobra.Command{
		Use:   "verify FILE --pubkey KEY|@KEYFILE [--allow-gaps]",
		Short: "Check a JSON Lines audit export offline: signatures, proofs, chains, completeness",
		Long: `Checks an export made by "keyreg audit export" with no server, only the published key set
(from "keyreg audit pubkey", obtained out of band: one key per node, as the log records
them). A signature by a key not in the set fails, naming the key:

  - the checkpoint's ed25519 signature, and that it signs the tree size and root it states;
  - the export statement's signature: what the export is (workspace, filter, the stream
    sequence it is a snapshot of, the size and root of the workspace's own Merkle tree,
    a key's last event), and that it names that checkpoint;
  - every event's inclusion proof in that tree: no event was changed, and each is the
    stream's message at its sequence;
  - sequences strictly increasing, within the snapshot; each event of the workspace and
    matching the export's filter;
  - each key's (each aggregate's) chain: every event names the hash of the one before
    it, so an event missing between two exported ones is a gap; in an unfiltered or a
    key's export, each aggregate's first event must be its first ever;
  - completeness: an unfiltered export must be exactly the events of the signed workspace
    tree (so a missing, extra, reordered or changed event anywhere, the last one too,
    fails); a key's export must end with the key's last event the statement names.
    Exports filtered otherwise (--type, --actor, --since, --until, --after) prove their
    events genuine, not that none was left out: the summary says so;
  - the number of events the trailer states.

It prints a summary with what the export proves and exits 0, or names the first failure
and exits 1. FILE "-" reads stdin. --allow-gaps tolerates chain gaps, for exports filtered
by --type or --actor.`,
		Example: `  keyreg audit verify acme-audit.jsonl --pubkey @keyreg.pub
  keyreg audit verify acme-audit.jsonl --pubkey "keyreg+1a2b3c4d+AXg..."
  gunzip -c acme-audit.jsonl.gz | keyreg audit verify - --pubkey @keyreg.pub --json`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringArrayVar(&keys, "pubkey", nil, "verifier `KEY` of a trusted sealer, or @FILE holding keys one per line, as audit pubkey prints them (repeatable)")
	cmd.Flags().BoolVar(&allowGaps, "allow-gaps", false, "tolerate gaps in the chains (exports filtered by type or actor)")
	cmd.MarkFlagRequired("pubkey")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var set []replay.TrustedKey
		for _, k := range keys {
			ks, err := readPubkeys("--pubkey", k)
			if err != nil {
				return err
			}
			set = append(set, ks...)
		}
		var r io.Reader = g.stdin
		if args[0] != "-" {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		sum, err := replay.VerifyExport(r, replay.VerifyOptions{KeySet: set, AllowGaps: allowGaps})
		var ve *replay.VerifyError
		if err != nil && !errors.As(err, &ve) {
			return err // not about the export: a bad key, an unreadable file
		}
		if g.json {
			rep := verifyReport{OK: err == nil, Complete: err == nil && sum.Complete, Proves: sum.Proves, NotProven: sum.NotProven, Summary: sum}
			if err != nil {
				rep.Error = err.Error()
			}
			if perr := g.printJSON(rep); perr != nil {
				return perr
			}
		} else {
			printVerifySummary(g.stdout, sum, err)
		}
		if err != nil {
			return fmt.Errorf("audit verify %s: FAILED: %w", args[0], err)
		}
		return nil
	}
	return cmd
}

// readPubkeys returns the verifier keys that flag gives: the key itself, or @FILE holding
// a key set (replay.ParseKeySet: keys one per line, as "keyreg audit pubkey" writes them,
// with the retired=N that "--all" adds). A value that is not a key but names a file gets a hint to
// write @FILE.
func readPubkeys(flag, k string) ([]replay.TrustedKey, error) {
	if path, ok := strings.CutPrefix(k, "@"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, usagef("%s @%s: %v", flag, path, err)
		}
		keys, err := replay.ParseKeySet(string(b))
		if err != nil {
			return nil, usagef("%s @%s: %v", flag, path, err)
		}
		return keys, nil
	}
	k = strings.TrimSpace(k)
	if _, err := note.NewVerifier(k); err != nil {
		if st, serr := os.Stat(k); serr == nil && !st.IsDir() {
			return nil, usagef("%s %s: not a verifier key; did you mean @%s (the keys in that file)?", flag, k, k)
		}
		return nil, usagef("%s %q: %v: give the key (keyreg+...) or @FILE holding keys, e.g. @keyreg.pub", flag, k, err)
	}
	return []replay.TrustedKey{{VerifierKey: k}}, nil
}

func printVerifySummary(w io.Writer, s replay.VerifySummary, err error) {
	t := newTable(w)
	switch {
	case err != nil:
		t.row("Result:", "FAILED: nothing is proven")
	case s.Complete:
		t.row("Result:", "OK: the export is signed, complete and unaltered")
	default:
		t.row("Result:", "OK: the events are signed and unaltered; completeness is NOT proven")
	}
	if err == nil {
		t.row("Proves:", s.Proves)
		if s.NotProven != "" {
			t.row("Not proven:", s.NotProven)
		}
	}
	t.row("Workspace:", firstNonEmpty(s.Workspace, "-"))
	t.row("Events:", fmt.Sprintf("%d checked (sequences %d to %d)", s.Events, s.FirstSeq, s.LastSeq))
	if s.AsOf != 0 {
		t.row("Snapshot:", fmt.Sprintf("as of stream sequence %d, when the workspace had %d events", s.AsOf, s.WorkspaceEvents))
	}
	if s.Key != nil {
		t.row("Key:", fmt.Sprintf("%s, last event at sequence %d", s.Key.ID, s.Key.Seq))
	}
	t.row("Aggregates:", fmt.Sprint(s.Aggregates))
	t.row("Checkpoint:", fmt.Sprintf("tree of %d events, root %s", s.TreeSize, firstNonEmpty(s.RootHash, "-")))
	t.row("Signed by:", firstNonEmpty(s.Signer, "-"))
	if s.Filter != nil {
		b, _ := json.Marshal(s.Filter)
		t.row("Filter:", string(b))
	} else if err == nil {
		t.row("Filter:", "none")
	}
	if s.ChainBreaks > 0 {
		t.row("Chain gaps:", fmt.Sprintf("%d, allowed by --allow-gaps", s.ChainBreaks))
	}
	t.flush()
}

func newAuditPubkeyCmd(g *globals) *cobra.Command {
	var (
		data string
		all  bool
	)
	cmd := &cobra.Command{
		Use:   "pubkey [--all | --data DIR]",
		Short: "Print the published key set of the audit checkpoints, one key a line",
		Long: `Prints the public keys that check the signatures of the audit checkpoints, one a line,
for "keyreg audit verify --pubkey @FILE": asked of the server (GET /v1/audit/pubkey), the
keys the log vouches for, one per node (each node registers its own key in the log on
start; "keyreg audit signer retire" withdraws one). With --data it prints the one key of
that node's data dir (made by its first "keyreg serve"). Give reviewers a copy obtained out
of band: a key set fetched from the server proves only that the server signed.

--all prints every key the log records, a retired one followed by "retired=N" (the stream
sequence of its retirement). With such a file, "audit verify" accepts a retired key's
checkpoints only of trees that do not hold its retirement: exports signed before it keep
verifying, and a checkpoint the retired key signs later fails.`,
		Example: `  keyreg audit pubkey --addr http://keyreg.internal:8080 > keyreg.pub
  keyreg audit pubkey --all > keyreg-all.pub
  keyreg audit pubkey --data /var/lib/keyreg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ks client.AuditKeySet
			if data != "" && all {
				return usagef("--all asks the server: give it or --data, not both")
			}
			if data != "" {
				vkey, err := sealer.ReadVerifierKey(data)
				if err != nil {
					return err
				}
				ks = client.AuditKeySet{VerifierKey: vkey, VerifierKeys: []string{vkey}}
			} else {
				var err error
				if ks, err = g.client().AuditKeySet(cmd.Context()); err != nil {
					return err
				}
			}
			if g.json {
				return g.printJSON(ks)
			}
			lines := ks.VerifierKeys
			if all {
				lines = nil
				for _, s := range ks.Signers {
					lines = append(lines, replay.TrustedKey{VerifierKey: s.VerifierKey, RetiredSeq: s.RetiredSeq}.String())
				}
				if len(lines) == 0 {
					return errors.New("the server records no audit signer")
				}
			}
			_, err := fmt.Fprint(g.stdout, strings.Join(lines, "\n")+"\n")
			return err
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "read the key from this data dir instead of asking the server")
	cmd.Flags().BoolVar(&all, "all", false, "every key the log records, retired ones too, with retired=N")
	return cmd
}

func newAuditSignerCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("signer", "List and retire the audit signers (one key per node)",
		`Each node signs checkpoints with its own ed25519 key (kept in <data>/audit/signing.key,
never in the log) and registers the public half in the log when it starts
(keyreg.signer.added.v1). The published key set ("keyreg audit pubkey") is the keys
registered and not retired. "retire" records keyreg.signer.retired.v1: the key leaves the
set, and its node seals nothing more until it has a new key (stop it, remove
<data>/audit/signing.key, start it: it registers the new one). Retiring needs keyreg.admin.`,
		`  keyreg audit signer list
  keyreg audit signer retire "keyreg+1a2b3c4d+AXg..." --reason "node-a decommissioned"`)
	cmd.AddCommand(newAuditSignerListCmd(g), newAuditSignerRetireCmd(g))
	return cmd
}

func newAuditSignerListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List every audit signer the log records, retired ones too",
		Example: "  keyreg audit signer list\n  keyreg audit signer list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ks, err := g.client().AuditKeySet(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"signers": ks.Signers})
			}
			t := newTable(g.stdout, "ID", "NODE", "ADDED", "ADDED AT SEQ", "RETIRED AT SEQ", "VERIFIER KEY")
			for _, s := range ks.Signers {
				retired := "-"
				if s.RetiredSeq != 0 {
					retired = fmtVersion(s.RetiredSeq)
				}
				t.row(s.ID, s.Node, fmtTime(s.AddedAt), fmtVersion(s.AddedSeq), retired, s.VerifierKey)
			}
			return t.flush()
		},
	}
}

func newAuditSignerRetireCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retire KEY|@FILE",
		Short: "Retire an audit signer's key: it leaves the published set and seals no more",
		Example: `  keyreg audit signer retire "keyreg+1a2b3c4d+AXg..." --reason "node-a decommissioned"
  keyreg audit signer retire @node-a.pub`,
		Args: cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		keys, err := readPubkeys("KEY", args[0])
		if err != nil {
			return err
		}
		if len(keys) != 1 {
			return usagef("retire %s: the file holds %d keys; give one", args[0], len(keys))
		}
		vkey := keys[0].VerifierKey
		if err := g.client().RetireAuditSigner(cmd.Context(), events.SignerID(vkey), w.o); err != nil {
			return err
		}
		if g.json {
			return g.printJSON(map[string]any{"retired": vkey})
		}
		fmt.Fprintf(g.stdout, "Retired audit signer %s.\n", vkey)
		return nil
	}
	return cmd
}
