package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

// printJSON prints v as indented JSON: the API's bodies, for scripts.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// table is an aligned table of text cells.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

// row adds a row; control characters in cells (which would break the alignment or
// drive the terminal) are shown as '?'.
func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return '?'
			}
			return r
		}, c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// fmtTime formats t in UTC to the second; "" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time, none string) string {
	if t == nil {
		return none
	}
	return fmtTime(*t)
}

// fmtList joins l with sep, or returns none for an empty list.
func fmtList(l []string, sep, none string) string {
	if len(l) == 0 {
		return none
	}
	return strings.Join(l, sep)
}

func fmtVersion(v uint64) string { return strconv.FormatUint(v, 10) }

func byWho(at time.Time, by string) string {
	if by == "" {
		return fmtTime(at)
	}
	return fmtTime(at) + " by " + by
}

// printKeys prints keys as a table, one row per key.
func printKeys(w io.Writer, keys []wire.Key) error {
	t := newTable(w, "ID", "NAME", "STATUS", "PERMISSIONS", "ALLOWLIST", "EXPIRES", "LAST USED", "VERSION")
	for _, k := range keys {
		t.row(k.ID, k.Name, k.Status, fmtList(k.Permissions, ",", "-"), fmtList(k.Allowlist, ",", "any"),
			fmtTimePtr(k.ExpiresAt, "never"), fmtTimePtr(k.LastUsedAt, "-"), fmtVersion(k.Version))
	}
	return t.flush()
}

// printKey prints one key, a field a line.
func printKey(w io.Writer, k wire.Key) error {
	t := newTable(w)
	t.row("ID:", k.ID)
	t.row("Workspace:", k.Workspace)
	t.row("Name:", k.Name)
	t.row("Status:", k.Status)
	t.row("Permissions:", fmtList(k.Permissions, ", ", "none"))
	t.row("Allowlist:", fmtList(k.Allowlist, ", ", "any address"))
	t.row("Expires:", fmtTimePtr(k.ExpiresAt, "never"))
	if k.PreviousSecretValidUntil != nil {
		t.row("Old secret valid until:", fmtTime(*k.PreviousSecretValidUntil))
	}
	t.row("Created:", byWho(k.CreatedAt, k.CreatedBy))
	t.row("Updated:", fmtTime(k.UpdatedAt))
	t.row("Version:", fmtVersion(k.Version))
	t.row("Last used:", lastUsed(k.LastUsedAt, k.LastUsedIP))
	return t.flush()
}

// lastUsed renders a key's last use.
func lastUsed(at *time.Time, ip string) string {
	if at == nil {
		return "never seen by verify"
	}
	if ip == "" {
		return fmtTime(*at)
	}
	return fmtTime(*at) + " from " + ip
}

// printUsage prints a key's verifies per day and outcome as a table.
func printUsage(w io.Writer, u wire.KeyUsage) error {
	fmt.Fprintf(w, "\nVerifies per day (UTC):\n")
	t := newTable(w, "DATE", "VALID", "REVOKED", "EXPIRED", "IP_NOT_ALLOWED", "PERMISSION_DENIED", "TOTAL")
	for _, d := range u.Days {
		c := d.Counts
		t.row(d.Date, strconv.FormatUint(c["VALID"], 10), strconv.FormatUint(c["REVOKED"], 10), strconv.FormatUint(c["EXPIRED"], 10),
			strconv.FormatUint(c["IP_NOT_ALLOWED"], 10), strconv.FormatUint(c["PERMISSION_DENIED"], 10), strconv.FormatUint(d.Total, 10))
	}
	return t.flush()
}

// printSecret prints a key and its new secret, once, with a warning.
func printSecret(w io.Writer, verb string, ks wire.KeyWithSecret) error {
	fmt.Fprintf(w, "%s key %s in workspace %s.\n\n", verb, ks.Key.ID, ks.Key.Workspace)
	if err := printKey(w, ks.Key); err != nil {
		return err
	}
	if ks.Secret == "" {
		_, err := fmt.Fprintf(w, "\nNo secret in this answer: it repeats an earlier request (same --idempotency-key),\nwhose answer showed the secret. keyreg does not keep secrets; rotate the key if it is lost.\n")
		return err
	}
	_, err := fmt.Fprintf(w, "\nSecret (shown this once and never again; keyreg keeps only its hash, so store it now):\n\n    %s\n\n", ks.Secret)
	return err
}

// printIdentifiers prints identifiers as a table.
func printIdentifiers(w io.Writer, ids []wire.Identifier) error {
	t := newTable(w, "ID", "KIND", "NAME", "PLATFORM", "STATUS", "VERSION")
	for _, s := range ids {
		t.row(s.ID, s.Kind, s.Name, firstNonEmpty(s.Platform, "-"), s.Status, fmtVersion(s.Version))
	}
	return t.flush()
}

// printIdentifier prints one identifier, a field a line.
func printIdentifier(w io.Writer, s wire.Identifier) error {
	t := newTable(w)
	t.row("ID:", s.ID)
	t.row("Workspace:", s.Workspace)
	t.row("Kind:", s.Kind)
	t.row("Name:", s.Name)
	if s.Platform != "" {
		t.row("Platform:", s.Platform)
	}
	t.row("Status:", s.Status)
	t.row("Created:", byWho(s.CreatedAt, s.CreatedBy))
	t.row("Updated:", fmtTime(s.UpdatedAt))
	t.row("Version:", fmtVersion(s.Version))
	return t.flush()
}

// printWorkspaces prints workspaces as a table.
func printWorkspaces(w io.Writer, wss []wire.Workspace) error {
	t := newTable(w, "ID", "NAME", "CREATED", "VERSION")
	for _, ws := range wss {
		t.row(ws.ID, ws.Name, fmtTime(ws.CreatedAt), fmtVersion(ws.Version))
	}
	return t.flush()
}
