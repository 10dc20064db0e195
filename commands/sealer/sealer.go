package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/mod/sumdb/note"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
	"github.com/keyreg/keyreg/projections"
)

// Defaults of the sealer.
const (
	DefaultSealEveryEvents = 1000
	DefaultSealInterval    = time.Minute
	DefaultSealerLockTTL   = 30 * time.Second
)

// The audit signing key: the private key in <data>/audit/signing.key (0600), the public
// one in verifier.key, both in golang.org/x/mod/sumdb/note key format.
const (
	AuditSignerName = "keyreg"
	auditDir        = "audit"
	signingKeyFile  = "signing.key"
	verifierKeyFile = "verifier.key"
)

// LoadOrCreateSigningKey returns the audit signer kept under dataDir and its verifier
// key, making the key pair on first use: <data>/audit (0700) holds signing.key (0600, the
// private key) and verifier.key (0644). The verifier key is always derived from the
// private key, whatever verifier.key says.
func LoadOrCreateSigningKey(dataDir string) (note.Signer, string, error) {
	dir := filepath.Join(dataDir, auditDir)
	path := filepath.Join(dir, signingKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createSigningKey(dir, path); err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, "", fmt.Errorf("audit key: %w", err)
	}
	skey := strings.TrimSpace(string(b))
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, "", fmt.Errorf("audit key %s: %w", path, err)
	}
	vkey, err := verifierKeyOf(skey)
	if err != nil {
		return nil, "", fmt.Errorf("audit key %s: %w", path, err)
	}
	vpath := filepath.Join(dir, verifierKeyFile)
	if have, err := os.ReadFile(vpath); err != nil || strings.TrimSpace(string(have)) != vkey {
		if err := writeFileAtomic(vpath, []byte(vkey+"\n"), 0o644); err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
	}
	return signer, vkey, nil
}

// createSigningKey writes a new signing key to path, unless one is there.
func createSigningKey(dir, path string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	skey, _, err := note.GenerateKey(rand.Reader, AuditSignerName)
	if err != nil {
		return err
	}
	// A key made meanwhile (another process) is kept: the caller reads whichever is there.
	if err := writeSecretFile(path, []byte(skey+"\n")); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

// ReadVerifierKey returns the audit verifier key of a data dir, derived from its signing
// key (or read from verifier.key when only that is there).
func ReadVerifierKey(dataDir string) (string, error) {
	dir := filepath.Join(dataDir, auditDir)
	if b, err := os.ReadFile(filepath.Join(dir, signingKeyFile)); err == nil {
		return verifierKeyOf(strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(filepath.Join(dir, verifierKeyFile))
	if err != nil {
		return "", fmt.Errorf("no audit key in %s (it is made by the first keyreg serve): %w", dir, err)
	}
	vkey := strings.TrimSpace(string(b))
	if _, err := note.NewVerifier(vkey); err != nil {
		return "", fmt.Errorf("%s: %w", filepath.Join(dir, verifierKeyFile), err)
	}
	return vkey, nil
}

// verifierKeyOf derives the verifier key of a note signer key
// "PRIVATE+KEY+<name>+<hash>+<base64 of 0x01 and the ed25519 seed>".
func verifierKeyOf(skey string) (string, error) {
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 || parts[0] != "PRIVATE" || parts[1] != "KEY" {
		return "", errors.New("not a note signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("not an ed25519 note signer key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(parts[2], pub)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(vkey, parts[2]+"+"+parts[3]+"+") {
		return "", errors.New("signer key hash does not match its key")
	}
	return vkey, nil
}

func writeFileAtomic(path string, b []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
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
	return os.Rename(f.Name(), path)
}

// Lock names.
const (
	LocksBucket   = "KEYREG_LOCKS"
	SealerLockKey = "sealer"
)

// KVLock is a lease on a key of a NATS KV bucket whose entries expire after the bucket's
// TTL: TryAcquire creates the key (only one node can), Renew rewrites it at the revision
// it holds (failing once another node took it over after an expiry), Release deletes it
// at that revision. A holder that stops renewing loses the lock after the TTL.
type KVLock struct {
	kv    jetstream.KeyValue
	key   string
	owner string
	ttl   time.Duration

	mu  sync.Mutex
	rev uint64 // 0 when not held
}

// OpenKVLock opens (creating the bucket if needed) the lock key in LocksBucket for owner,
// with entries that expire ttl after their last write.
func OpenKVLock(ctx context.Context, js jetstream.JetStream, key, owner string, ttl time.Duration, replicas int) (*KVLock, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LocksBucket, Description: "keyreg leader locks", TTL: ttl, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("lock bucket %s: %w", LocksBucket, err)
	}
	return &KVLock{kv: kv, key: key, owner: owner, ttl: ttl}, nil
}

// TTL returns how long the lock lasts without renewal.
func (l *KVLock) TTL() time.Duration { return l.ttl }

// TryAcquire takes the lock if nobody holds it, and reports whether it did.
func (l *KVLock) TryAcquire(ctx context.Context) (bool, error) {
	rev, err := l.kv.Create(ctx, l.key, []byte(l.owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire lock %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rev = rev
	l.mu.Unlock()
	return true, nil
}

// Renew extends the lock held. It fails once the lock was lost (expired and taken by
// another owner, or never held).
func (l *KVLock) Renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return fmt.Errorf("renew lock %s: not held", l.key)
	}
	rev, err := l.kv.Update(ctx, l.key, []byte(l.owner), l.rev)
	if err != nil {
		l.rev = 0
		return fmt.Errorf("renew lock %s: %w", l.key, err)
	}
	l.rev = rev
	return nil
}

// Release gives the lock up at once, if still held.
func (l *KVLock) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return nil
	}
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
	l.rev = 0
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.key, err)
	}
	return nil
}

