package natsserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server is a running embedded NATS server: nats-server's own type, named here so that
// its users need not import nats-server.
type Server = server.Server

// Options configure the embedded NATS server (Start).
type Options struct {
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// Listen is "host:port" for clients over TCP; empty means in-process only.
	Listen string
	// NoSync turns off fsync before acknowledging. Only benchmarks and throwaway
	// rebuilds use it: with it an acknowledged append may be lost in a crash.
	NoSync bool
	// Subscribers may connect over TCP with read-only rights (SubscriberPermissions).
	// With a Listen address or any subscriber, the server requires a user: TCP clients
	// must be one of Subscribers; keyreg's in-process connection keeps every right.
	Subscribers []Subscriber
	// TLS, when set, makes TCP clients on Listen speak TLS (required; the in-process
	// connection needs none).
	TLS *tls.Config
	// Cluster, when set, makes the server one node of a NATS cluster whose JetStream
	// replicates streams across its nodes; nil: a server on its own.
	Cluster *Cluster
}

// Cluster makes an embedded server one node of a NATS cluster with JetStream. Every node
// is given the same Name and Peers, and a Listen and ServerName of its own.
type Cluster struct {
	// Name is the cluster's name, the same on every node.
	Name string
	// ServerName names this node in the cluster: unique among the nodes, and the same
	// across restarts (JetStream knows its peers by name).
	ServerName string
	// Listen is "host:port" where this node accepts routes from the other nodes.
	Listen string
	// Peers are the route URLs (nats-route://host:port) of every node, this one's
	// included: the server ignores the route to itself, and counts the peers for the
	// quorum of the first start.
	Peers []string
}

// ParseRoute parses a route URL, nats-route://host:port with a host and a port from 1 to
// 65535, and returns its host:port.
func ParseRoute(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "nats-route" {
		return "", fmt.Errorf("want nats-route://host:port")
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("want nats-route://host:port and nothing more")
	}
	if err := checkHostPort(u.Host); err != nil {
		return "", err
	}
	return u.Host, nil
}

// checkHostPort checks that hostport is "host:port" with a host and a port from 1 to
// 65535.
func checkHostPort(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if host == "" {
		return fmt.Errorf("want host:port: no host")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("want host:port with a port from 1 to 65535")
	}
	return nil
}

// MetaLeader returns the server name of the JetStream meta leader of s's cluster as s
// knows it ("" while there is none), and how many other nodes s has routes to.
func MetaLeader(s *Server) (leader string, routes int) {
	routes = s.NumRoutes()
	info, err := s.Jsz(&server.JSzOptions{})
	if err != nil || info.Meta == nil {
		return "", routes
	}
	return info.Meta.Leader, routes
}

// Start starts an embedded NATS server with JetStream under opts.StoreDir. By
// default it fsyncs every message before acknowledging it (SyncAlways). Its streams have
// no limit on consumers (nats-server's default is 1,000 per stream): keyreg's own
// followers must never be refused one, and each confined subscriber has a limit of its own
// (Subscriber.MaxConsumers).
func Start(opts Options) (*Server, error) {
	so, err := serverOptions(opts)
	if err != nil {
		return nil, err
	}
	if so.Port > 0 {
		if err := checkListen(opts.Listen); err != nil {
			return nil, err // the server would only say "not ready" after 30s
		}
	}
	if opts.Cluster != nil {
		if err := checkListen(opts.Cluster.Listen); err != nil {
			return nil, fmt.Errorf("natsserver: cluster %w", err)
		}
	}
	s, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("natsserver: start nats: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("natsserver: start nats: not ready after 30s")
	}
	return s, nil
}

