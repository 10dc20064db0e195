package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

func newWorkspaceCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("workspace", "Create and list workspaces",
		`A workspace holds REST API keys and identifiers. Its id is a slug, [a-z0-9][a-z0-9-]{0,62}.
Creating one needs a key with keyreg.admin (workspace system).`,
		`  keyreg workspace create acme --name "Acme Inc"
  keyreg workspace list`)
	cmd.AddCommand(newWorkspaceCreateCmd(g), newWorkspaceListCmd(g))
	return cmd
}

func newWorkspaceCreateCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "create ID --name NAME",
		Short: "Create a workspace (needs keyreg.admin)",
		Example: `  keyreg workspace create acme --name "Acme Inc"
  keyreg workspace create acme-staging --name "Acme staging" --reason "TICKET-42" --json`,
		Args: cobra.ExactArgs(1),
	}
	w := addWriteFlags(cmd, false)
	cmd.Flags().StringVar(&name, "name", "", "the workspace's display name (required)")
	cmd.MarkFlagRequired("name")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ws, err := g.client().CreateWorkspace(cmd.Context(), args[0], name, w.o)
		if err != nil {
			return err
		}
		if g.json {
			return g.printWritten(ws)
		}
		fmt.Fprintf(g.stdout, "Created workspace %s.\n", ws.ID)
		return printWorkspaces(g.stdout, []wire.Workspace{ws})
	}
	return cmd
}

func newWorkspaceListCmd(g *globals) *cobra.Command {
	var pf *pageFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the workspaces the token may see",
		Long:  "An admin key sees every workspace; any other key sees its own.",
		Example: `  keyreg workspace list
  keyreg workspace list --json | jq -r '.workspaces[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			page, paged, err := pf.page()
			if err != nil {
				return err
			}
			if paged {
				p, err := g.client().WorkspacesPage(cmd.Context(), page)
				if err != nil {
					return err
				}
				if g.json {
					return g.printJSON(p)
				}
				if err := printWorkspaces(g.stdout, p.Workspaces); err != nil {
					return err
				}
				g.printNext(cmd, p.Next)
				return nil
			}
			wss, err := g.client().ListWorkspaces(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"workspaces": wss})
			}
			return printWorkspaces(g.stdout, wss)
		},
	}
	pf = addPageFlags(cmd)
	return cmd
}