// Holder returns the owner holding the lock, "" when free.
func (l *KVLock) Holder(ctx context.Context) (string, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}

// SealerConfig tunes a Sealer.
type SealerConfig struct {
	// EveryEvents seals once this many events are not covered by the latest checkpoint;
	// 0 means DefaultSealEveryEvents, a negative value never.
	EveryEvents int
	// Interval seals when events are not covered and the latest checkpoint (or the
	// sealer's start, if later) is this old; 0 means DefaultSealInterval, a negative
	// value never.
	Interval time.Duration
	// Poll is how often the sealer looks; 0 means 250ms (or Interval if shorter).
	Poll time.Duration
}

func (c SealerConfig) withDefaults() SealerConfig {
	if c.EveryEvents == 0 {
		c.EveryEvents = DefaultSealEveryEvents
	}
	if c.Interval == 0 {
		c.Interval = DefaultSealInterval
	}
	if c.Poll <= 0 {
		c.Poll = 250 * time.Millisecond
		if c.Interval > 0 {
			c.Poll = min(c.Poll, c.Interval)
		}
	}
	return c
}

// periodic reports whether the sealer seals by itself at all.
func (c SealerConfig) periodic() bool { return c.EveryEvents > 0 || c.Interval > 0 }

// Sealer appends signed checkpoints of the audit tree to the stream: every EveryEvents
// events or every Interval while there are new events (a checkpoint's own event does not
// count), and on demand for exports (Seal). Run seals only while it holds the sealer
// lock, so one sealer runs per stream however many nodes there are; Seal may run on any
// node, and the expected-sequence check of commands.SealCheckpoint keeps two sealers from
// appending the same round.
type Sealer struct {
	cfg    SealerConfig
	views  func() (*projections.Store, *projections.Projector)
	cmds   *commands.Handler
	signer note.Signer
	lock   *KVLock // nil: always lead
	logger *slog.Logger
	now    func() time.Time

	mu      sync.Mutex // one seal at a time on this node
	started time.Time  // when Run started
}

