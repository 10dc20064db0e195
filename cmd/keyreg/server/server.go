// Package server wires keyreg's parts into `keyreg serve`: the embedded NATS server (or a
// connection to an existing cluster), the JetStream log, the view generations and their
// projector, the command handler, the bootstrap of the root key, and the HTTP API, run as
// a group of actors that stop together.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/oklog/run"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// Config configures a keyreg node.
type Config struct {
	DataDir          string // holds nats/ (embedded server) and projections/
	HTTPAddr         string // host:port; port 0 picks a free one
	NATSURL          string // empty: the embedded server
	Replicas         int    // stream replicas on a cluster (with NATSURL)
	BootstrapKeyFile string // where the first start writes the root secret (0600)
	ShutdownTimeout  time.Duration
	Logger           *slog.Logger
	Stderr           io.Writer // the root secret is printed here, once
	// Ready, when set, is called with the HTTP address once the node serves.
	Ready func(httpAddr string)
}

func (cfg Config) withDefaults() Config {
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(cfg.Stderr, nil))
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	return cfg
}

// Node is a running keyreg node's parts, for tests and tools.
type Node struct {
	Log       events.Log
	Store     *projections.Store
	Projector *projections.Projector
	Commands  *commands.Handler
	API       *httpapi.API

	stream  *Stream
	running atomic.Bool
	caught  atomic.Bool
}

// Run starts a node and serves until ctx is done or a part fails; then it stops every
// part: HTTP drained, projector stopped after its last batch, NATS shut down cleanly.
func Run(ctx context.Context, cfg Config) error {
	n, err := Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Serve(ctx, cfg)
}

// Open starts NATS, opens the log and the current view generation, and bootstraps the
// root key on an empty log.
func Open(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if cfg.DataDir == "" {
		return nil, errors.New("serve: --data is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("serve: data dir: %w", err)
	}
	n := &Node{}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.stream, err = OpenStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	js := n.stream.Log
	gens := replay.Generations{Root: filepath.Join(cfg.DataDir, "projections")}
	cur, err := gens.Current()
	if err != nil {
		return nil, err
	}
	if cur == "" {
		if cur, err = gens.Create(); err != nil {
			return nil, err
		}
		if err := gens.Swap(cur); err != nil {
			return nil, err
		}
	}
	if err := gens.RemoveStale(); err != nil {
		return nil, err
	}
	if n.Store, err = projections.Open(gens.Dir(cur), projections.Options{}); err != nil {
		return nil, err
	}
	n.Projector = projections.NewProjector(n.Store, js)
	metrics := httpapi.NewMetrics(func() float64 {
		last, err := js.LastSeq(context.Background())
		if err != nil {
			return -1
		}
		return float64(last) - float64(n.Store.Checkpoint())
	})
	n.Log = metrics.InstrumentLog(js)
	n.Commands = &commands.Handler{Log: n.Log}
	if err := n.bootstrap(ctx, cfg); err != nil {
		return nil, err
	}
	n.API = httpapi.New(httpapi.Deps{
		Commands: n.Commands, Store: n.Store, Projector: n.Projector, Log: js, Metrics: metrics,
		Logger: cfg.Logger, ReadyCheck: n.ready,
	})
	return n, nil
}

func (n *Node) ready(ctx context.Context) error {
	switch {
	case !n.running.Load():
		return errors.New("the projector is not running")
	case !n.caught.Load():
		return errors.New("the views are catching up with the stream")
	}
	return nil
}

// Close stops NATS and closes the views; it is safe after a failed Open.
func (n *Node) Close() {
	if n.Store != nil {
		n.Store.Close()
	}
	if n.stream != nil {
		n.stream.Close()
	}
}

// Serve runs the projector and the HTTP API until ctx is done or one of them fails, then
// stops both: HTTP drained within cfg.ShutdownTimeout, projector stopped after its batch.
func (n *Node) Serve(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("serve: listen %s: %w", cfg.HTTPAddr, err)
	}
	startLast, err := n.Log.LastSeq(ctx)
	if err != nil {
		ln.Close()
		return err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			n.running.Store(true)
			defer n.running.Store(false)
			err := n.Projector.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("projector: %w", err)
		}, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			if err := n.Projector.WaitFor(ctx, startLast); err != nil {
				return nil
			}
			n.caught.Store(true)
			<-ctx.Done()
			return nil
		}, func(error) { cancel() })
	}
	{
		srv := &http.Server{Handler: n.API, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
		g.Add(func() error {
			cfg.Logger.Info("keyreg serving", "http", ln.Addr().String(), "data", cfg.DataDir, "checkpoint", n.Store.Checkpoint())
			if cfg.Ready != nil {
				cfg.Ready(ln.Addr().String())
			}
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			srv.Shutdown(sctx)
		})
	}
	{
		g.Add(func() error {
			<-ctx.Done()
			cfg.Logger.Info("keyreg shutting down")
			return nil
		}, func(error) { stop() })
	}
	return g.Run()
}

// RootKeyName is the name of the key made on first start.
const RootKeyName = "root"

// bootstrap makes workspace system and a root key with keyreg.admin when the log is empty,
// prints the root secret once to cfg.Stderr and writes it to cfg.BootstrapKeyFile (0600).
// A later start finds the log non-empty and does nothing.
func (n *Node) bootstrap(ctx context.Context, cfg Config) error {
	last, err := n.Log.LastSeq(ctx)
	if err != nil || last != 0 {
		return err
	}
	_, err = n.Commands.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: string(events.SystemWorkspace), Name: "keyreg system"})
	if errors.Is(err, commands.ErrAlreadyExists) {
		return nil // another node bootstrapped first
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	res, err := n.Commands.CreateKey(ctx, commands.CreateKey{
		Workspace: string(events.SystemWorkspace), Name: RootKeyName, Permissions: []string{string(httpapi.PermAdmin)},
		Meta: events.Meta{Reason: "bootstrap: first start on an empty data dir"},
	})
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if cfg.BootstrapKeyFile != "" {
		if err := os.WriteFile(cfg.BootstrapKeyFile, []byte(res.Secret+"\n"), 0o600); err != nil {
			fmt.Fprintf(cfg.Stderr, "keyreg: could not write the root key to %s: %v\n", cfg.BootstrapKeyFile, err)
		}
	}
	fmt.Fprintf(cfg.Stderr, "\nkeyreg: created workspace %q and its root key %s (keyreg.admin).\n"+
		"Its secret is shown this once; keep it safe:\n\n    %s\n\n", events.SystemWorkspace, res.ID, res.Secret)
	return nil
}
