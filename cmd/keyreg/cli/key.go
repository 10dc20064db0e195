package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/events"
)

func newKeyCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("key", "Manage a workspace's REST API keys",
		`A REST API key has endpoint permissions and an optional IP allowlist of addresses and
CIDR prefixes (no allowlist: any address). Its secret (kr_...) is shown once, when the key
is created or rotated; keyreg keeps only its hash.

The workspace is -w/--workspace, else $KEYREG_WORKSPACE. Writes accept --if-match VERSION
(optimistic concurrency: 412 if the key changed), --idempotency-key KEY (safe retries) and
--reason TEXT (recorded in the audit log).`,
		`  keyreg key create -w acme --name "Prod server" --permission users.track --allow 203.0.113.0/24
  keyreg key list -w acme --status active
  keyreg key allowlist -w acme 01JDX3... --allow 203.0.113.0/24 --allow 2001:db8::/32
  keyreg key rotate -w acme 01JDX3... --grace 24h
  keyreg key history -w acme 01JDX3...`)
	ws := addWorkspaceFlag(cmd)
	cmd.AddCommand(newKeyCreateCmd(g, ws), newKeyListCmd(g, ws), newKeyShowCmd(g, ws), newKeyUpdateCmd(g, ws),
		newKeyAllowlistCmd(g, ws), newKeyRotateCmd(g, ws), newKeyRevokeCmd(g, ws), newKeyHistoryCmd(g, ws))
	return cmd
}

func newKeyCreateCmd(g *globals, ws *string) *cobra.Command {
	var req client.CreateKeyRequest
	cmd := &cobra.Command{
		Use:   "create --name NAME [--permission P ...] [--allow ADDR|CIDR ...] [--expires-at T | --expires-in D]",
		Short: "Create a key and print its secret, once",
		Long: `Creates a REST API key. Its secret is printed once and never again: store it at once.
Without --allow the key works from any address.`,
		Example: `  keyreg key create -w acme --name "Prod server" --permission users.track --permission messages.send \
      --allow 203.0.113.0/24 --allow 2001:db8::/32 --expires-at 2027-01-01T00:00:00Z
  keyreg key create -w acme --name "CI" --permission users.track --expires-in 720h --json | jq -r .secret`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "the key's name (required)")
	f.StringSliceVar(&req.Permissions, "permission", nil, "an endpoint permission, e.g. users.track (repeatable)")
	f.StringSliceVar(&req.Allowlist, "allow", nil, "an IP address or CIDR prefix the key may be used from (repeatable; none: any)")
	cmd.MarkFlagRequired("name")
	exp := addExpiryFlags(cmd)
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		if req.ExpiresAt, err = exp.time(cmd); err != nil {
			return err
		}
		ks, err := g.client().CreateKey(cmd.Context(), wsID, req, w.o)
		if err != nil {
			return err
		}
		if g.json {
			return g.printWritten(ks)
		}
		return printSecret(g.stdout, "Created", ks)
	}
	return cmd
}