// NewSealer returns a sealer appending to log, reading the views views returns (they may
// change with a rebuild), signing with signer. lock may be nil (a single node).
func NewSealer(cfg SealerConfig, log events.Log, views func() (*projections.Store, *projections.Projector), signer note.Signer, lock *KVLock, logger *slog.Logger) *Sealer {
	if logger == nil {
		logger = slog.Default()
	}
	s := &Sealer{cfg: cfg.withDefaults(), views: views, signer: signer, lock: lock, logger: logger, now: time.Now}
	s.cmds = &commands.Handler{Log: log, Checkpoints: checkpointsOf(func() *projections.Store { st, _ := views(); return st })}
	return s
}

// checkpointsOf reads the latest checkpoint from whichever views serve.
type checkpointsOf func() *projections.Store

func (f checkpointsOf) SealedCheckpoint(ctx context.Context) (events.CheckpointState, error) {
	return f().SealedCheckpoint(ctx)
}

// Seal makes sure a checkpoint covers at least atLeast leaves (stream sequences 1 to
// atLeast) and returns the latest checkpoint once the views have applied it: the latest
// one if it does, else a new one of the whole tree the views hold, after waiting for them
// to reach atLeast.
func (s *Sealer) Seal(ctx context.Context, atLeast uint64) (events.CheckpointState, error) {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, proj := s.views()
	if proj != nil {
		if err := proj.WaitFor(wctx, atLeast); err != nil {
			return events.CheckpointState{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	latest, err := store.SealedCheckpoint(ctx)
	if err != nil {
		return latest, err
	}
	if latest.Exists() && latest.TreeSize >= atLeast {
		return latest, nil
	}
	size := uint64(store.TreeSize())
	if size == 0 || size < atLeast {
		return latest, fmt.Errorf("seal: the views hold %d events, need %d", size, atLeast)
	}
	root, err := store.TreeHash(int64(size))
	if err != nil {
		return latest, fmt.Errorf("seal: %w", err)
	}
	msg, err := note.Sign(&note.Note{Text: string(events.FormatCheckpoint(size, root))}, s.signer)
	if err != nil {
		return latest, fmt.Errorf("seal: sign: %w", err)
	}
	res, err := s.cmds.SealCheckpoint(ctx, commands.SealCheckpoint{
		TreeSize: size, RootHash: base64.StdEncoding.EncodeToString(root[:]), Note: string(msg),
		Meta: events.Meta{Reason: "audit checkpoint"},
	})
	if err != nil {
		return latest, err
	}
	store, proj = s.views()
	if proj != nil {
		if err := proj.WaitFor(wctx, res.Seq); err != nil {
			return latest, err
		}
	}
	latest, err = store.SealedCheckpoint(ctx)
	if err == nil && latest.TreeSize >= size {
		s.logger.Debug("sealed audit checkpoint", "tree_size", latest.TreeSize, "seq", latest.Version)
	}
	return latest, err
}

// Attest signs the text of an export statement (replay.ExportStatement) with the audit
// key, as a golang.org/x/mod/sumdb/note, and returns the signed note. Audit exports carry
// it so that a verifier holding only the public key can check what the export holds.
func (s *Sealer) Attest(text []byte) (string, error) {
	msg, err := note.Sign(&note.Note{Text: string(text)}, s.signer)
	if err != nil {
		return "", fmt.Errorf("attest: sign: %w", err)
	}
	return string(msg), nil
}

// due reports whether a checkpoint is due, and up to which sequence.
func (s *Sealer) due(ctx context.Context) (bool, uint64, error) {
	store, _ := s.views()
	latest, err := store.SealedCheckpoint(ctx)
	if err != nil {
		return false, 0, err
	}
	applied := store.Checkpoint()
	uncovered := applied - min(latest.TreeSize, applied)
	if latest.Exists() && latest.Version > latest.TreeSize && latest.Version <= applied {
		uncovered-- // the checkpoint's own event
	}
	since := latest.SealedAt
	if since.Before(s.started) {
		since = s.started
	}
	switch {
	case uncovered == 0:
		return false, 0, nil
	case s.cfg.EveryEvents > 0 && uncovered >= uint64(s.cfg.EveryEvents), s.cfg.Interval > 0 && s.now().Sub(since) >= s.cfg.Interval:
		return true, applied, nil
	}
	return false, 0, nil
}

// Run seals checkpoints while it holds the sealer lock (always, without a lock) until ctx
// is done; it then releases the lock and returns nil. Failures to seal are logged and
// retried at the next poll. With neither EveryEvents nor Interval it waits for ctx and
// seals nothing.
func (s *Sealer) Run(ctx context.Context) error {
	s.started = s.now()
	if !s.cfg.periodic() {
		<-ctx.Done()
		return nil
	}
	if s.lock == nil {
		s.lead(ctx)
		return nil
	}
	retry := s.lock.TTL() / 3
	for {
		ok, err := s.lock.TryAcquire(ctx)
		if err != nil && ctx.Err() == nil {
			s.logger.Warn("sealer: lock", "err", err)
		}
		if ok {
			s.logger.Info("sealer: this node seals the audit checkpoints")
			err := s.lead(ctx)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.lock.Release(rctx)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			s.logger.Warn("sealer: lost the lock; another node seals", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

// lead seals when due until ctx is done or the lock is lost.
func (s *Sealer) lead(ctx context.Context) error {
	poll := time.NewTicker(s.cfg.Poll)
	defer poll.Stop()
	var renew <-chan time.Time
	if s.lock != nil {
		t := time.NewTicker(s.lock.TTL() / 3)
		defer t.Stop()
		renew = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew:
			if err := s.lock.Renew(ctx); err != nil {
				return err
			}
		case <-poll.C:
			due, upTo, err := s.due(ctx)
			if err == nil && due {
				_, err = s.Seal(ctx, upTo)
			}
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("sealer: seal an audit checkpoint", "err", err)
			}
		}
	}
}

// auditNode is a node's sealer and verifier key.
type auditNode struct {
	sealer *Sealer
	vkey   string
}

// openAudit loads (or makes) the signing key and the sealer lock, and makes the sealer.
func (n *Node) openAudit(ctx context.Context) error {
	signer, vkey, err := LoadOrCreateSigningKey(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	replicas := 1
	if n.cfg.NATSURL != "" {
		replicas = max(n.cfg.Replicas, 1)
	}
	host, _ := os.Hostname()
	lock, err := OpenKVLock(ctx, n.stream.Log.JetStream(), SealerLockKey, host+"/"+events.NewID(), DefaultSealerLockTTL, replicas)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	views := func() (*projections.Store, *projections.Projector) {
		v := n.current.Load()
		return v.store, v.projector
	}
	cfg := SealerConfig{EveryEvents: n.cfg.SealEveryEvents, Interval: n.cfg.SealInterval}
	n.audit = &auditNode{sealer: NewSealer(cfg, n.Log, views, signer, lock, n.cfg.Logger), vkey: vkey}
	return nil
}

// auditDeps are the API's audit dependencies: the sealer, or for a read-only node just
// the verifier key of its data dir, if any.
func (n *Node) auditDeps() httpapi.AuditDeps {
	if n.audit == nil {
		var vkey string
		if n.cfg.DataDir != "" {
			vkey, _ = ReadVerifierKey(n.cfg.DataDir)
		}
		return httpapi.AuditDeps{VerifierKey: vkey}
	}
	return httpapi.AuditDeps{Seal: n.audit.sealer.Seal, Attest: n.audit.sealer.Attest, VerifierKey: n.audit.vkey}
}

// Sealer returns the node's sealer (nil when read-only).
func (n *Node) Sealer() *Sealer {
	if n.audit == nil {
		return nil
	}
	return n.audit.sealer
}
