package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

func newAdminCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "admin",
		Short:   "Operator commands that work on a stopped server's data dir",
		Example: `  keyreg admin recover-root --data /var/lib/keyreg --reason "root key lost, INC-1234"`,
		Args:    cobra.NoArgs,
	}
	cmd.AddCommand(newRecoverRootCmd(g))
	return cmd
}

func newRecoverRootCmd(g *globals) *cobra.Command {
	var data, reason, keyFile string
	cmd := &cobra.Command{
		Use:   "recover-root --data DIR",
		Short: "Replace a lost root key: revoke every root key and make a new one",
		Long: `Replaces a lost root key on the data dir of a stopped keyreg serve. It revokes every active root
key (keys of workspace "system" with keyreg.admin) and makes a new root key, and prints the new
secret once (and writes it to --bootstrap-key-file, a new file of mode 0600, when given).

Each change is an event of the audit log, like any other: its actor is the operator,
"operator:<os user>@<host>", and its reason is --reason. They show in
keyreg audit log --workspace system.

It holds the data dir's lock, so it refuses to run while keyreg serve (or another keyreg
tool) uses the data dir: stop the server first, and start it again afterwards.`,
		Example: `  keyreg admin recover-root --data /var/lib/keyreg --reason "root key lost with laptop, INC-1234"
  keyreg admin recover-root --data ./keyreg-data --bootstrap-key-file ./root.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if data == "" {
				return usagef("--data DIR is required")
			}
			if len(reason) > 1024 {
				return usagef("--reason is %d bytes long; at most 1024", len(reason))
			}
			res, err := server.RecoverRoot(cmd.Context(), data, server.RecoverRootOptions{Reason: reason, KeyFile: keyFile})
			if errors.Is(err, server.ErrDataDirInUse) {
				return fmt.Errorf("%w (stop keyreg serve first: recover-root works on a stopped server)", err)
			}
			if err != nil && res.Secret == "" {
				return err
			}
			if g.json {
				if jerr := g.printJSON(map[string]any{"revoked": res.Revoked, "key_id": res.KeyID, "secret": res.Secret}); jerr != nil {
					return jerr
				}
			} else {
				revoked := "none"
				if len(res.Revoked) > 0 {
					revoked = strings.Join(res.Revoked, ", ")
				}
				fmt.Fprintf(g.stdout, "Revoked root keys: %s.\nNew root key %s (keyreg.admin). Its secret is shown this once; keep it safe:\n\n    %s\n\n",
					revoked, res.KeyID, res.Secret)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "keyreg-data", "data directory of the stopped server")
	f.StringVar(&reason, "reason", "", `why, for the audit log (default "recover-root: replace a lost root key")`)
	f.StringVar(&keyFile, "bootstrap-key-file", "", "also write the new root secret to this new file (mode 0600)")
	return cmd
}
