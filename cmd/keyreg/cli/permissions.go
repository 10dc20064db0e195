package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/wire"
)

const permissionsLong = `Keys are granted permissions from a catalogue: the platform's REST endpoint permissions
(users.track, messages.send, ...), the registry's own keyreg.* permissions, and a
workspace's own permissions (keyreg permission add). A key may grant only the keyreg.*
permissions it holds itself; keyreg.admin exists only on keys of workspace system.`

// newPermissionsCmd is "keyreg permissions": the catalogue.
func newPermissionsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "permissions [-w WORKSPACE]",
		Short: "List the permissions keys may be granted",
		Long:  permissionsLong + "\n\nWith -w (or $KEYREG_WORKSPACE) the list also holds that workspace's own permissions.",
		Example: `  keyreg permissions
  keyreg permissions -w acme --json | jq -r '.permissions[].name'`,
		Args: cobra.NoArgs,
	}
	ws := addWorkspaceFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error { return listPermissions(cmd, g, *ws) }
	return cmd
}

// newPermissionCmd is "keyreg permission add|list".
func newPermissionCmd(g *globals) *cobra.Command {
	cmd := newGroupCmd("permission", "Define and list the permissions keys may be granted", permissionsLong,
		`  keyreg permission add -w acme reports.weekly --description "Read the weekly reports"
  keyreg permission list -w acme`)
	ws := addWorkspaceFlag(cmd)
	list := &cobra.Command{
		Use:   "list [-w WORKSPACE]",
		Short: "List the catalogue (same as keyreg permissions)",
		Example: `  keyreg permission list
  keyreg permission list -w acme --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return listPermissions(cmd, g, *ws) },
	}
	cmd.AddCommand(newPermissionAddCmd(g, ws), list)
	return cmd
}

func newPermissionAddCmd(g *globals, ws *string) *cobra.Command {
	var desc string
	cmd := &cobra.Command{
		Use:   "add NAME --description TEXT",
		Short: "Define a permission of the workspace's own (needs keyreg.keys.write)",
		Long: `Defines a permission the built-in catalogue lacks, so that the workspace's keys may be
granted it. NAME is dotted lower case like users.track, neither built in nor keyreg.*.
Permissions are never removed; adding one again with the same description changes nothing.`,
		Example: `  keyreg permission add -w acme reports.weekly --description "Read the weekly reports"`,
		Args:    cobra.ExactArgs(1),
	}
	cmd.Flags().StringVar(&desc, "description", "", "what the permission allows (required)")
	cmd.MarkFlagRequired("description")
	w := addWriteFlags(cmd, false)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		wsID, err := g.workspace(*ws)
		if err != nil {
			return err
		}
		p, err := g.client().DefinePermission(cmd.Context(), wsID, args[0], desc, w.o)
		if err != nil {
			return err
		}
		if g.json {
			return g.printWritten(p)
		}
		fmt.Fprintf(g.stdout, "Defined permission %s in workspace %s.\n", p.Name, wsID)
		return printPermissions(g.stdout, []wire.Permission{p})
	}
	return cmd
}

func listPermissions(cmd *cobra.Command, g *globals, wsFlag string) error {
	ws := firstNonEmpty(wsFlag, g.getenv("KEYREG_WORKSPACE"))
	ps, err := g.client().ListPermissions(cmd.Context(), ws)
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(wire.PermissionList{Permissions: ps})
	}
	return printPermissions(g.stdout, ps)
}

func printPermissions(w io.Writer, ps []wire.Permission) error {
	t := newTable(w, "PERMISSION", "GROUP", "DESCRIPTION")
	for _, p := range ps {
		group := p.Group
		if p.Workspace != "" {
			group = "workspace " + p.Workspace
		}
		t.row(p.Name, group, p.Description)
	}
	return t.flush()
}
