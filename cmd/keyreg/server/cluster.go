package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// NodeNameFile holds, in the data dir of a node of an embedded cluster, the node's name in
// the cluster (Config.NodeName). It is written at the node's first start and marks the
// data dir as a cluster node's: it then only starts with the cluster flags.
const NodeNameFile = "node-name"

// DefaultClusterStartTimeout bounds how long a node of an embedded cluster waits at start
// for the cluster (a JetStream meta leader, then the stream).
const DefaultClusterStartTimeout = 5 * time.Minute

// clustered reports whether the node runs an embedded cluster.
func (cfg Config) clustered() bool { return cfg.ClusterName != "" }

// replicas returns the replicas of the streams and buckets keyreg makes: Replicas (at
// least 1) on a cluster, embedded or not (on an embedded cluster, 0 means 3, or every node
// of a smaller one); 1 on a server of its own.
func (cfg Config) replicas() int {
	switch {
	case cfg.NATSURL == "" && !cfg.clustered():
		return 1
	case cfg.clustered() && cfg.Replicas == 0:
		return min(3, len(cfg.ClusterPeers))
	}
	return max(cfg.Replicas, 1)
}

// CheckCluster checks the cluster settings of cfg (--cluster-name, --cluster-listen,
// --cluster-peers, --node-name, --replicas), naming the flag and the value at fault.
func CheckCluster(cfg Config) error {
	set := cfg.ClusterName != "" || cfg.ClusterListen != "" || len(cfg.ClusterPeers) > 0 || cfg.NodeName != ""
	if !set {
		return nil
	}
	switch {
	case cfg.NATSURL != "":
		return fmt.Errorf("--cluster-name, --cluster-listen, --cluster-peers and --node-name make an embedded cluster: not with --nats-url %s", cfg.NATSURL)
	case cfg.ReadOnly:
		return errors.New("--cluster-name, --cluster-listen, --cluster-peers and --node-name are not for --read-only")
	case cfg.ClusterName == "":
		return errors.New("--cluster-listen, --cluster-peers and --node-name need --cluster-name")
	case cfg.ClusterListen == "":
		return fmt.Errorf("--cluster-name %s needs --cluster-listen HOST:PORT (this node's route listener)", cfg.ClusterName)
	case len(cfg.ClusterPeers) == 0:
		return fmt.Errorf("--cluster-name %s needs --cluster-peers nats-route://HOST:PORT,... (every node's route URL, this node's own included)", cfg.ClusterName)
	}
	if err := checkName(cfg.ClusterName); err != nil {
		return fmt.Errorf("--cluster-name %q: %w", cfg.ClusterName, err)
	}
	if cfg.NodeName != "" {
		if err := checkName(cfg.NodeName); err != nil {
			return fmt.Errorf("--node-name %q: %w", cfg.NodeName, err)
		}
	}
	lhost, lport, err := net.SplitHostPort(cfg.ClusterListen)
	if err != nil || lport == "0" {
		return fmt.Errorf("--cluster-listen %q: want HOST:PORT with a port other than 0", cfg.ClusterListen)
	}
	self, seen := false, map[string]bool{}
	for _, p := range cfg.ClusterPeers {
		hp, err := natsserver.ParseRoute(strings.TrimSpace(p))
		if err != nil {
			return fmt.Errorf("--cluster-peers %q: %v", p, err)
		}
		if seen[hp] {
			return fmt.Errorf("--cluster-peers %q: given twice", p)
		}
		seen[hp] = true
		host, port, _ := net.SplitHostPort(hp)
		if port == lport && (host == lhost || unspecified(lhost)) {
			self = true
		}
	}
	if !self {
		return fmt.Errorf("--cluster-listen %s is not among --cluster-peers %s: list every node's route URL, this node's own included",
			cfg.ClusterListen, strings.Join(cfg.ClusterPeers, ","))
	}
	if cfg.Replicas > len(cfg.ClusterPeers) {
		return fmt.Errorf("--replicas %d: more than the %d nodes of --cluster-peers", cfg.Replicas, len(cfg.ClusterPeers))
	}
	if cfg.Replicas < 0 {
		return fmt.Errorf("--replicas %d: want 1 or more (3 for a cluster of 3)", cfg.Replicas)
	}
	return nil
}

// unspecified reports whether host listens on every address (such as 0.0.0.0).
func unspecified(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// checkName checks a cluster or node name: 1 to 64 letters, digits, - and _.
func checkName(s string) error {
	if len(s) == 0 || len(s) > 64 {
		return errors.New("want 1 to 64 letters, digits, - and _")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return errors.New("want 1 to 64 letters, digits, - and _")
		}
	}
	return nil
}

