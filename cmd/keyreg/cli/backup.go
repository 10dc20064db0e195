package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/server"
)

func newBackupCmd(g *globals) *cobra.Command {
	var data, to string
	cmd := &cobra.Command{
		Use:   "backup --to DIR",
		Short: "Back up a registry: online from a running server (--addr), or a stopped one's data dir (--data)",
		Long: `Online (--addr URL, or $KEYREG_ADDR when --data is not given; needs a keyreg.admin token):
the running server, which goes on serving reads and writes, sends a Pebble checkpoint of its
views (views/), a JetStream snapshot of the stream (stream/), the audit verifier (public) key,
and MANIFEST.json with every file's SHA-256 and the stream sequence the backup reaches. It
holds no secret: not the audit signing key (a restored registry makes a new one and records
it in the log, where the source's key stays recorded: the old checkpoints keep verifying).

Offline (--data DIR): copies the data dir of a stopped keyreg: the stream (nats/), the
serving generation of the views (projections/), and the rest, such as the audit signing
key, with MANIFEST.json. It refuses to run while keyreg serve holds the data dir. Keep such
backups private: they hold the audit signing key.

DIR must be new or empty. keyreg restore restores either kind.`,
		Example: `  keyreg backup --addr http://127.0.0.1:8080 --token "$ADMIN_TOKEN" --to /backups/keyreg-2026-12-02
  keyreg backup --data ./keyreg-data --to /backups/keyreg-2026-11-27
  keyreg restore --from /backups/keyreg-2026-12-02 --data ./keyreg-data-restored`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usagef("--to DIR is required")
			}
			addrSet, dataSet := cmd.Flags().Changed("addr"), cmd.Flags().Changed("data")
			if addrSet && dataSet {
				return usagef("give --addr (online, from a running server) or --data (offline, server stopped), not both")
			}
			if addrSet || (!dataSet && g.getenv("KEYREG_ADDR") != "") {
				return onlineBackup(cmd, g, to)
			}
			m, err := server.Backup(data, to)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Backed up %s to %s: %d files, %d bytes, views generation %s.\n", data, to, len(m.Files), m.Size(), m.Generation)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "keyreg-data", "data directory of the registry (server stopped; offline backup)")
	cmd.Flags().StringVar(&to, "to", "", "new or empty directory to write the backup to")
	return cmd
}

// onlineBackup asks the server for a backup and unpacks it into to.
func onlineBackup(cmd *cobra.Command, g *globals, to string) (err error) {
	_, statErr := os.Stat(to)
	if err := checkBackupDir(to); err != nil {
		return err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		defer func() {
			if err != nil {
				os.Remove(to) // the directory this made, empty again
			}
		}()
	}
	c := g.client()
	body, err := c.Backup(cmd.Context())
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer body.Close()
	m, err := server.Unpack(body, to)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "Backed up %s online to %s: %d files, %d bytes; the stream up to sequence %d, the views at %d.\n",
		c.Addr(), to, len(m.Files), m.Size(), m.StreamSeq, m.ViewsSeq)
	return nil
}

// checkBackupDir fails early, before asking the server, unless to is a new or empty
// directory that can be made.
func checkBackupDir(to string) error {
	entries, err := os.ReadDir(to)
	switch {
	case err == nil && len(entries) > 0:
		return fmt.Errorf("--to %s is not empty: give a new or empty directory", to)
	case err == nil, errors.Is(err, fs.ErrNotExist):
	default:
		return fmt.Errorf("--to %s: %w", to, err)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return fmt.Errorf("--to %s: %w", to, err)
	}
	return nil
}