func newKeyListCmd(g *globals, ws *string) *cobra.Command {
	var status, asOf string
	var pf *pageFlags
	cmd := &cobra.Command{
		Use:   "list [--status active|revoked|expired]",
		Short: "List a workspace's keys",
		Example: `  keyreg key list -w acme
  keyreg key list -w acme --status revoked
  keyreg key list -w acme --limit 100 --after 01JDX3...
  keyreg key list -w acme --json | jq -r '.keys[] | select(.allowlist == []) | .id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			wsID, err := g.workspace(*ws)
			if err != nil {
				return err
			}
			page, paged, err := pf.page()
			if err != nil {
				return err
			}
			if paged {
				p, err := g.client().KeysPage(cmd.Context(), wsID, client.KeyQuery{Status: status, Page: page}, client.AsOf(asOf))
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(p)
				}
				if err := printKeys(g.stdout, p.Keys); err != nil {
					return err
				}
				g.printNext(cmd, p.Next)
				return nil
			}
			keys, err := g.client().ListKeys(cmd.Context(), wsID, status, client.AsOf(asOf))
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"keys": keys})
			}
			return printKeys(g.stdout, keys)
		},
	}
	pf = addPageFlags(cmd)
	cmd.Flags().StringVar(&status, "status", "", "only keys with this status: active, revoked or expired")
	cmd.Flags().StringVar(&asOf, "as-of", "", "the keys as they were at this `TIME` (RFC 3339) or stream sequence")
	return cmd
}

func newKeyShowCmd(g *globals, ws *string) *cobra.Command {
	var asOf string
	var days int
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a key (never its secret), its last use and, with --days, its verifies per day",
		Example: `  keyreg key show -w acme 01JDX3...
  keyreg key show -w acme 01JDX3... --json | jq .version
  keyreg key show -w acme 01JDX3... --days 7
  keyreg key show -w acme 01JDX3... --as-of 2026-01-01T00:00:00Z`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			wsID, err := g.workspace(*ws)
			if err != nil {
				return err
			}
			if days != 0 && (days < 1 || days > 90) {
				return usagef("--days %d: use a number of days from 1 to 90", days)
			}
			if days != 0 && asOf != "" {
				return usagef("--days and --as-of do not go together: use is not kept in the log")
			}
			k, err := g.client().GetKey(cmd.Context(), wsID, args[0], client.AsOf(asOf))
			if err != nil {
				return err
			}
			if days == 0 {
				return g.printKeyResult(k, "")
			}
			u, err := g.client().KeyUsage(cmd.Context(), wsID, args[0], days)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(struct {
					wire.Key
					Usage wire.KeyUsage `json:"usage"`
				}{k, u})
			}
			if err := g.printKeyResult(k, ""); err != nil {
				return err
			}
			return printUsage(g.stdout, u)
		},
	}
	cmd.Flags().StringVar(&asOf, "as-of", "", "the key as it was at this `TIME` (RFC 3339) or stream sequence")
	cmd.Flags().IntVar(&days, "days", 0, "also show the key's verifies per outcome on each of the last `N` days (UTC, 1 to 90)")
	return cmd
}

// printKeyResult prints a key after a write (summary then the key) or a read.
func (g *globals) printKeyResult(k wire.Key, summary string) error {
	if g.json && summary != "" {
		return g.printWritten(k)
	}
	if g.json {
		return g.printJSON(k)
	}
	if summary != "" {
		fmt.Fprintf(g.stdout, "%s key %s (version %d).\n\n", summary, k.ID, k.Version)
	}
	return printKey(g.stdout, k)
}

func newKeyUpdateCmd(g *globals, ws *string) *cobra.Command {
	var (
		name     string
		perms    []string
		noPerms  bool
		noExpiry bool
	)
	cmd := &cobra.Command{
		Use:   "update ID [--name N] [--permission P ... | --no-permissions] [--expires-at T | --expires-in D | --no-expiry]",
		Short: "Change a key's name, permissions or expiry",
		Long: `Changes the given fields of a key, all together or none; the others stay as they are.
--permission replaces the whole list of permissions. To change the IP allowlist use
"keyreg key allowlist".`,
		Example: `  keyreg key update -w acme 01JDX3... --name "Prod server (eu)"
  keyreg key update -w acme 01JDX3... --permission users.track --permission users.export --if-match 42
  keyreg key update -w acme 01JDX3... --no-expiry --reason "contract renewed"`,
		Args: cobra.ExactArgs(1),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the new name")
	f.StringSliceVar(&perms, "permission", nil, "the new permissions, replacing all (repeatable)")
	f.BoolVar(&noPerms, "no-permissions", false, "remove every permission")
	f.BoolVar(&noExpiry, "no-expiry", false, "the key no longer expires")
	exp := addExpiryFlags(cmd)
	cmd.MarkFlagsMutuallyExclusive("permission", "no-permissions")
	cmd.MarkFlagsMutuallyExclusive("expires-at", "no-expiry")
	cmd.MarkFlagsMutuallyExclusive("expires-in", "no-expiry")
	w := addWriteFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		var u client.KeyUpdate
		if f.Changed("name") {
			u.Name = &name
		}
		if f.Changed("permission") {
			u.Permissions = &perms
		}
		if noPerms {
			u.Permissions = &[]string{}
		}
		if u.ExpiresAt, err = exp.time(cmd); err != nil {
			return err
		}
		u.ClearExpiry = noExpiry
		if u.Name == nil && u.Permissions == nil && u.ExpiresAt == nil && !u.ClearExpiry {
			return usagef("nothing to change: pass --name, --permission, --no-permissions, --expires-at, --expires-in or --no-expiry")
		}
		k, err := g.client().UpdateKey(cmd.Context(), wsID, args[0], u, w.o)
		if err != nil {
			return err
		}
		return g.printKeyResult(k, "Updated")
	}
	return cmd
}

func newKeyAllowlistCmd(g *globals, ws *string) *cobra.Command {
	var (
		allow   []string
		anyAddr bool
	)
	cmd := &cobra.Command{
		Use:   "allowlist ID (--allow ADDR|CIDR ... | --any)",
		Short: "Replace a key's IP allowlist",
		Long: `Replaces the whole IP allowlist of a key with the given addresses and CIDR prefixes
(IPv4 or IPv6, at most 1000). --any empties it: the key then works from any address.`,
		Example: `  keyreg key allowlist -w acme 01JDX3... --allow 203.0.113.0/24 --allow 198.51.100.7 --allow 2001:db8::/32
  keyreg key allowlist -w acme 01JDX3... --any --reason "moved to a NAT pool"`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringSliceVar(&allow, "allow", nil, "an IP address or CIDR prefix (repeatable)")
	cmd.Flags().BoolVar(&anyAddr, "any", false, "empty the allowlist: allow any address")
	cmd.MarkFlagsMutuallyExclusive("allow", "any")
	w := addWriteFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		if len(allow) == 0 && !anyAddr {
			return usagef("give the new allowlist with --allow ADDR|CIDR (repeatable), or --any to allow any address")
		}
		k, err := g.client().PutAllowlist(cmd.Context(), wsID, args[0], allow, w.o)
		if err != nil {
			return err
		}
		return g.printKeyResult(k, "Updated the allowlist of")
	}
	return cmd
}

func newKeyRotateCmd(g *globals, ws *string) *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "rotate ID [--grace D]",
		Short: "Issue a new secret for a key and print it, once",
		Long: `Issues a new secret, printed once and never again. The old secret keeps working for
--grace (whole seconds, at most 720h; default 0: it stops at once).`,
		Example: `  keyreg key rotate -w acme 01JDX3...
  keyreg key rotate -w acme 01JDX3... --grace 24h --reason "yearly rotation"`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "how long the old secret keeps working")
	w := addWriteFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		if grace < 0 || grace%time.Second != 0 {
			return usagef("--grace %s: use whole seconds, 0 or more (e.g. 24h)", grace)
		}
		ks, err := g.client().RotateKey(cmd.Context(), wsID, args[0], grace, w.o)
		if err != nil {
			return err
		}
		if g.json {
			return g.printWritten(ks)
		}
		return printSecret(g.stdout, "Rotated", ks)
	}
	return cmd
}

func newKeyRevokeCmd(g *globals, ws *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key for good (its history is kept)",
		Long:  "Revokes a key: it stops working at once and accepts no further change. Its history is kept.",
		Example: `  keyreg key revoke -w acme 01JDX3... --reason "secret leaked in a CI log"
  keyreg key revoke -w acme 01JDX3... --if-match 42`,
		Args: cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		k, err := g.client().RevokeKey(cmd.Context(), wsID, args[0], w.o)
		if err != nil {
			return err
		}
		return g.printKeyResult(k, "Revoked")
	}
	return cmd
}

func newKeyHistoryCmd(g *globals, ws *string) *cobra.Command {
	var (
		after uint64
		limit int
	)
	cmd := &cobra.Command{
		Use:   "history ID [--after SEQ] [--limit N]",
		Short: "Show a key's history: every change, oldest first",
		Long: `Shows the events of a key, oldest first: stream sequence, time, change, who (key id and
address), the stated reason and what changed. --json prints the CloudEvents as stored.
A full page ends with the --after value of the next one.`,
		Example: `  keyreg key history -w acme 01JDX3...
  keyreg key history -w acme 01JDX3... --after 1200 --limit 50
  keyreg key history -w acme 01JDX3... --json | jq '.events[].event.type'`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().Uint64Var(&after, "after", 0, "only events after this stream sequence")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many events (1 to 1000)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		h, err := g.client().KeyHistory(cmd.Context(), wsID, args[0], after, limit)
		if err != nil {
			return err
		}
		if g.json {
			return g.printJSON(h)
		}
		t := newTable(g.stdout, "SEQ", "TIME", "CHANGE", "ACTOR", "FROM", "REASON", "DETAILS")
		for _, e := range h.Events {
			var ev events.Event
			if err := json.Unmarshal(e.Event, &ev); err != nil {
				return fmt.Errorf("history: event %d: %w", e.Sequence, err)
			}
			t.row(fmtVersion(e.Sequence), fmtTime(ev.Time), shortType(string(ev.Type)), firstNonEmpty(ev.Actor, "-"),
				firstNonEmpty(ev.ActorIP, "-"), firstNonEmpty(ev.Reason, "-"), eventDetails(ev.Data))
		}
		if err := t.flush(); err != nil {
			return err
		}
		if h.Next != 0 {
			fmt.Fprintf(g.stdout, "\nMore: keyreg key history -w %s %s --after %d\n", wsID, args[0], h.Next)
		}
		return nil
	}
	return cmd
}

// shortType turns "keyreg.key.allowlist_updated.v1" into "allowlist_updated".
func shortType(t string) string {
	t = strings.TrimPrefix(t, "keyreg.key.")
	if i := strings.LastIndex(t, ".v"); i > 0 {
		t = t[:i]
	}
	return t
}

// eventDetails is an event's data as compact JSON without the secret hashes, which say
// nothing to a reader.
func eventDetails(data json.RawMessage) string {
	var m map[string]any
	if json.Unmarshal(data, &m) != nil {
		return string(data)
	}
	for k := range m {
		if strings.HasSuffix(k, "hash") {
			delete(m, k)
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}