// clusterNodeName returns the node's name in the cluster: the one kept in
// DATA/NodeNameFile, or, at the node's first start, flag (or a new random name), which it
// keeps there. A data dir that already holds a stream of a server on its own is refused:
// a cluster starts from empty data dirs.
func clusterNodeName(dataDir, flag string) (string, error) {
	file := filepath.Join(dataDir, NodeNameFile)
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		name := strings.TrimSpace(string(b))
		if err := checkName(name); err != nil {
			return "", fmt.Errorf("node name %q in %s: %w", name, file, err)
		}
		if flag != "" && flag != name {
			return "", fmt.Errorf("--node-name %s: this data dir's node is %s (%s); a node keeps its name", flag, name, file)
		}
		return name, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("node name: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nats")); err == nil {
		return "", fmt.Errorf("--cluster-name: %s holds the stream of a keyreg server on its own; a cluster starts from empty data dirs", dataDir)
	}
	name := flag
	if name == "" {
		name = "keyreg-" + strings.ToLower(rand.Text()[:10])
	}
	if err := writeFileSync(file, []byte(name+"\n")); err != nil {
		return "", fmt.Errorf("node name: %w", err)
	}
	return name, nil
}

// writeFileSync writes a new file and syncs it and its directory.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// refuseClusterDataDir fails when dataDir is a cluster node's (it has a NodeNameFile):
// a server of its own on it would write a copy of the stream that the cluster never sees.
func refuseClusterDataDir(dataDir string) error {
	if _, err := os.Stat(filepath.Join(dataDir, NodeNameFile)); err == nil {
		return fmt.Errorf("%s is the data dir of a node of an embedded cluster (it has %s): start it with keyreg serve --cluster-name, --cluster-listen and --cluster-peers", dataDir, NodeNameFile)
	}
	return nil
}

// clusterOptions returns the embedded server's cluster options for cfg.
func clusterOptions(cfg Config) (*natsserver.Cluster, error) {
	name, err := clusterNodeName(cfg.DataDir, cfg.NodeName)
	if err != nil {
		return nil, err
	}
	peers := make([]string, len(cfg.ClusterPeers))
	for i, p := range cfg.ClusterPeers {
		peers[i] = strings.TrimSpace(p)
	}
	return &natsserver.Cluster{Name: cfg.ClusterName, ServerName: name, Listen: cfg.ClusterListen, Peers: peers}, nil
}

// clusterLogEvery is how often a node waiting for its cluster says what it waits for.
const clusterLogEvery = 5 * time.Second

// openClusterLog waits, at most cfg.ClusterStartTimeout, until the embedded cluster has a
// JetStream meta leader and the KEYREG stream can be opened (made with cfg.replicas() on
// the cluster's first start, which needs that many nodes up, or restored from a backup
// staged in the data dir: see restorePending), and opens it. It logs what
// it waits for every few seconds.
func openClusterLog(ctx context.Context, s *natsserver.Server, nc *nats.Conn, cfg Config) (*natslog.Log, error) {
	timeout := cfg.ClusterStartTimeout
	if timeout <= 0 {
		timeout = DefaultClusterStartTimeout
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logger := cfg.Logger
	start := time.Now()
	var lastLog time.Time
	say := func(msg string, args ...any) {
		if logger != nil && time.Since(lastLog) >= clusterLogEvery {
			lastLog = time.Now()
			logger.Info(msg, append(args, "cluster", cfg.ClusterName, "node", s.Name(), "waited", time.Since(start).Round(time.Second))...)
		}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	wait := func(what string, err error) error {
		select {
		case <-tick.C:
			return nil
		case <-ctx.Done():
			if parent.Err() != nil {
				return parent.Err() // stopped while waiting
			}
			if err == nil {
				err = ctx.Err()
			}
			return fmt.Errorf("cluster %s: %s after %s (are a majority of --cluster-peers %s up and reachable?): %w",
				cfg.ClusterName, what, timeout, strings.Join(cfg.ClusterPeers, ","), err)
		}
	}
	for {
		leader, routes := natsserver.MetaLeader(s)
		if leader != "" {
			if logger != nil && !lastLog.IsZero() {
				logger.Info("cluster: JetStream meta leader elected", "leader", leader, "routes", routes)
			}
			break
		}
		say("cluster: waiting for a JetStream meta leader (a majority of the nodes)", "routes", routes, "peers", len(cfg.ClusterPeers))
		if err := wait("no JetStream meta leader", nil); err != nil {
			return nil, err
		}
	}
	// A restore staged by keyreg restore --cluster-name goes in before the stream would be
	// made empty.
	pending, err := readPendingRestore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	lastLog = time.Time{}
	for pending != nil {
		leader, routes := natsserver.MetaLeader(s)
		done, fatal, err := restorePending(ctx, nc, pending, cfg.replicas(), leader == s.Name())
		if fatal != nil {
			return nil, fmt.Errorf("cluster %s: restore: %w", cfg.ClusterName, fatal)
		}
		if done {
			if logger != nil {
				logger.Info("cluster: the stream holds the restored backup", "backup", pending.Backup, "stream_seq", pending.StreamSeq)
			}
			break
		}
		say("cluster: restoring the stream from the staged backup (on the first start, until --replicas nodes are up)", "err", err, "leader", leader, "routes", routes, "replicas", cfg.replicas())
		if err := wait("the staged backup is not restored", err); err != nil {
			return nil, err
		}
	}
	lastLog = time.Time{}
	for {
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		log, err := natslog.Open(tctx, nc, natslog.Options{Replicas: cfg.replicas(), Logger: cfg.Logger})
		if err == nil {
			// A stream just made or elected may not answer reads yet (direct gets: 503).
			err = log.Read(tctx, events.SubjectPrefix+".>", 1, func(events.Record) error { return errStop })
			if errors.Is(err, errStop) {
				err = nil
			}
		}
		tcancel()
		if err == nil {
			return log, nil
		}
		leader, routes := natsserver.MetaLeader(s)
		say("cluster: waiting for the stream to answer (on the first start, until --replicas nodes are up)", "err", err, "leader", leader, "routes", routes, "replicas", cfg.replicas())
		if err := wait("the stream is not available", err); err != nil {
			return nil, err
		}
	}
}

// serveWaiting answers on ln while the node waits for its cluster in Open: /healthz with
// 200 (the process is alive), anything else with 503 and Retry-After, so that neither a
// liveness probe nor a client hangs on a bound listener that nobody serves. stop ends it
// and leaves ln open, for Serve; a request in flight is answered first.
func serveWaiting(ln net.Listener, tlsCfg *tls.Config, logger *slog.Logger) (stop func()) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return func() {}
	}
	wl := &waitingListener{TCPListener: tl}
	srv := &http.Server{ReadHeaderTimeout: DefaultReadHeaderTimeout, WriteTimeout: DefaultWriteTimeout, TLSConfig: tlsCfg,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"status":"ok","checkpoint":0,"detail":"waiting for the cluster"}`)
				return
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"title":"Service Unavailable","status":503,"code":"unavailable","detail":"the node is starting: it waits for a majority of its cluster and the stream"}`)
		})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if tlsCfg != nil {
			srv.ServeTLS(wl, "", "")
		} else {
			srv.Serve(wl)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultWriteTimeout)
		defer cancel()
		srv.Shutdown(ctx) // closes wl: wakes its Accept without closing ln
		<-done
		tl.SetDeadline(time.Time{})
	}
}

