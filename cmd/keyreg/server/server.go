// Package server wires keyreg's parts into `keyreg serve`: the embedded NATS server (or a
// connection to an existing cluster), the JetStream log, the view generations and their
// projector, the command handler, the bootstrap of the root key, and the HTTP API, run as
// a group of actors that stop together.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/run"

	"github.com/keyreg/keyreg/cmd/keyreg/console"
	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/usage"
	"github.com/keyreg/keyreg/cmd/keyreg/webhook"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/commands/expiry"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// Config configures a keyreg node.
type Config struct {
	DataDir          string // holds nats/ (embedded server) and projections/
	HTTPAddr         string // host:port; port 0 picks a free one
	NATSURL          string // empty: the embedded server
	Replicas         int    // stream replicas on a cluster (with NATSURL or ClusterName)
	BootstrapKeyFile string // where the first start writes the root secret (0600)
	ShutdownTimeout  time.Duration
	Logger           *slog.Logger
	Stderr           io.Writer // the root secret is printed here, once
	// Ready, when set, is called with the HTTP address once the node serves.
	Ready func(httpAddr string)
	// ReadOnly serves the views in ViewsDir (a copy made by keyreg replay --into) for
	// inspection: no projector, and writes answer 405. Event bodies (histories) come from
	// NATSURL when given, else from the data dir's stream if no other process holds it.
	ReadOnly bool
	ViewsDir string
	// NATSListen is where the embedded server listens for subscribers over TCP
	// ("host:port", port 0 picks a free one); empty: in-process only. Each service logs in
	// with credentials of its own (POST /v1/subscribers), confined to its own consumers
	// (natsserver.ConfinedPermissions), at most NATSSubscriberMaxConsumers of them unless it
	// was added with another limit (0: commands.DefaultSubscriberMaxConsumers).
	NATSListen                 string
	NATSSubscriberMaxConsumers int
	// NATSSubscriberUser, when set, is a deprecated shared subscriber with the password
	// in NATSSubscriberPasswordFile (default <data>/nats-subscriber.password, made with a
	// random password on first start), which may read and use any consumer
	// (natsserver.SubscriberPermissions).
	NATSSubscriberUser         string
	NATSSubscriberPasswordFile string
	// SSEMaxPerKey and SSEMaxTotal bound the open event streams (GET .../events) per
	// registry key and in all (0: httpapi's defaults).
	SSEMaxPerKey int
	SSEMaxTotal  int
	// SealEveryEvents and SealInterval say when the sealer appends a signed checkpoint
	// of the audit tree: once this many events are not covered, or when the latest
	// checkpoint is this old and events are not covered (0: 1000 events, 1 minute; a
	// negative value: never; exports still seal what they need).
	SealEveryEvents int
	SealInterval    time.Duration
	// MaxKeysPerWorkspace and MaxIdentifiersPerWorkspace are the quotas of a workspace,
	// revoked keys and retired identifiers included (0: commands.DefaultMaxKeysPerWorkspace
	// and commands.DefaultMaxIdentifiersPerWorkspace; a negative value: no limit).
	MaxKeysPerWorkspace        int
	MaxIdentifiersPerWorkspace int
	// TLSCertFile and TLSKeyFile (PEM), when set, make the HTTP API speak only TLS.
	// NATSTLSCertFile and NATSTLSKeyFile do the same for the NATS listener; when empty,
	// it uses the HTTP API's certificate, so a certificate secures both listeners.
	TLSCertFile, TLSKeyFile         string
	NATSTLSCertFile, NATSTLSKeyFile string
	// TrustedProxies are the peers (such as a TLS-terminating proxy) whose
	// X-Forwarded-For header gives the client address; see httpapi.Deps.TrustedProxies.
	TrustedProxies []netip.Prefix
	// HTTP timeouts (0: the defaults below). ReadTimeout bounds reading a request's
	// headers and body, WriteTimeout answering it; event streams and exports clear both.
	// IdleTimeout bounds a kept-alive connection between requests.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// ClusterName, ClusterListen and ClusterPeers make the embedded server one node of a
	// NATS cluster whose JetStream replicates the stream (Replicas, 0: 3) across its nodes:
	// every node has the same name and peers (nats-route://host:port of every node, its
	// own included) and listens for routes on ClusterListen. NodeName names the node in the
	// cluster at its first start (default: a random name); it is kept in DATA/node-name
	// (NodeNameFile). At start the node waits for the cluster, at most ClusterStartTimeout
	// (0: DefaultClusterStartTimeout). See CheckCluster.
	ClusterName, ClusterListen string
	ClusterPeers               []string
	NodeName                   string
	ClusterStartTimeout        time.Duration
	// VerifySnapshotInterval is how often the node writes a snapshot of its verify index for
	// embedded verifiers (projections/verifier) when its views moved; it also writes one
	// once caught up at start and on shutdown (0: DefaultVerifySnapshotInterval; a
	// negative value: never).
	VerifySnapshotInterval time.Duration
	// MinSeqWait bounds how long a read with min_seq waits for the views to apply it
	// (0: httpapi.DefaultMinSeqWait).
	MinSeqWait time.Duration
	// UsageFlushInterval is how often the node flushes the keys' use that verify records
	// in memory (last used, daily counts) to the usage bucket, at most once per key
	// (0: usage.DefaultInterval; at most usage.MaxInterval).
	UsageFlushInterval time.Duration
	// Expiry says when expiry notices are appended (expiryleaks.go).
	Expiry ExpiryConfig
	// LeakReportKeysFile, when set, serves POST /v1/leaked-keys with the secret scanners'
	// public keys of this file (httpapi.LoadLeakReportKeys).
	LeakReportKeysFile string
	// Webhooks configures webhook deliveries (see WebhookConfig).
	Webhooks WebhookConfig
}

