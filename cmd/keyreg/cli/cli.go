// Package cli is keyreg's command line: `serve` and the operator tools, and the client
// commands that talk to a keyreg server over its HTTP API (KEYREG_ADDR, KEYREG_TOKEN).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Env reads an environment variable; tests pass a map's lookup.
type Env func(string) string

// Run runs the keyreg command line with args (without the program name) and returns the
// exit code: 0 on success, 1 on failure (after a one-line message on stderr), 2 on bad
// usage.
func Run(ctx context.Context, args []string, getenv Env, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootFor(g)
	suggestEverywhere(root)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	g.saveSequences() // also after a failure: a write may have been answered before it
	if err == nil {
		return 0
	}
	var u usageError
	if errors.As(err, &u) || isCobraUsage(err) {
		fmt.Fprintf(stderr, "keyreg: %s (see %s --help)\n", strings.TrimSuffix(oneLine(err.Error()), "."), cmd.CommandPath())
		return 2
	}
	fmt.Fprintf(stderr, "keyreg: %s\n", oneLine(err.Error()))
	return 1
}

// suggestEverywhere makes every command that only holds subcommands a group (see
// groupRun), so that an unknown subcommand at any level is a usage error suggesting the
// closest ones.
func suggestEverywhere(c *cobra.Command) {
	if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
		c.RunE = groupRun
	}
	for _, sub := range c.Commands() {
		suggestEverywhere(sub)
	}
}

// usageError is a mistake in how a command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least",
		"required flag", "invalid argument", "flag needs an argument", "if any flags in the group"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func newRoot(getenv Env, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	return newRootFor(&globals{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr})
}

// newRootFor returns the root command, whose commands share g.
func newRootFor(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "keyreg",
		Short: "An event-sourced registry of REST API keys, IP allowlists and API identifiers",
		Long: `keyreg keeps a workspace's REST API keys (permissions, IP allowlists), app identifiers and
additional API identifiers. Every change is an event on a NATS JetStream stream; Pebble views
answer queries and verify keys; replay rebuilds the views.

Run a server:   keyreg serve --data ./keyreg-data
Use it:         export KEYREG_ADDR=http://127.0.0.1:8080 KEYREG_TOKEN=kr_...
                keyreg workspace create acme --name "Acme Inc"

Read your writes on any node of a cluster: a write answers with the stream sequence it
reached ("sequence" in --json). keyreg keeps the last one per --addr (in sequences.json under
$KEYREG_CACHE_DIR, else the user cache dir + /keyreg; mode 0600, no secrets), and its next
reads wait until the node that answers has applied it. --min-seq N waits for N instead.`,
		Example: `  keyreg serve --bootstrap-key-file ./root.key
  export KEYREG_TOKEN=$(cat ./root.key)
  keyreg workspace create acme --name "Acme Inc"
  keyreg key create -w acme --name "Prod server" --permission users.track --allow 203.0.113.0/24
  keyreg verify --ip 203.0.113.7 --permission users.track < secret.txt`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Unknown commands get a usage error with suggestions, as in every group.
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err.Error()} })
	root.PersistentFlags().StringVar(&g.addr, "addr", "", "server address (default $KEYREG_ADDR or http://127.0.0.1:8080)")
	root.PersistentFlags().StringVar(&g.token, "token", "", "registry key secret (default $KEYREG_TOKEN)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON for scripts instead of tables")
	root.PersistentFlags().Uint64Var(&g.minSeq, "min-seq", 0, "reads wait until the server has applied this stream `SEQUENCE` (a write's \"sequence\" in --json; default: the last write of this command line to --addr, kept in $KEYREG_CACHE_DIR or the user cache dir)")
	root.AddCommand(newServeCmd(g), newWorkspaceCmd(g), newKeyCmd(g), newIdentifierCmd(g), newVerifyCmd(g))
	root.AddCommand(newReplayCmd(g), newBackupCmd(g), newRestoreCmd(g), newBenchCmd(g))
	root.AddCommand(newWatchCmd(g))
	root.AddCommand(newAuditCmd(g))
	root.AddCommand(newPermissionsCmd(g), newPermissionCmd(g))
	root.AddCommand(newAdminCmd(g))
	root.AddCommand(newSubscriberCmd(g))
	root.AddCommand(newWebhookCmd(g))
	return root
}

// globals are the flags and streams every command shares.
type globals struct {
	getenv         Env
	stdin          io.Reader
	stdout, stderr io.Writer
	addr, token    string
	json           bool
	minSeq         uint64    // --min-seq: 0 for the kept one (startSequence)
	carried        []carried // the clients made, whose sequences are kept (saveSequences)
}
