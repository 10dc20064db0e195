package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

func newBackupCmd(g *globals) *cobra.Command {
	var data, to string
	cmd := &cobra.Command{
		Use:   "backup --to DIR",
		Short: "Copy a stopped registry (stream, views, signing key) to a new directory",
		Long: `Copies the data dir of a stopped keyreg to DIR: the stream (nats/), the serving generation of
the views (projections/), and the rest (such as the audit signing key), with MANIFEST.json
listing every file's size and SHA-256. It refuses to run while keyreg serve holds the data
dir. DIR must be new or empty. Keep backups private: they hold the audit signing key.`,
		Example: `  keyreg backup --data ./keyreg-data --to /backups/keyreg-2026-11-27
  keyreg restore --from /backups/keyreg-2026-11-27 --data ./keyreg-data-restored`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usagef("--to DIR is required")
			}
			m, err := server.Backup(data, to)
			if err != nil {
				return err
			}
			var size int64
			for _, f := range m.Files {
				size += f.Size
			}
			fmt.Fprintf(g.stdout, "Backed up %s to %s: %d files, %d bytes, views generation %s.\n", data, to, len(m.Files), size, m.Generation)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "keyreg-data", "data directory of the registry (server stopped)")
	cmd.Flags().StringVar(&to, "to", "", "new or empty directory to write the backup to")
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var data, from string
	cmd := &cobra.Command{
		Use:   "restore --from DIR",
		Short: "Restore a backup into a new or empty data directory",
		Long: `Checks a backup made by keyreg backup against its manifest and copies it into --data, which
must be new or empty. Start keyreg serve on it afterwards; keyreg replay --verify confirms
the views match the stream.`,
		Example: `  keyreg restore --from /backups/keyreg-2026-11-27 --data ./keyreg-data
  keyreg replay --data ./keyreg-data --verify
  keyreg serve --data ./keyreg-data`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return usagef("--from DIR is required")
			}
			m, err := server.Restore(from, data)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Restored %d files from %s (made %s) into %s.\n", len(m.Files), from, m.CreatedAt.Format("2006-01-02T15:04:05Z"), data)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "keyreg-data", "new or empty data directory to restore into")
	cmd.Flags().StringVar(&from, "from", "", "backup directory (made by keyreg backup)")
	return cmd
}
