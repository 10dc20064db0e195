package webhook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyreg/keyreg/events"
)

// Default delivery settings (Config): the first retry after RetryMin, each next one after
// twice as long, at most RetryMax apart, for RetryFor; each attempt waits Timeout at most.
const (
	DefaultRetryMin = 5 * time.Second
	DefaultRetryMax = time.Hour
	DefaultRetryFor = 24 * time.Hour
	DefaultTimeout  = 10 * time.Second
)

// Config configures a Manager.
type Config struct {
	JS       jetstream.JetStream // the stream's JetStream (natslog.Log.JetStream)
	Log      events.Reader       // the stream, to follow the webhook events
	Replicas int                 // of the buckets, like the stream's
	Guard    Guard               // where deliveries may go
	// Retry schedule and attempt timeout; 0: the defaults above.
	RetryMin, RetryMax, RetryFor, Timeout time.Duration
	Logger                                *slog.Logger // nil: slog.Default()
	// Metrics, when set, gets keyreg_webhook_attempts_total{outcome}: delivery attempts
	// by outcome (delivered, retrying, failed).
	Metrics prometheus.Registerer
}

// Manager runs the deliveries of every webhook of the log on this node, keeps the
// webhooks' secrets and records their delivery attempts. Every node of a cluster runs
// one; they share each webhook's durable consumer, so each event is delivered by one node
// at a time.
type Manager struct {
	cfg        Config
	js         jetstream.JetStream
	log        events.Reader
	logger     *slog.Logger
	secrets    jetstream.KeyValue
	deliveries jetstream.KeyValue
	client     *http.Client
	attempts   *prometheus.CounterVec

	mu      sync.Mutex
	hooks   map[string]*events.WebhookState // by id
	workers map[string]*worker              // of the active webhooks, by id, once Run started them
	wg      sync.WaitGroup
}

type worker struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Open opens (creating them if needed) the secrets and deliveries buckets.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.RetryMin, DefaultRetryMin}, {&cfg.RetryMax, DefaultRetryMax}, {&cfg.RetryFor, DefaultRetryFor}, {&cfg.Timeout, DefaultTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	cfg.RetryMax = max(cfg.RetryMax, cfg.RetryMin)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	secrets, deliveries, err := openBuckets(ctx, cfg.JS, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, js: cfg.JS, log: cfg.Log, logger: cfg.Logger, secrets: secrets, deliveries: deliveries,
		hooks: map[string]*events.WebhookState{}, workers: map[string]*worker{}}
	m.client = newClient(cfg.Guard, cfg.Timeout)
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "keyreg_webhook_attempts_total",
		Help: "Webhook delivery attempts made by this node, by outcome: delivered, retrying (failed, to be retried), failed (given up)."}, []string{"outcome"})
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(m.attempts); err != nil {
			return nil, fmt.Errorf("webhook metrics: %w", err)
		}
	}
	return m, nil
}

// newClient returns the HTTP client of deliveries: each attempt bounded by timeout,
// connections only to addresses g allows (checked after DNS resolution), no proxy, and
// no redirect followed.
func newClient(g Guard, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:                 nil, // the guard checks the address connected to: no proxy in between
			DialContext:           g.Dialer(timeout).DialContext,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   2,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		// A redirect is an answer like any other: not 2xx, so a failed attempt.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Guard returns where deliveries may go, for checking URLs at registration.
func (m *Manager) Guard() Guard { return m.cfg.Guard }

// Run delivers until ctx ends: it folds the webhook events stored so far, starts a
// worker per active webhook, then follows the new ones, starting and stopping workers.
// It returns nil when ctx ends, after its workers have stopped.
func (m *Manager) Run(ctx context.Context) error {
	defer m.stopAll()
	last, err := m.log.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("webhooks: %w", err)
	}
	errStop := errors.New("stop")
	err = m.log.Read(ctx, events.WebhooksFilter(), 1, func(r events.Record) error {
		if r.Seq > last {
			return errStop
		}
		_, err := m.apply(r)
		return err
	})
	if err != nil && !errors.Is(err, errStop) {
		return m.exit(ctx, err)
	}
	m.mu.Lock()
	var removed []events.WebhookState
	for _, st := range m.hooks {
		if st.Active {
			m.start(ctx, *st)
		} else {
			removed = append(removed, *st)
		}
	}
	m.mu.Unlock()
	for _, st := range removed {
		m.cleanup(ctx, st) // again: a node may have stopped before it cleaned up
	}
	err = events.FollowFilter(ctx, m.log, events.WebhooksFilter(), last+1, func(r events.Record) error {
		st, err := m.apply(r)
		if err != nil {
			return err
		}
		m.mu.Lock()
		if st.Active {
			m.start(ctx, st)
		}
		m.mu.Unlock()
		if !st.Active {
			m.stop(st.ID)
			m.cleanup(ctx, st)
		}
		return nil
	})
	return m.exit(ctx, err)
}

func (m *Manager) exit(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("webhooks: %w", err)
}

// apply folds one webhook event and returns the webhook's state after it.
func (m *Manager) apply(r events.Record) (events.WebhookState, error) {
	d, err := events.DecodeRecord(r)
	if err != nil {
		return events.WebhookState{}, err
	}
	_, id := d.Event.Aggregate()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.hooks[id]
	if st == nil {
		st = &events.WebhookState{}
		m.hooks[id] = st
	}
	if err := st.Apply(r.Seq, r.Data, d.Event, d.Payload); err != nil {
		return events.WebhookState{}, err
	}
	return *st, nil
}

// start starts the worker of an active webhook unless it runs; m.mu is held.
func (m *Manager) start(ctx context.Context, st events.WebhookState) {
	if _, ok := m.workers[st.ID]; ok {
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{cancel: cancel, done: make(chan struct{})}
	m.workers[st.ID] = w
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(w.done)
		m.work(wctx, st)
	}()
}

// stop stops the worker of webhook id, if it runs, and waits for it.
func (m *Manager) stop(id string) {
	m.mu.Lock()
	w := m.workers[id]
	delete(m.workers, id)
	m.mu.Unlock()
	if w != nil {
		w.cancel()
		<-w.done
	}
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	for _, w := range m.workers {
		w.cancel()
	}
	m.workers = map[string]*worker{}
	m.mu.Unlock()
	m.wg.Wait()
}

// cleanup deletes what a removed webhook leaves: its consumer, its secret and its
// delivery records. Every node does it (each after stopping its own worker, so that none
// makes the consumer again); what is already gone is no error.
func (m *Manager) cleanup(ctx context.Context, st events.WebhookState) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := m.js.DeleteConsumer(ctx, events.StreamName, ConsumerName(st.ID)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		m.logger.Warn("webhook: delete consumer", "webhook", st.ID, "err", err)
	}
	if err := m.secrets.Purge(ctx, st.ID); err != nil {
		m.logger.Warn("webhook: delete secret", "webhook", st.ID, "err", err)
	}
	if err := m.deliveries.Purge(ctx, st.ID); err != nil {
		m.logger.Warn("webhook: delete delivery records", "webhook", st.ID, "err", err)
	}
}

// ConsumerName is the name of webhook id's durable consumer on the stream. Subscribers'
// consumers never take it: their names have no '_'.
func ConsumerName(id string) string { return "webhook_" + id }