// ReloadSubscribers replaces the subscribers of s, a server started by Start(opts)
// with the same options but for Subscribers, while it runs. Connections of users that are
// gone are closed; new users may connect as soon as it returns.
func ReloadSubscribers(s *Server, opts Options) error {
	if opts.Listen != "" || opts.Cluster != nil {
		opts.Listen = s.Addr().String() // the port it got, when it asked for port 0
	}
	so, err := serverOptions(opts)
	if err != nil {
		return err
	}
	if err := s.ReloadOptions(so); err != nil {
		return fmt.Errorf("natsserver: reload nats subscribers: %w", err)
	}
	return nil
}

// serverOptions returns the nats-server options of opts.
func serverOptions(opts Options) (*server.Options, error) {
	if opts.StoreDir == "" {
		return nil, fmt.Errorf("natsserver: start nats: StoreDir is required")
	}
	so := &server.Options{
		ServerName: "keyreg",
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		SyncAlways: !opts.NoSync,
		NoSigs:     true,
		NoLog:      true,
		DontListen: opts.Listen == "",
		// A big max_payload is not needed: an event is at most a few tens of KiB.
		MaxPayload: 8 << 20,
	}
	so.JetStreamLimits.DefaultMaxConsumers = -1 // no limit per stream; see Start
	if opts.NoSync {
		so.SyncInterval = 2 * time.Minute
	}
	if opts.Listen != "" {
		host, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("natsserver: nats listen %q: %w", opts.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("natsserver: nats listen %q: bad port", opts.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		so.Host, so.Port = host, p
		if opts.TLS != nil {
			so.TLS, so.TLSConfig, so.TLSTimeout = true, opts.TLS, 5
		}
	}
	if opts.Cluster != nil && opts.Listen == "" {
		// nats-server solicits routes only once its client listener is up: a node of a
		// cluster listens on a free port of the loopback, where no TCP client may log in
		// (configureAccess) unless it is a subscriber.
		so.DontListen = false
		so.Host, so.Port = "127.0.0.1", server.RANDOM_PORT
	}
	if opts.Listen != "" || len(opts.Subscribers) > 0 || opts.Cluster != nil {
		if err := configureAccess(so, opts.Subscribers); err != nil {
			return nil, err
		}
	}
	if c := opts.Cluster; c != nil {
		if err := clusterOptions(so, c); err != nil {
			return nil, err
		}
	}
	return so, nil
}

// clusterOptions sets the cluster options of c in so.
func clusterOptions(so *server.Options, c *Cluster) error {
	if c.Name == "" || c.ServerName == "" {
		return fmt.Errorf("natsserver: cluster: a cluster name and a server name are required")
	}
	if strings.ContainsAny(c.Name+c.ServerName, " \t\n\r.*>") {
		return fmt.Errorf("natsserver: cluster name %q or server name %q: no spaces, dots, * or >", c.Name, c.ServerName)
	}
	if err := checkHostPort(c.Listen); err != nil {
		return fmt.Errorf("natsserver: cluster listen %q: %w", c.Listen, err)
	}
	if len(c.Peers) == 0 {
		return fmt.Errorf("natsserver: cluster: no peers")
	}
	host, port, _ := net.SplitHostPort(c.Listen)
	so.ServerName = c.ServerName
	so.Cluster.Name = c.Name
	so.Cluster.Host = host
	so.Cluster.Port, _ = strconv.Atoi(port)
	so.Routes = nil
	for _, p := range c.Peers {
		if _, err := ParseRoute(p); err != nil {
			return fmt.Errorf("natsserver: cluster peer %q: %w", p, err)
		}
		u, _ := url.Parse(p)
		so.Routes = append(so.Routes, u)
	}
	return nil
}

// ConnectInProcess connects to an embedded server without a network socket, as
// InProcessUser (every right), with inboxes under InProcessInboxPrefix.
func ConnectInProcess(s *Server) (*nats.Conn, error) {
	nc, err := nats.Connect("", nats.InProcessServer(s), nats.Name("keyreg"), nats.MaxReconnects(-1),
		nats.CustomInboxPrefix(InProcessInboxPrefix))
	if err != nil {
		return nil, fmt.Errorf("natsserver: connect in-process: %w", err)
	}
	return nc, nil
}
