package server

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/keyreg/keyreg/events/natslog"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// Stream is an open keyreg stream: the embedded NATS server of a data dir (started without
// a listener unless the config asks for one) or a connection to a cluster.
type Stream struct {
	Log    *natslog.Log
	nats   *natsserver.Server // nil with --nats-url
	opts   natsserver.Options // the embedded server's
	conn   *nats.Conn
	unlock func()
}

// OpenStream starts the embedded server of cfg.DataDir, or connects to cfg.NATSURL, and
// opens the KEYREG stream (creating it if needed). An embedded server that is a node of a
// cluster (cfg.ClusterName) first waits for the cluster: see openClusterLog.
func OpenStream(ctx context.Context, cfg Config) (_ *Stream, err error) {
	s := &Stream{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := CheckCluster(cfg); err != nil {
		return nil, err
	}
	if err := checkPendingRestore(cfg); err != nil {
		return nil, err
	}
	if cfg.NATSURL == "" {
		if cfg.DataDir == "" {
			return nil, fmt.Errorf("--data is required")
		}
		if s.unlock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		if !cfg.clustered() {
			if err := refuseClusterDataDir(cfg.DataDir); err != nil {
				return nil, err
			}
		}
		s.nats, s.opts, err = startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		s.conn, err = natsserver.ConnectInProcess(s.nats)
	} else {
		s.conn, err = nats.Connect(cfg.NATSURL, nats.Name("keyreg"), nats.MaxReconnects(-1),
			nats.CustomInboxPrefix(natsserver.InProcessInboxPrefix)) // replies to keyreg stay out of subscribers' _INBOX.>
	}
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	if cfg.clustered() {
		s.Log, err = openClusterLog(ctx, s.nats, s.conn, cfg)
		return s, err
	}
	s.Log, err = natslog.Open(ctx, s.conn, natslog.Options{Replicas: cfg.replicas(), Logger: cfg.Logger})
	return s, err
}

// Close closes the connection and shuts the embedded server down; safe on a partly open
// Stream.
func (s *Stream) Close() {
	if s.conn != nil {
		s.conn.Drain()
		s.conn.Close()
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
	if s.unlock != nil {
		s.unlock()
	}
}