// Default HTTP timeouts.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
)

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
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&cfg.ReadTimeout, DefaultReadTimeout},
		{&cfg.WriteTimeout, DefaultWriteTimeout}, {&cfg.IdleTimeout, DefaultIdleTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	if cfg.NATSTLSCertFile == "" && cfg.NATSTLSKeyFile == "" {
		cfg.NATSTLSCertFile, cfg.NATSTLSKeyFile = cfg.TLSCertFile, cfg.TLSKeyFile
	}
	return cfg
}

// Node is a running keyreg node's parts, for tests and tools. The views (store, projector
// and the API that serves them) can be swapped for a rebuilt generation while serving.
type Node struct {
	Log      events.Log        // the stream, with appends timed; nil read-only without a stream
	Commands *commands.Handler // nil in read-only mode

	cfg     Config
	stream  *Stream
	js      events.Reader
	metrics *httpapi.Metrics
	gens    replay.Generations

	swapMu  sync.RWMutex // held shared by every request, exclusively by a swap
	current atomic.Pointer[views]
	projErr chan error
	caught  atomic.Bool
	rebuild rebuilder
	audit   *auditNode // the sealer; nil when read-only

	ln     net.Listener   // the HTTP listener, bound by Open before the root key is made
	tlsCfg *tls.Config    // the HTTP API's TLS; nil: plain HTTP
	users  *natsUsers     // the NATS users of subscribers; nil without an embedded listener
	usage  *usage.Tracker // the keys' use; nil when read-only

	backupMu sync.Mutex // held by the online backup under way (Backup)

	expiry   *expiry.Scanner        // appends expiry notices; nil when read-only or off
	leakKeys httpapi.LeakReportKeys // of --leak-report-keys; nil: no leak reports
	hooks    *webhook.Manager       // webhook deliveries; nil when read-only
}

// Store returns the serving generation's views.
func (n *Node) Store() *projections.Store { return n.current.Load().store }

// Projector returns the serving generation's projector (nil in read-only mode).
func (n *Node) Projector() *projections.Projector { return n.current.Load().projector }

// API returns the HTTP API of the serving generation.
func (n *Node) API() *httpapi.API { return n.current.Load().api }

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