// waitingListener is a TCP listener whose Close only wakes Accept (with a deadline in the
// past) and leaves the socket open for the server that serves next.
type waitingListener struct {
	*net.TCPListener
	mu     sync.Mutex
	closed bool
}

// Accept accepts a connection until Close.
func (l *waitingListener) Accept() (net.Conn, error) {
	c, err := l.TCPListener.Accept()
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		if c != nil {
			c.Close() // accepted as it closed: the client retries
		}
		return nil, net.ErrClosed
	}
	return c, err
}

// Close makes Accept return net.ErrClosed; the socket stays open.
func (l *waitingListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	return l.TCPListener.SetDeadline(time.Now())
}

// startTry bounds one try of a JetStream request at start on a cluster.
const startTry = 10 * time.Second

// retryStart runs fn, on a cluster (embedded, or a NATS cluster of --nats-url) again and again (each try bounded by startTry) until it
// succeeds or cfg.ClusterStartTimeout has passed, saying every few seconds what it waits
// for: right after the cluster elects its leaders, making a replicated bucket or stream
// may time out once or twice. On a server of its own it runs fn once.
func retryStart(ctx context.Context, cfg Config, what string, fn func(context.Context) error) error {
	if !cfg.clustered() && cfg.NATSURL == "" {
		return fn(ctx)
	}
	timeout := cfg.ClusterStartTimeout
	if timeout <= 0 {
		timeout = DefaultClusterStartTimeout
	}
	deadline := time.Now().Add(timeout)
	var lastLog time.Time
	for {
		tctx, cancel := context.WithTimeout(ctx, startTry)
		err := fn(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		if cfg.Logger != nil && time.Since(lastLog) >= clusterLogEvery {
			lastLog = time.Now()
			cfg.Logger.Info("cluster: waiting for "+what, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readsCaughtUp waits, at most a minute, until a read of the stream's last message
// (which the stream leader gives) succeeds through log's reads, which a replica of this
// node answers: after it, what the node reads includes everything stored before the call.
func readsCaughtUp(ctx context.Context, log events.Reader) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	last, err := log.LastSeq(ctx)
	if err != nil || last == 0 {
		return err
	}
	for {
		_, err := log.Get(ctx, last)
		if err == nil {
			return nil
		}
		if !errors.Is(err, events.ErrNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("this node's replica of the stream has not reached sequence %d: %w", last, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
