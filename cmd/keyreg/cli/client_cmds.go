package cli

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
)

// defaultAddr is the server the client commands call without --addr or $KEYREG_ADDR.
const defaultAddr = "http://127.0.0.1:8080"

// client returns a client of the server named by --addr, $KEYREG_ADDR or defaultAddr,
// with the token of --token or $KEYREG_TOKEN. Its reads send --min-seq, else the sequence
// of the last write to that address (see startSequence).
func (g *globals) client() *client.Client {
	addr := firstNonEmpty(g.addr, g.getenv("KEYREG_ADDR"), defaultAddr)
	token := strings.TrimSpace(firstNonEmpty(g.token, g.getenv("KEYREG_TOKEN")))
	c := client.New(addr, token, &http.Client{Timeout: 30 * time.Second})
	g.startSequence(c)
	return c
}

// workspace returns the workspace of -w/--workspace (flag), else $KEYREG_WORKSPACE.
func (g *globals) workspace(flag string) (string, error) {
	if ws := firstNonEmpty(flag, g.getenv("KEYREG_WORKSPACE")); ws != "" {
		return ws, nil
	}
	return "", usagef("which workspace? pass -w/--workspace or set KEYREG_WORKSPACE")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// newGroupCmd returns a command that only holds subcommands: alone it prints its help,
// and an unknown subcommand is a usage error (cobra would print the help and succeed).
func newGroupCmd(use, short, long, example string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Long: long, Example: example, RunE: groupRun}
}

// groupRun runs a command that only holds subcommands: alone it prints its help; with an
// argument, which is no subcommand of it, it is a usage error that suggests the closest
// subcommands (by edit distance or prefix: "keyreg key craete" suggests create).
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageError{msg}
}

// addWorkspaceFlag adds -w/--workspace to cmd and its subcommands.
func addWorkspaceFlag(cmd *cobra.Command) *string {
	var ws string
	cmd.PersistentFlags().StringVarP(&ws, "workspace", "w", "", "workspace id (default $KEYREG_WORKSPACE)")
	return &ws
}

// pageFlags are --limit and --after of a list command.
type pageFlags struct{ p client.Page }

func addPageFlags(cmd *cobra.Command) *pageFlags {
	pf := &pageFlags{}
	cmd.Flags().IntVar(&pf.p.Limit, "limit", 0, "print one page of at most `N` items (1 to 1000), and how to get the next; default: every item")
	cmd.Flags().StringVar(&pf.p.After, "after", "", "print the page after this `CURSOR` (the next of the previous page)")
	return pf
}

// page returns the page asked for, or ok false for every item.
func (pf *pageFlags) page() (p client.Page, ok bool, err error) {
	if pf.p.Limit < 0 || pf.p.Limit > 1000 {
		return pf.p, false, usagef("--limit %d: use 1 to 1000", pf.p.Limit)
	}
	return pf.p, pf.p.Limit > 0 || pf.p.After != "", nil
}

// printNext says, after a table, how to get the next page of a list command (the command
// again with its selecting flags, never --token, and --after next), if there is one.
func (g *globals) printNext(cmd *cobra.Command, next string) {
	if next == "" {
		return
	}
	line := cmd.CommandPath()
	for _, name := range []string{"addr", "workspace", "status", "kind", "q", "as-of", "limit"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			line += " --" + name + " " + shellQuote(f.Value.String())
		}
	}
	fmt.Fprintf(g.stdout, "\nMore: %s --after %s\n", line, shellQuote(next))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=+,@", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// writeFlags are the optional headers of a write command.
type writeFlags struct{ o client.WriteOptions }

// addWriteFlags adds --idempotency-key and --reason to cmd, and --if-match when the
// command changes an existing resource.
func addWriteFlags(cmd *cobra.Command, ifMatch bool) *writeFlags {
	w := &writeFlags{}
	f := cmd.Flags()
	if ifMatch {
		f.StringVar(&w.o.IfMatch, "if-match", "", "change only if the resource is still at this `VERSION` (else 412)")
	}
	f.StringVar(&w.o.IdempotencyKey, "idempotency-key", "", "retry-safe: the same `KEY` and request give the same answer and no second change")
	f.StringVar(&w.o.Reason, "reason", "", "why the change is made (`TEXT`), recorded in its event for the audit log")
	return w
}

// expiryFlags are --expires-at and --expires-in.
type expiryFlags struct {
	at string
	in time.Duration
}

func addExpiryFlags(cmd *cobra.Command) *expiryFlags {
	e := &expiryFlags{}
	cmd.Flags().StringVar(&e.at, "expires-at", "", "when the key stops working, RFC 3339 (e.g. 2027-01-01T00:00:00Z)")
	cmd.Flags().DurationVar(&e.in, "expires-in", 0, "the key stops working after this duration (e.g. 720h)")
	cmd.MarkFlagsMutuallyExclusive("expires-at", "expires-in")
	return e
}

// time returns the expiry the flags give, or nil when neither was given.
func (e *expiryFlags) time(cmd *cobra.Command) (*time.Time, error) {
	switch {
	case cmd.Flags().Changed("expires-at"):
		t, err := time.Parse(time.RFC3339, e.at)
		if err != nil {
			return nil, usagef("--expires-at %q: use RFC 3339, e.g. 2027-01-01T00:00:00Z", e.at)
		}
		return &t, nil
	case cmd.Flags().Changed("expires-in"):
		if e.in <= 0 {
			return nil, usagef("--expires-in %s: use a positive duration, e.g. 720h", e.in)
		}
		t := time.Now().Add(e.in).UTC().Truncate(time.Second)
		return &t, nil
	}
	return nil, nil
}
