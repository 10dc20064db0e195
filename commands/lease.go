package commands

import (
	"context"
	"log/slog"
	"time"
)

// Lease is an exclusive lease that expires TTL after its last renewal unless released:
// what keeps one node at a time doing a cluster-wide job (sealing checkpoints, appending
// expiry notices). The NATS KV lease of events/natslog satisfies it.
type Lease interface {
	// TTL is how long the lease lasts without renewal.
	TTL() time.Duration
	// TryAcquire takes the lease if nobody holds it, and reports whether it did.
	TryAcquire(ctx context.Context) (bool, error)
	// Renew extends the lease held; it fails once the lease was lost.
	Renew(ctx context.Context) error
	// Release gives the lease up at once, if still held.
	Release(ctx context.Context) error
}

// LeaseJob names a job run under a lease, for RunLeased's log lines.
type LeaseJob struct {
	Name    string // prefixes every log line: "sealer"
	Holding string // logged when this node takes the lease: "this node seals the audit checkpoints"
	Lost    string // logged when it loses it: "another node seals"
}

// RunLeased runs lead whenever this node holds lease, until ctx is done, and then returns.
// It tries to take the lease every TTL/3; lead runs with it held, renews it itself, and
// returns when renewing fails (or it must give the lease up); the lease is then released
// and RunLeased tries again. stay, when set, is asked before each try: true keeps the node
// from taking the lease (a retired signing key).
func RunLeased(ctx context.Context, lease Lease, logger *slog.Logger, job LeaseJob, stay func(context.Context) bool, lead func(context.Context) error) {
	retry := lease.TTL() / 3
	for {
		if stay == nil || !stay(ctx) {
			ok, err := lease.TryAcquire(ctx)
			if err != nil && ctx.Err() == nil {
				logger.Warn(job.Name+": lease", "err", err)
			}
			if ok {
				logger.Info(job.Name + ": " + job.Holding)
				err := lead(ctx)
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				lease.Release(rctx)
				cancel()
				if ctx.Err() != nil {
					return
				}
				logger.Warn(job.Name+": lost the lease; "+job.Lost, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}
