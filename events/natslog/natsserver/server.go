package natsserver

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
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
	if opts.Listen != "" {
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
	if opts.Listen != "" || len(opts.Subscribers) > 0 {
		if err := configureAccess(so, opts.Subscribers); err != nil {
			return nil, err
		}
	}
	return so, nil
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
