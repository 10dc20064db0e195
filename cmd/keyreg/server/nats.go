package server

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/keyreg/keyreg/events"
)

// DefaultNATSSubscriberUser is the NATS user of subscribers when none is configured.
const DefaultNATSSubscriberUser = "subscriber"

// NATSSubscriberPasswordFile is where the subscriber password is kept (and made on first
// start) when Config.NATSSubscriberPasswordFile is empty, relative to the data dir.
const NATSSubscriberPasswordFile = "nats-subscriber.password"

// startEmbedded starts the embedded NATS server of cfg.DataDir. With cfg.NATSListen (and
// not ReadOnly) it also listens there for subscribers over TCP, who log in as
// cfg.NATSSubscriberUser with the password of the subscriber password file and get only
// events.SubscriberPermissions; it logs where they connect and where the password is.
func startEmbedded(cfg Config) (*natsserver.Server, error) {
	so := events.ServerOptions{StoreDir: filepath.Join(cfg.DataDir, "nats")}
	if cfg.NATSListen == "" || cfg.ReadOnly {
		return events.StartServer(so)
	}
	user := cfg.NATSSubscriberUser
	if user == "" {
		user = DefaultNATSSubscriberUser
	}
	file := cfg.NATSSubscriberPasswordFile
	if file == "" {
		file = filepath.Join(cfg.DataDir, NATSSubscriberPasswordFile)
	}
	password, created, err := subscriberPassword(file)
	if err != nil {
		return nil, err
	}
	so.Listen = cfg.NATSListen
	if so.TLS, err = loadTLS("--nats-tls-cert", cfg.NATSTLSCertFile, "--nats-tls-key", cfg.NATSTLSKeyFile); err != nil {
		return nil, err
	}
	so.Subscribers = []events.Subscriber{{User: user, Password: password}}
	s, err := events.StartServer(so)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("NATS address %s: %w", cfg.NATSListen, listenErr(err))
		}
		return nil, err
	}
	if cfg.Logger != nil {
		cfg.Logger.Info("nats subscribers (read-only)", "url", s.ClientURL(), "tls", so.TLS != nil, "user", user, "password_file", file, "created", created)
	}
	return s, nil
}

// subscriberPassword reads the password in file, or writes a new random one there (mode
// 0600) when the file does not exist, and reports whether it made it.
func subscriberPassword(file string) (string, bool, error) {
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		pw := strings.TrimSpace(string(b))
		if pw == "" {
			return "", false, fmt.Errorf("nats subscriber password file %s is empty", file)
		}
		return pw, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("nats subscriber password: %w", err)
	}
	pw := rand.Text() + rand.Text() // 2 x 128 bits, base32
	if err := writeSecretFile(file, []byte(pw+"\n")); err != nil {
		return "", false, fmt.Errorf("nats subscriber password: %w", err)
	}
	return pw, true, nil
}

// NATSURL returns the URL where NATS subscribers connect to the embedded server, or ""
// when it does not listen (no NATSListen, or a cluster with NATSURL).
func (n *Node) NATSURL() string {
	if n.stream == nil || n.stream.nats == nil || n.cfg.NATSListen == "" || n.cfg.ReadOnly {
		return ""
	}
	return n.stream.nats.ClientURL()
}
