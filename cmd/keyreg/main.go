// Command keyreg is the one binary of keyreg: `keyreg serve` runs a node (embedded NATS
// JetStream, Pebble views, the HTTP API); the other subcommands are the command-line client
// and operator tools. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/keyreg/keyreg/cmd/keyreg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
