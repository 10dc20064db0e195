package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/keyreg/keyreg/cmd/keyreg/bench"
)

func newBenchCmd(g *globals) *cobra.Command {
	opts := bench.Options{}
	var httpOpts benchHTTPFlags
	var million bench.MillionOptions
	var cluster bool
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
  keyreg bench --events 10000 --publishers 64
  keyreg bench --http
  keyreg bench --http --addr 127.0.0.1:8080 --token "$(cat root.key)"
  keyreg bench --keys 1000000
  keyreg bench --cluster`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cluster {
				return runBenchCluster(cmd, g, httpOpts.opts, opts.Dir)
			}
			if httpOpts.on {
				return runBenchHTTP(cmd, g, httpOpts, opts.Dir)
			}
			if million.Keys > 0 {
				return runMillion(cmd, g, million, opts.Dir)
			}
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
	httpOpts.add(cmd)
	cmd.Flags().IntVar(&million.Keys, "keys", 0, "instead: build this many keys through the log (1000000 for the million-key run) and measure a keyreg serve child on them: memory, verify latency, start-ups, replay, embedded verifier start-up")
	cmd.Flags().BoolVar(&cluster, "cluster", false, "instead: start a cluster of three keyreg serve children (embedded NATS, R3 stream) and a single node, and print durable HTTP writes on each (--http-clients, --http-keys, --http-writes), the pause in writes when the stream leader is killed, and its restart")
	cmd.Flags().IntVar(&million.Verifies, "verifies", 20000, "with --keys: HTTP verifies measured per start")
	return cmd
}

// benchHTTPFlags are the flags of `keyreg bench --http`.
type benchHTTPFlags struct {
	on   bool
	opts bench.HTTPOptions
}

func (f *benchHTTPFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.on, "http", false, "drive a real keyreg serve end to end over HTTP instead (a child process on 127.0.0.1, or --addr)")
	fl.StringVar(&f.opts.Addr, "addr", "", "with --http: drive this running server (host:port or URL) instead of starting one")
	fl.StringVar(&f.opts.Token, "token", "", "with --addr: the secret of a key with keyreg.admin")
	fl.IntVar(&f.opts.Clients, "http-clients", 64, "with --http: concurrent keep-alive writers")
	fl.IntVar(&f.opts.Keys, "http-keys", 256, "with --http: keys the concurrent writers update")
	fl.IntVar(&f.opts.Writes, "http-writes", 2000, "with --http: writes of each run from many clients")
	fl.IntVar(&f.opts.SoloWrites, "http-solo-writes", 500, "with --http: writes of each run from one client")
	fl.IntVar(&f.opts.VerifyClients, "http-verify-clients", 16, "with --http: clients of the verify and bare-handler runs")
	fl.IntVar(&f.opts.Verifies, "http-verifies", 20000, "with --http: requests of the verify and bare-handler runs")
	fl.StringVar(&f.opts.PeerScript, "peer-script", "", "with --http: also run this peer script (postgres-peer.sh) and print the ratios to its rates")
}

// runBenchHTTP runs `keyreg bench --http` and prints a line (or, with --json, an object)
// per figure.
func runBenchHTTP(cmd *cobra.Command, g *globals, f benchHTTPFlags, dir string) error {
	opts := f.opts
	if dir == "" {
		d, cleanup, err := bench.TempDir()
		if err != nil {
			return err
		}
		defer cleanup()
		dir = d
	}
	opts.Dir = dir
	if !g.json {
		opts.PeerOut = g.stdout
		target := "a keyreg serve child"
		if opts.Addr != "" {
			target = opts.Addr
		}
		fmt.Fprintf(g.stdout, "keyreg bench --http: %s, %d clients over %d keys, %d writes (1 client: %d), in %s\n",
			target, opts.Clients, opts.Keys, opts.Writes, opts.SoloWrites, dir)
	}
	var results []bench.HTTPResult
	err := bench.RunHTTP(cmd.Context(), opts, func(r bench.HTTPResult) {
		if g.json {
			results = append(results, r)
			return
		}
		bench.PrintHTTP(g.stdout, r)
	})
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(results)
	}
	return nil
}

// runMillion is `keyreg bench --keys N`.
func runMillion(cmd *cobra.Command, g *globals, opts bench.MillionOptions, dir string) error {
	if dir == "" {
		d, cleanup, err := bench.TempDir()
		if err != nil {
			return err
		}
		defer cleanup()
		dir = d
	}
	opts.Dir, opts.Progress = dir, g.stderr
	fmt.Fprintf(g.stdout, "keyreg bench: %d keys, in %s\n", opts.Keys, dir)
	return bench.Million(cmd.Context(), opts, func(f bench.Figure) { bench.PrintFigure(g.stdout, f) })
}

// runBenchCluster is `keyreg bench --cluster`.
func runBenchCluster(cmd *cobra.Command, g *globals, h bench.HTTPOptions, dir string) error {
	if dir == "" {
		d, cleanup, err := bench.TempDir()
		if err != nil {
			return err
		}
		defer cleanup()
		dir = d
	}
	opts := bench.ClusterOptions{Dir: dir, Clients: h.Clients, Keys: h.Keys, Writes: h.Writes}
	if !g.json {
		fmt.Fprintf(g.stdout, "keyreg bench --cluster: a single node, then 3 nodes (R3), %d clients over %d keys, %d writes, in %s\n",
			opts.Clients, opts.Keys, opts.Writes, dir)
	}
	var results []any
	err := bench.RunCluster(cmd.Context(), opts, func(r bench.ClusterReport) {
		switch {
		case g.json && r.Result != nil:
			results = append(results, r.Result)
		case g.json:
			results = append(results, map[string]any{"what": r.Figure.What, "value": r.Figure.Value, "unit": r.Figure.Unit})
		case r.Result != nil:
			bench.PrintHTTP(g.stdout, *r.Result)
		default:
			bench.PrintFigure(g.stdout, *r.Figure)
		}
	})
	if err != nil {
		return err
	}
	if g.json {
		return g.printJSON(results)
	}
	return nil
}
