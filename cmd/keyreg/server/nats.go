package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/cmd/keyreg/wire"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/events/natslog/natsserver"
)

// DefaultNATSSubscriberUser is the conventional name of the deprecated shared subscriber
// (Config.NATSSubscriberUser); none is made unless it is set.
const DefaultNATSSubscriberUser = "subscriber"

// NATSSubscriberPasswordFile is where the subscriber password is kept (and made on first
// start) when Config.NATSSubscriberPasswordFile is empty, relative to the data dir.
const NATSSubscriberPasswordFile = "nats-subscriber.password"

// startEmbedded starts the embedded NATS server of cfg.DataDir. With cfg.NATSListen (and
// not ReadOnly) it also listens there for subscribers over TCP: each service added with
// keyreg subscriber add (see natsUsers), and, if cfg.NATSSubscriberUser is set, the
// deprecated shared subscriber with the password of the subscriber password file. It
// returns the options it started the server with, for natsUsers to reload.
func startEmbedded(cfg Config) (*natsserver.Server, natsserver.Options, error) {
	so := natsserver.Options{StoreDir: filepath.Join(cfg.DataDir, "nats")}
	if cfg.clustered() && !cfg.ReadOnly {
		c, err := clusterOptions(cfg)
		if err != nil {
			return nil, so, err
		}
		so.Cluster = c
	}
	if cfg.NATSListen == "" || cfg.ReadOnly {
		s, err := natsserver.Start(so)
		return s, so, err
	}
	so.Listen = cfg.NATSListen
	var err error
	if so.TLS, err = loadTLS("--nats-tls-cert", cfg.NATSTLSCertFile, "--nats-tls-key", cfg.NATSTLSKeyFile); err != nil {
		return nil, so, err
	}
	user, file, created := cfg.NATSSubscriberUser, "", false
	if user != "" {
		file = cfg.NATSSubscriberPasswordFile
		if file == "" {
			file = filepath.Join(cfg.DataDir, NATSSubscriberPasswordFile)
		}
		password, made, err := subscriberPassword(file)
		if err != nil {
			return nil, so, err
		}
		created = made
		so.Subscribers = []natsserver.Subscriber{{User: user, Password: password}}
	}
	s, err := natsserver.Start(so)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, so, fmt.Errorf("NATS address %s: %w", cfg.NATSListen, listenErr(err))
		}
		return nil, so, err
	}
	if cfg.Logger != nil {
		if user != "" {
			cfg.Logger.Warn("nats: deprecated shared subscriber (it may use and delete any consumer); give each service its own with keyreg subscriber add",
				"url", s.ClientURL(), "user", user, "password_file", file, "created", created)
		}
		cfg.Logger.Info("nats subscribers (read-only)", "url", s.ClientURL(), "tls", so.TLS != nil)
	}
	return s, so, nil
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

// natsUsers keeps the embedded server's NATS users in step with the subscriber events of
// the stream (keyreg.system.subscriber.*.*): it folds them, and reloads the server's users
// after each change. The stream is the only record: the server starts with none of them,
// and load adds them before the node serves.
type natsUsers struct {
	server *natsserver.Server
	base   natsserver.Options // the options it started with (the shared subscriber, if any)
	log    events.Log
	logger *slog.Logger

	mu      sync.Mutex
	subs    map[string]*events.SubscriberState
	applied uint64        // last stream sequence looked at
	changed chan struct{} // closed and replaced when applied advances
}

func newNATSUsers(s *natsserver.Server, base natsserver.Options, log events.Log, logger *slog.Logger) *natsUsers {
	return &natsUsers{server: s, base: base, log: log, logger: logger, subs: map[string]*events.SubscriberState{}, changed: make(chan struct{})}
}

