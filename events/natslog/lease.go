package natslog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the NATS KV bucket that holds keyreg's leases, one key per lease.
const LeaseBucket = "KEYREG_LOCKS"

// KVLease is a lease on a key of LeaseBucket, whose entries expire after the bucket's
// TTL: TryAcquire creates the key (only one owner can), Renew rewrites it at the revision
// it holds (failing once another owner took it over after an expiry), Release deletes it
// at that revision. A holder that stops renewing loses the lease after the TTL. It
// satisfies the Lease of commands/sealer.
type KVLease struct {
	kv    jetstream.KeyValue
	key   string
	owner string
	ttl   time.Duration

	mu  sync.Mutex
	rev uint64 // 0 when not held
}

// OpenKVLease opens (creating LeaseBucket if needed, with replicas replicas) the lease
// key for owner, with entries that expire ttl after their last write.
func OpenKVLease(ctx context.Context, js jetstream.JetStream, key, owner string, ttl time.Duration, replicas int) (*KVLease, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LeaseBucket, Description: "keyreg leader locks", TTL: ttl, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", LeaseBucket, err)
	}
	return &KVLease{kv: kv, key: key, owner: owner, ttl: ttl}, nil
}

// TTL returns how long the lease lasts without renewal.
func (l *KVLease) TTL() time.Duration { return l.ttl }

// Owner returns the owner this lease acquires for.
func (l *KVLease) Owner() string { return l.owner }

// TryAcquire takes the lease if nobody holds it, and reports whether it did.
func (l *KVLease) TryAcquire(ctx context.Context) (bool, error) {
	rev, err := l.kv.Create(ctx, l.key, []byte(l.owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rev = rev
	l.mu.Unlock()
	return true, nil
}

// Renew extends the lease held. It fails once the lease was lost (expired and taken by
// another owner, or never held).
func (l *KVLease) Renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return fmt.Errorf("renew lease %s: not held", l.key)
	}
	rev, err := l.kv.Update(ctx, l.key, []byte(l.owner), l.rev)
	if err != nil {
		l.rev = 0
		return fmt.Errorf("renew lease %s: %w", l.key, err)
	}
	l.rev = rev
	return nil
}

// Release gives the lease up at once, if still held.
func (l *KVLease) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rev == 0 {
		return nil
	}
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
	l.rev = 0
	if err != nil {
		return fmt.Errorf("release lease %s: %w", l.key, err)
	}
	return nil
}

// Holder returns the owner holding the lease, "" when free.
func (l *KVLease) Holder(ctx context.Context) (string, error) {
	e, err := l.kv.Get(ctx, l.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return string(e.Value()), nil
}
