package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// RootKeyName is the name of the key made on first start (and by RecoverRoot).
const RootKeyName = "root"

// systemKeys is the filter of every key event of workspace system.
var systemKeys = events.SubjectPrefix + "." + string(events.SystemWorkspace) + "." + string(events.AggKey) + ".*.*"

var errStop = errors.New("stop")

// hasSystemKey reports whether workspace system ever had a key: then the data dir is
// initialised and its root key was made (and shown) at its first start.
func hasSystemKey(ctx context.Context, log events.Reader) (bool, error) {
	found := false
	err := log.Read(ctx, systemKeys, 1, func(events.Record) error {
		found = true
		return errStop
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return found, err
}

// bootstrap makes workspace system and a root key with keyreg.admin on a stream whose
// system workspace has no key yet (an empty log, or a first start that stopped between
// the two), prints the root secret once to cfg.Stderr and writes it to
// cfg.BootstrapKeyFile (a new file, mode 0600; an existing file or symlink there fails
// the start before the key is made). On an initialised stream it does nothing, and says
// so when given a BootstrapKeyFile or on a cluster.
//
// The stream decides, not the data dir: nodes of a cluster that start on empty data dirs
// at once share one stream, and exactly one of them makes the root key. The workspace is
// created with the expectation that it has no event yet, and the root key's id (its
// EventID) is derived from the workspace's created event (rootKeyID), so every node tries
// to append the same key.created event, the stream stores it once, and the others get a
// Duplicate, without a secret.
func (n *Node) bootstrap(ctx context.Context, cfg Config) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := n.bootstrapOnce(ctx, cfg)
		// On a cluster that has just formed, a replica that lags makes commands conflict
		// again and again until it catches up, and reads may fail while replicas start:
		// start over (every step can be taken again: the stream decides who makes what).
		if err == nil || !cfg.clustered() || ctx.Err() != nil || errors.Is(err, ErrSecretFileExists) || time.Now().After(deadline) {
			return err
		}
		if cfg.Logger != nil {
			cfg.Logger.Info("bootstrap: the cluster is not settled yet; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// bootstrapOnce is one try of bootstrap.
func (n *Node) bootstrapOnce(ctx context.Context, cfg Config) error {
	if cfg.clustered() {
		// A replica that lags would show an empty stream where another node has begun.
		if err := readsCaughtUp(ctx, n.Log); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	ws, err := commands.LogState{Log: n.Log}.Workspace(ctx, events.SystemWorkspace)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if ws.Exists() {
		made, err := hasSystemKey(ctx, n.Log)
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if made {
			alreadyInitialised(cfg)
			return nil
		}
	}
	var file *secretFile
	if cfg.BootstrapKeyFile != "" {
		if file, err = createSecretFile(cfg.BootstrapKeyFile); err != nil {
			return fmt.Errorf("bootstrap: --bootstrap-key-file: %w", err)
		}
		defer file.abort()
	}
	if !ws.Exists() {
		_, err = n.Commands.CreateWorkspace(ctx, commands.CreateWorkspace{Workspace: string(events.SystemWorkspace), Name: "keyreg system"})
		if errors.Is(err, commands.ErrAlreadyExists) { // another node made it first
			err = readsCaughtUp(ctx, n.Log)
		}
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	id, err := rootKeyID(ctx, n.Log)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	res, err := n.Commands.CreateKey(ctx, commands.CreateKey{
		Workspace: string(events.SystemWorkspace), Name: RootKeyName, Permissions: []string{string(httpapi.PermAdmin)},
		EventID: id, Meta: events.Meta{Reason: "bootstrap: first start on an empty data dir"},
	})
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if res.Duplicate { // another node stored it first, and showed its secret
		alreadyInitialised(cfg)
		return nil
	}
	if file != nil {
		if err := file.commit([]byte(res.Secret + "\n")); err != nil {
			fmt.Fprintf(cfg.Stderr, "keyreg: could not write the root key to %s: %v\n", cfg.BootstrapKeyFile, err)
		}
	}
	fmt.Fprintf(cfg.Stderr, "\nkeyreg: created workspace %q and its root key %s (keyreg.admin).\n"+
		"Its secret is shown this once; keep it safe:\n\n    %s\n\n", events.SystemWorkspace, res.ID, res.Secret)
	return nil
}

// alreadyInitialised says that the registry has its root key, when the operator may
// expect one: with a BootstrapKeyFile, or on a cluster (where another node may have made
// it).
func alreadyInitialised(cfg Config) {
	const recover = "to replace a lost root key, stop the server and run keyreg admin recover-root"
	switch {
	case cfg.BootstrapKeyFile != "":
		fmt.Fprintf(cfg.Stderr, "keyreg: --bootstrap-key-file %s ignored: the registry is already initialised and its root key was shown when it was made (%s)\n", cfg.BootstrapKeyFile, recover)
	case cfg.clustered():
		fmt.Fprintf(cfg.Stderr, "keyreg: the registry is already initialised: its root key was shown when it was made, on this node or another (%s)\n", recover)
	}
}

// rootKeyID returns the id of the bootstrap's root key: the ULID after the id of the
// system workspace's created event, the same for every node of a cluster. The workspace
// exists: until a replica that lags shows its event, it reads again (at most a minute).
func rootKeyID(ctx context.Context, log events.Reader) (string, error) {
	var first string
	deadline := time.Now().Add(time.Minute)
	for first == "" {
		err := log.Read(ctx, events.AggregateFilter(events.SystemWorkspace, events.AggWorkspace, string(events.SystemWorkspace)), 1, func(r events.Record) error {
			first = r.MsgID
			return errStop
		})
		if err != nil && !errors.Is(err, errStop) {
			return "", err
		}
		if first != "" || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	id, perr := ulid.ParseStrict(first)
	if perr != nil {
		return "", fmt.Errorf("the system workspace's first event id %q: %w", first, perr)
	}
	for i := len(id) - 1; i >= 0; i-- { // id + 1
		id[i]++
		if id[i] != 0 {
			break
		}
	}
	return id.String(), nil
}

// RecoverRootOptions configure RecoverRoot.
type RecoverRootOptions struct {
	// Actor names the operator in the events (default OperatorActor()).
	Actor string
	// Reason goes into the events (default "recover-root: replace a lost root key").
	Reason string
	// KeyFile, when set, also receives the new secret (a new file, mode 0600; an existing
	// file or symlink there fails before anything is revoked or made).
	KeyFile string
}

// RecoverRootResult is what RecoverRoot did.
type RecoverRootResult struct {
	Revoked []string // ids of the root keys revoked
	KeyID   string   // the new root key
	Secret  string   // its secret, to be shown once
	Seq     uint64   // stream sequence of the last event appended
}

// OperatorActor names the operator running a command on the server's machine, for the
// events' actor: "operator:<os user>@<host>".
func OperatorActor() string {
	name := os.Getenv("USER")
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	if name == "" {
		name = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return "operator:" + name + "@" + host
}

// RecoverRoot replaces a lost root key on a stopped server's data dir: it revokes every
// active root key (keys of workspace system with keyreg.admin) and
// makes a new one, each event with opts.Actor and opts.Reason. It holds the data dir's
// lock, so it fails with ErrDataDirInUse while a server (or another tool) runs on it,
// and it refuses a data dir that was never initialised (serve makes its root key).
func RecoverRoot(ctx context.Context, dataDir string, opts RecoverRootOptions) (RecoverRootResult, error) {
	if dataDir == "" {
		return RecoverRootResult{}, errors.New("--data is required")
	}
	if opts.Actor == "" {
		opts.Actor = OperatorActor()
	}
	if opts.Reason == "" {
		opts.Reason = "recover-root: replace a lost root key"
	}
	if _, err := os.Stat(dataDir); err != nil {
		return RecoverRootResult{}, fmt.Errorf("data dir: %w", err)
	}
	s, err := OpenStream(ctx, Config{DataDir: dataDir})
	if err != nil {
		return RecoverRootResult{}, err
	}
	defer s.Close()
	state := commands.LogState{Log: s.Log}
	ws, err := state.Workspace(ctx, events.SystemWorkspace)
	if err != nil {
		return RecoverRootResult{}, err
	}
	if !ws.Exists() {
		return RecoverRootResult{}, fmt.Errorf("%s is not initialised: keyreg serve makes the root key at its first start", dataDir)
	}
	var file *secretFile
	if opts.KeyFile != "" {
		if file, err = createSecretFile(opts.KeyFile); err != nil {
			return RecoverRootResult{}, fmt.Errorf("--bootstrap-key-file: %w", err)
		}
		defer file.abort()
	}
	var ids []string
	err = s.Log.Read(ctx, systemKeys, 1, func(rec events.Record) error {
		sub, err := events.ParseSubject(rec.Subject)
		if err == nil && !slices.Contains(ids, sub.ID) {
			ids = append(ids, sub.ID)
		}
		return nil
	})
	if err != nil {
		return RecoverRootResult{}, err
	}
	h := &commands.Handler{Log: s.Log}
	meta := events.Meta{Actor: opts.Actor, Reason: opts.Reason}
	var res RecoverRootResult
	for _, id := range ids {
		k, err := state.Key(ctx, events.SystemWorkspace, id)
		if err != nil {
			return res, err
		}
		if k.Status != events.StatusActive || !slices.Contains(k.Permissions, httpapi.PermAdmin) {
			continue
		}
		r, err := h.RevokeKey(ctx, commands.RevokeKey{Workspace: string(events.SystemWorkspace), KeyID: id, Meta: meta})
		if err != nil {
			return res, fmt.Errorf("revoke root key %s: %w", id, err)
		}
		res.Revoked, res.Seq = append(res.Revoked, id), r.Seq
	}
	r, err := h.CreateKey(ctx, commands.CreateKey{
		Workspace: string(events.SystemWorkspace), Name: RootKeyName, Permissions: []string{string(httpapi.PermAdmin)}, Meta: meta,
	})
	if err != nil {
		return res, fmt.Errorf("create root key: %w", err)
	}
	res.KeyID, res.Secret, res.Seq = r.ID, r.Secret, r.Seq
	if file != nil {
		if err := file.commit([]byte(r.Secret + "\n")); err != nil {
			return res, fmt.Errorf("the new root key %s was made, but writing it to %s failed (its secret is shown below): %w", r.ID, opts.KeyFile, err)
		}
	}
	return res, nil
}