// Open binds the HTTP listener, starts NATS (and its listener), opens the log and the
// current view generation, and bootstraps the root key on a data dir that has none. Every
// listener is bound before the root key is made, so a busy port fails the start before a
// secret exists and the next start makes it.
func Open(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	n := &Node{cfg: cfg, projErr: make(chan error, 4)}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	n.metrics = httpapi.NewMetrics(n.lag)
	n.rebuild.register(n.metrics)
	if n.tlsCfg, err = loadTLS("--tls-cert", cfg.TLSCertFile, "--tls-key", cfg.TLSKeyFile); err != nil {
		return nil, err
	}
	if _, err := loadTLS("--nats-tls-cert", cfg.NATSTLSCertFile, "--nats-tls-key", cfg.NATSTLSKeyFile); err != nil {
		return nil, err
	}
	if n.ln, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("serve: HTTP address %s: %w", cfg.HTTPAddr, listenErr(err))
	}
	if cfg.ReadOnly {
		return n, n.openReadOnly(ctx)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("serve: --data is required")
	}
	if cfg.clustered() {
		stop := serveWaiting(n.ln, n.tlsCfg, cfg.Logger)
		n.stream, err = OpenStream(ctx, cfg)
		stop()
	} else {
		n.stream, err = OpenStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	n.js = n.stream.Log
	n.gens = generations(cfg)
	cur, err := n.gens.Current()
	if err != nil {
		return nil, err
	}
	if cur == "" {
		if cur, err = n.gens.Create(); err != nil {
			return nil, err
		}
		if err := n.gens.Swap(cur); err != nil {
			return nil, err
		}
	}
	if err := n.gens.RemoveStale(); err != nil {
		return nil, err
	}
	// Group commit: concurrent commands share one atomic batch, one fsync.
	n.Log = n.metrics.InstrumentLog(events.NewGroupLog(n.stream.Log))
	n.Commands = &commands.Handler{Log: n.Log,
		// State from the serving views: one local read, checked by the append (see commands.ViewState).
		State:                      commands.ViewState{Log: n.Log, Views: n.commandViews},
		MaxKeysPerWorkspace:        quota(cfg.MaxKeysPerWorkspace, commands.DefaultMaxKeysPerWorkspace),
		MaxIdentifiersPerWorkspace: quota(cfg.MaxIdentifiersPerWorkspace, commands.DefaultMaxIdentifiersPerWorkspace)}
	if n.stream.nats != nil && cfg.NATSListen != "" {
		n.users = newNATSUsers(n.stream.nats, n.stream.opts, n.stream.Log, cfg.Logger)
	}
	if err := n.openAudit(ctx); err != nil {
		return nil, err
	}
	if err := n.openUsage(ctx); err != nil {
		return nil, err
	}
	if err := n.openExpiry(ctx); err != nil {
		return nil, err
	}
	if err := n.openLeakReports(); err != nil {
		return nil, err
	}
	if err := n.openWebhooks(ctx); err != nil {
		return nil, err
	}
	// One fsync per change, the stream's: the views re-apply from it what a crash takes.
	store, err := projections.Open(n.gens.Dir(cur), projections.Options{LazySync: true})
	if errors.Is(err, projections.ErrFormat) {
		return nil, fmt.Errorf("serve: %w; with this server stopped, run: keyreg replay --data %s", err, cfg.DataDir)
	}
	if err != nil {
		return nil, err
	}
	n.current.Store(n.newViews(cur, store))
	if err := n.bootstrap(ctx, cfg); err != nil {
		return nil, err
	}
	n.registerAuditKey(ctx)
	if n.users != nil {
		if err := n.users.load(ctx); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// commandViews returns the serving generation's views, for the commands' state (nil before
// the first generation is open).
func (n *Node) commandViews() commands.Views {
	if v := n.current.Load(); v != nil {
		return v.store
	}
	return nil
}

// openReadOnly opens a copy of the views for inspection.
func (n *Node) openReadOnly(ctx context.Context) error {
	if n.cfg.ViewsDir == "" {
		return errors.New("serve: --read-only needs --views DIR (made by keyreg replay --into DIR)")
	}
	store, err := projections.Open(n.cfg.ViewsDir, projections.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("serve: read-only views: %w", err)
	}
	n.js = noLog{}
	if _, statErr := os.Stat(filepath.Join(n.cfg.DataDir, "nats")); n.cfg.NATSURL != "" || (n.cfg.DataDir != "" && statErr == nil) {
		if n.stream, err = OpenStream(ctx, n.cfg); err == nil {
			n.js = n.stream.Log
		} else {
			n.cfg.Logger.Warn("serving without event bodies: histories answer 503", "err", err)
		}
	}
	n.caught.Store(true)
	n.current.Store(n.newViews("", store))
	return nil
}

// noLog stands in for the stream when a read-only node has none.
type noLog struct{}

var errNoLog = fmt.Errorf("%w: this read-only server has no event stream (start it with --nats-url or a free --data)", httpapi.ErrUnavailable)

func (noLog) LastSeq(context.Context) (uint64, error)                               { return 0, errNoLog }
func (noLog) Get(context.Context, uint64) (events.Record, error)                    { return events.Record{}, errNoLog }
func (noLog) Read(context.Context, string, uint64, func(events.Record) error) error { return errNoLog }
func (noLog) Follow(context.Context, uint64, func(events.Record) error) error       { return errNoLog }

// lag is how many stream messages the serving views have not applied yet.
func (n *Node) lag() float64 {
	v := n.current.Load()
	if v == nil || n.stream == nil {
		return 0
	}
	last, err := n.js.LastSeq(context.Background())
	if err != nil {
		return -1
	}
	return float64(last) - float64(v.store.Checkpoint())
}

func (n *Node) ready(ctx context.Context) error {
	v := n.current.Load()
	switch {
	case v.projector != nil && !v.running.Load():
		return errors.New("the projector is not running")
	case !n.caught.Load():
		return errors.New("the views are catching up with the stream")
	}
	return nil
}

// Close closes the views and stops NATS; it is safe after a failed Open.
func (n *Node) Close() {
	if n.ln != nil {
		n.ln.Close()
	}
	if v := n.current.Load(); v != nil {
		v.stop()
	}
	if n.usage != nil {
		n.usage.Close()
	}
	if n.stream != nil {
		n.stream.Close()
	}
}

// Serve runs the projector and the HTTP API until ctx is done or one of them fails, then
// stops both: HTTP drained within cfg.ShutdownTimeout, projector stopped after its batch.
func (n *Node) Serve(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	ln := n.ln
	if ln == nil {
		return errors.New("serve: the node has no HTTP listener (use Open)")
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	// The projector and the requests run on drain, which outlives ctx until the HTTP
	// server has drained: a request in flight at shutdown gets its answer, its change
	// applied.
	drain, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDrain()
	v := n.current.Load()
	if v.projector != nil {
		startLast, err := n.js.LastSeq(ctx)
		if err != nil {
			ln.Close()
			return err
		}
		cfg.Logger.Info("views opened", "generation", v.gen, "checkpoint", v.store.Checkpoint(), "stream", startLast)
		v.start(drain, n.projErr)
		if v.store.Recovered() {
			// A crash may have taken the views' latest batches, changes already answered:
			// apply them again before answering anything, so that no read goes back.
			cfg.Logger.Info("the views were not closed cleanly: catching up with the stream before serving", "checkpoint", v.store.Checkpoint(), "stream", startLast)
			if err := v.projector.WaitFor(ctx, startLast); err != nil {
				ln.Close()
				if ctx.Err() != nil {
					return nil // stopped while catching up
				}
				return fmt.Errorf("serve: catch up after a crash: %w", err)
			}
		}
		go func() {
			if v.projector.WaitFor(ctx, startLast) == nil {
				n.caught.Store(true)
			}
		}()
	}
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			select {
			case err := <-n.projErr:
				return fmt.Errorf("projector: %w", err)
			case <-ctx.Done():
				return nil
			}
		}, func(error) { cancel() })
	}
	{
		// The web console at "/", in front of the API (package console).
		handler := console.New(http.HandlerFunc(n.serveHTTP), console.Options{Secure: n.tlsCfg != nil})
		srv := &http.Server{Handler: handler, TLSConfig: n.tlsCfg,
			ReadHeaderTimeout: cfg.ReadHeaderTimeout, ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout,
			ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn), BaseContext: func(net.Listener) context.Context { return drain }}
		srv.RegisterOnShutdown(func() { n.API().Close() }) // end event streams: Shutdown waits for handlers
		g.Add(func() error {
			cfg.Logger.Info("keyreg serving", "http", ln.Addr().String(), "tls", n.tlsCfg != nil, "data", cfg.DataDir, "checkpoint", n.Store().Checkpoint(), "read_only", cfg.ReadOnly)
			if cfg.Ready != nil {
				cfg.Ready(ln.Addr().String())
			}
			serve := srv.Serve
			if n.tlsCfg != nil {
				serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") }
			}
			if err := serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
	if n.audit != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return n.runSealer(ctx) }, func(error) { cancel() })
	}
	if n.users != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return n.users.run(ctx) }, func(error) { cancel() })
	}
	if n.usage != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return n.usage.Run(ctx) }, func(error) { cancel() })
	}
	if n.expiry != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return n.expiry.Run(ctx) }, func(error) { cancel() })
	}
	if n.hooks != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return n.hooks.Run(ctx) }, func(error) { cancel() })
	}
	if snap, err := n.newSnapshotter(cfg); err != nil {
		return err
	} else if snap != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return snap.run(ctx) }, func(error) { cancel() })
	}
	err := g.Run()
	n.rebuild.wait()
	return err
}

// quota returns a configured quota: def when 0, no limit (0) when negative.
func quota(configured, def int) int {
	switch {
	case configured == 0:
		return def
	case configured < 0:
		return 0
	}
	return configured
}