func newRestoreCmd(g *globals) *cobra.Command {
	var data, from string
	var o server.RestoreOptions
	cmd := &cobra.Command{
		Use:   "restore --from DIR",
		Short: "Restore a backup into a new or empty data directory",
		Long: `Checks a backup made by keyreg backup against its manifest and copies it into --data, which
must be new or empty. An online backup has its stream restored into the data dir's embedded
NATS server (one replica) and its views made the serving ones; keyreg serve catches them up
with the rest of the stream. Start keyreg serve on it afterwards; keyreg replay --verify
confirms the views match the stream.

With --nats-url, an online backup's stream goes into that existing NATS cluster instead
(--replicas replicas; the KEYREG stream must not exist there yet), and --data gets only the
views: start keyreg serve --nats-url URL --data DIR on it. Other nodes of the cluster start on
empty data dirs and build their views from the restored stream.

With --cluster-name, an online backup is staged for a node of an embedded cluster: run it on
each node's new data dir, then start every node with keyreg serve and the same cluster flags
as usual. The first node to find the cluster without a stream restores the staged stream
with the cluster's replicas (--replicas of serve; 3 by default) before anything else is
written; every node then removes its staged copy and catches its views up from the stream.
A restored registry keeps its root key: no node makes a new one.`,
		Example: `  keyreg restore --from /backups/keyreg-2026-11-27 --data ./keyreg-data
  keyreg replay --data ./keyreg-data --verify
  keyreg serve --data ./keyreg-data
  keyreg restore --from /backups/keyreg-2026-12-02 --data ./views --nats-url nats://n1:4222 --replicas 3
  keyreg restore --from /backups/keyreg-2026-12-02 --data ./keyreg-data --cluster-name prod   # on each node`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" {
				return usagef("--from DIR is required")
			}
			if o.ClusterName != "" && o.NATSURL != "" {
				return usagef("give --cluster-name (an embedded cluster) or --nats-url (an existing NATS), not both")
			}
			if o.ClusterName != "" && cmd.Flags().Changed("replicas") {
				return usagef("--replicas is not for --cluster-name: the cluster's nodes restore the stream with keyreg serve --replicas")
			}
			if cmd.Flags().Changed("replicas") && o.NATSURL == "" {
				return usagef("--replicas needs --nats-url (the embedded server keeps one replica)")
			}
			if o.Replicas < 1 || o.Replicas > 5 {
				return usagef("--replicas %d: give 1 to 5", o.Replicas)
			}
			m, err := server.RestoreWith(from, data, o)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "Restored %d files from %s (made %s) into %s.\n", len(m.Files), from, m.CreatedAt.Format("2006-01-02T15:04:05Z"), data)
			if o.ClusterName != "" {
				fmt.Fprintf(g.stdout, "The stream (up to sequence %d at least) is staged in %s: keyreg serve --cluster-name %s, with\n"+
					"--cluster-listen and --cluster-peers, restores it into the cluster at its first start.\n",
					m.StreamSeq, filepath.Join(data, "restore"), o.ClusterName)
				return nil
			}
			if m.Format == server.OnlineFormat {
				fmt.Fprintf(g.stdout, "The stream holds the events up to sequence %d at least; keyreg serve catches the views up from %d.\n"+
					"The audit signing key was not in the backup: keyreg serve makes a new one and records it in the log, beside the source's\n"+
					"(keyreg audit pubkey --all; the source's is also in %s).\n",
					m.StreamSeq, m.ViewsSeq, filepath.Join(from, "audit", "verifier.key"))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "keyreg-data", "new or empty data directory to restore into")
	cmd.Flags().StringVar(&from, "from", "", "backup directory (made by keyreg backup)")
	cmd.Flags().StringVar(&o.NATSURL, "nats-url", "", "restore an online backup's stream into this NATS cluster instead of the embedded server")
	cmd.Flags().StringVar(&o.ClusterName, "cluster-name", "", "stage an online backup for this node of the embedded cluster NAME (keyreg serve --cluster-name NAME restores it)")
	cmd.Flags().IntVar(&o.Replicas, "replicas", 3, "stream replicas when restoring into a cluster (--nats-url)")
	return cmd
}
