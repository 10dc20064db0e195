package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/client"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func newIdentifierCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("identifier", "Manage app identifiers and additional API identifiers",
		`Identifiers name the things API calls refer to: apps (kind app, with a platform) and
additional API identifiers of kind segment, campaign, canvas, content_card, template,
subscription_group or send. A name is unique per workspace and kind among active
identifiers, ignoring case; retiring an identifier frees its name.

The workspace is -w/--workspace, else $KEYREG_WORKSPACE.`,
		`  keyreg identifier register -w acme --kind segment --name "Summer Sale"
  keyreg identifier list -w acme --kind segment --q sum
  keyreg identifier retire -w acme 01JDX4...`)
	ws := addWorkspaceFlag(cmd)
	cmd.AddCommand(newIdentifierRegisterCmd(g, ws), newIdentifierListCmd(g, ws), newIdentifierShowCmd(g, ws),
		newIdentifierRenameCmd(g, ws), newIdentifierRetireCmd(g, ws))
	return cmd
}

// printIdentifierResult prints an identifier after a write (summary then the
// identifier) or a read.
func (g *globals) printIdentifierResult(s wire.Identifier, summary string) error {
	if g.json && summary != "" {
		return g.printWritten(s)
	}
	if g.json {
		return g.printJSON(s)
	}
	if summary != "" {
		fmt.Fprintf(g.stdout, "%s %s %s (version %d).\n\n", summary, s.Kind, s.ID, s.Version)
	}
	return printIdentifier(g.stdout, s)
}

func newIdentifierRegisterCmd(g *globals, ws *string) *cobra.Command {
	var req client.RegisterIdentifierRequest
	cmd := &cobra.Command{
		Use:   "register --kind KIND --name NAME [--platform P]",
		Short: "Register an identifier",
		Example: `  keyreg identifier register -w acme --kind segment --name "Summer Sale"
  keyreg identifier register -w acme --kind app --name "Acme iOS" --platform ios
  keyreg identifier register -w acme --kind campaign --name "Welcome" --json | jq -r .id`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	f.StringVar(&req.Kind, "kind", "", "app, segment, campaign, canvas, content_card, template, subscription_group or send (required)")
	f.StringVar(&req.Name, "name", "", "the identifier's name (required)")
	f.StringVar(&req.Platform, "platform", "", "for kind app: ios, android, web, ...")
	cmd.MarkFlagRequired("kind")
	cmd.MarkFlagRequired("name")
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		s, err := g.client().RegisterIdentifier(cmd.Context(), wsID, req, w.o)
		if err != nil {
			return err
		}
		return g.printIdentifierResult(s, "Registered")
	}
	return cmd
}

func newIdentifierListCmd(g *globals, ws *string) *cobra.Command {
	var kind, q, asOf string
	var pf *pageFlags
	cmd := &cobra.Command{
		Use:   "list [--kind KIND] [--q PREFIX]",
		Short: "List and search active identifiers, by name",
		Example: `  keyreg identifier list -w acme
  keyreg identifier list -w acme --kind segment --q "summer"
  keyreg identifier list -w acme --kind app --json | jq -r '.identifiers[].name'`,
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
				p, err := g.client().IdentifiersPage(cmd.Context(), wsID, client.IdentifierQuery{Kind: kind, Q: q, Page: page}, client.AsOf(asOf))
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(p)
				}
				if err := printIdentifiers(g.stdout, p.Identifiers); err != nil {
					return err
				}
				g.printNext(cmd, p.Next)
				return nil
			}
			ids, err := g.client().ListIdentifiers(cmd.Context(), wsID, kind, q, client.AsOf(asOf))
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"identifiers": ids})
			}
			return printIdentifiers(g.stdout, ids)
		},
	}
	pf = addPageFlags(cmd)
	cmd.Flags().StringVar(&kind, "kind", "", "only this kind")
	cmd.Flags().StringVar(&q, "q", "", "only names starting with this prefix, ignoring case")
	cmd.Flags().StringVar(&asOf, "as-of", "", "the identifiers active at this `TIME` (RFC 3339) or stream sequence")
	return cmd
}

func newIdentifierShowCmd(g *globals, ws *string) *cobra.Command {
	var asOf string
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show an identifier",
		Example: `  keyreg identifier show -w acme 01JDX4...
  keyreg identifier show -w acme 01JDX4... --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			wsID, err := g.workspace(*ws)
			if err != nil {
				return err
			}
			s, err := g.client().GetIdentifier(cmd.Context(), wsID, args[0], client.AsOf(asOf))
			if err != nil {
				return err
			}
			return g.printIdentifierResult(s, "")
		},
	}
	cmd.Flags().StringVar(&asOf, "as-of", "", "the identifier as it was at this `TIME` (RFC 3339) or stream sequence")
	return cmd
}

func newIdentifierRenameCmd(g *globals, ws *string) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "rename ID --name NAME",
		Short: "Rename an identifier",
		Example: `  keyreg identifier rename -w acme 01JDX4... --name "Summer Sale 2026"
  keyreg identifier rename -w acme 01JDX4... --name "Winter Sale" --if-match 57 --reason "season change"`,
		Args: cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&name, "name", "", "the new name (required)")
	cmd.MarkFlagRequired("name")
	w := addWriteFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		s, err := g.client().RenameIdentifier(cmd.Context(), wsID, args[0], name, w.o)
		if err != nil {
			return err
		}
		return g.printIdentifierResult(s, "Renamed")
	}
	return cmd
}

func newIdentifierRetireCmd(g *globals, ws *string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retire ID",
		Short: "Retire an identifier; its name becomes free again",
		Long:  "Retires an identifier: it accepts no further change and its name can be registered again. Its history is kept.",
		Example: `  keyreg identifier retire -w acme 01JDX4...
  keyreg identifier retire -w acme 01JDX4... --reason "campaign ended"`,
		Args: cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, true)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		s, err := g.client().RetireIdentifier(cmd.Context(), wsID, args[0], w.o)
		if err != nil {
			return err
		}
		return g.printIdentifierResult(s, "Retired")
	}
	return cmd
}
