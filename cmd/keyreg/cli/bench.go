package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
)

func newBenchCmd(g *globals) *cobra.Command {
	opts := bench.Options{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure this machine: appends (fsync on), commands, replay and verify",
		Long: `Runs keyreg's parts on a fresh embedded NATS server in a temporary directory (or --dir, which
must be new or empty), with fsync before every acknowledgement as in production, and prints
what each does per second: appends one at a time, from concurrent publishers (with and
without group commit) and in atomic batches; CreateKey commands and allowlist updates from 1
and from --publishers clients, with and without group commit, and for the updates where a
write's time goes (auth, state read, decide, append and its fsync, the wait for the views and
their fsync, the response); a drain of the stream; a replay into Pebble views; and Verify in
process. The figures are this machine's, at this moment.`,
		Example: `  keyreg bench
  keyreg bench --events 10000 --publishers 64`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Dir == "" {
				dir, cleanup, err := bench.TempDir()
				if err != nil {
					return err
				}
				defer cleanup()
				opts.Dir = dir
			}
			fmt.Fprintf(g.stdout, "keyreg bench: %d events per append measurement, %d publishers, in %s\n", opts.Events, opts.Publishers, opts.Dir)
			return bench.Run(cmd.Context(), opts, func(r bench.Result) { bench.Print(g.stdout, r) })
		},
	}
	cmd.Flags().IntVar(&opts.Events, "events", 2000, "events per append measurement (batches append ten times as many)")
	cmd.Flags().IntVar(&opts.Publishers, "publishers", 16, "concurrent publishers and command clients")
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "directory for the throwaway stream and views (default: a temporary one)")
	return cmd
}