// load applies every subscriber event stored so far and reloads the server's users.
func (u *natsUsers) load(ctx context.Context) error {
	last, err := u.log.LastSeq(ctx)
	if err != nil {
		return err
	}
	err = u.log.Read(ctx, events.SubscribersFilter(), 1, func(r events.Record) error {
		if r.Seq > last {
			return errStopRead
		}
		return u.apply(r)
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return fmt.Errorf("nats subscribers: %w", err)
	}
	if err := u.reload(); err != nil {
		return err
	}
	u.advance(last)
	return nil
}

var errStopRead = errors.New("stop")

// run follows the subscriber events after those load applied until ctx ends, reloading
// the server's users after each.
func (u *natsUsers) run(ctx context.Context) error {
	u.mu.Lock()
	from := u.applied + 1
	u.mu.Unlock()
	err := events.FollowFilter(ctx, u.log, events.SubscribersFilter(), from, func(r events.Record) error {
		if err := u.apply(r); err != nil {
			return err
		}
		if err := u.reload(); err != nil {
			return err
		}
		u.advance(r.Seq)
		u.logger.Info("nats subscribers changed", "subject", r.Subject, "seq", r.Seq)
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("nats subscribers: %w", err)
}

func (u *natsUsers) apply(r events.Record) error {
	d, err := events.DecodeRecord(r)
	if err != nil {
		return err
	}
	_, name := d.Event.Aggregate()
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.subs[name]
	if st == nil {
		st = &events.SubscriberState{}
		u.subs[name] = st
	}
	return st.Apply(r.Seq, r.Data, d.Event, d.Payload)
}

// reload gives the server the shared subscriber, if any, and every active subscriber.
func (u *natsUsers) reload() error {
	opts := u.base
	u.mu.Lock()
	opts.Subscribers = slices.Clone(u.base.Subscribers)
	for _, name := range slices.Sorted(maps.Keys(u.subs)) {
		st := u.subs[name]
		if !st.Active || slices.ContainsFunc(opts.Subscribers, func(s natsserver.Subscriber) bool { return s.User == name }) {
			continue // removed, or the shared subscriber's name (which wins)
		}
		opts.Subscribers = append(opts.Subscribers, natsserver.Subscriber{User: name, Password: st.PasswordHash, MaxConsumers: st.MaxConsumers})
	}
	u.mu.Unlock()
	return natsserver.ReloadSubscribers(u.server, opts)
}

func (u *natsUsers) advance(seq uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if seq > u.applied {
		u.applied = seq
		close(u.changed)
		u.changed = make(chan struct{})
	}
}

// waitFor waits until the server's users reflect every subscriber event up to seq.
func (u *natsUsers) waitFor(ctx context.Context, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		u.mu.Lock()
		applied, ch := u.applied, u.changed
		u.mu.Unlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: the NATS users have not caught up with the change yet", httpapi.ErrUnavailable)
		}
	}
}

// list returns the active subscribers by name.
func (u *natsUsers) list() []wire.Subscriber {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := []wire.Subscriber{}
	for _, name := range slices.Sorted(maps.Keys(u.subs)) {
		if st := u.subs[name]; st.Active {
			out = append(out, subscriberOut(*st))
		}
	}
	return out
}

func subscriberOut(st events.SubscriberState) wire.Subscriber {
	return wire.Subscriber{Name: st.Name, NATSUser: st.Name, InboxPrefix: events.InboxPrefix(st.Name), MaxConsumers: st.MaxConsumers,
		Consumers: events.ConsumerNames(st.Name, st.MaxConsumers), AddedAt: st.AddedAt, AddedBy: st.AddedBy, Version: st.Version}
}

// nodeSubscribers serves httpapi.Subscribers with a node's commands and NATS users.
type nodeSubscribers struct{ n *Node }

// AddSubscriber implements httpapi.Subscribers.
func (s nodeSubscribers) AddSubscriber(ctx context.Context, name string, maxConsumers int, meta events.Meta) (wire.NewSubscriber, error) {
	u := s.n.users
	if slices.ContainsFunc(u.base.Subscribers, func(x natsserver.Subscriber) bool { return x.User == name }) {
		return wire.NewSubscriber{}, events.Invalid("name", name, "%q is the shared subscriber's NATS user (--nats-subscriber-user)", name)
	}
	max := maxConsumers
	if max == 0 {
		max = s.n.cfg.NATSSubscriberMaxConsumers
	}
	res, err := s.n.Commands.AddSubscriber(ctx, commands.AddSubscriber{Name: name, MaxConsumers: max, Meta: meta})
	if err != nil {
		return wire.NewSubscriber{}, err
	}
	if err := u.waitFor(ctx, res.Seq); err != nil {
		return wire.NewSubscriber{}, err
	}
	u.mu.Lock()
	st := *u.subs[res.ID]
	u.mu.Unlock()
	return wire.NewSubscriber{Subscriber: subscriberOut(st), Password: res.Secret, NATSURL: s.n.NATSURL()}, nil
}

// RemoveSubscriber implements httpapi.Subscribers.
func (s nodeSubscribers) RemoveSubscriber(ctx context.Context, name string, meta events.Meta) error {
	res, err := s.n.Commands.RemoveSubscriber(ctx, commands.RemoveSubscriber{Name: name, Meta: meta})
	if err != nil {
		return err
	}
	return s.n.users.waitFor(ctx, res.Seq)
}

// Subscribers implements httpapi.Subscribers.
func (s nodeSubscribers) Subscribers(context.Context) []wire.Subscriber { return s.n.users.list() }
