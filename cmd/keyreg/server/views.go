package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keyreg/keyreg/cmd/keyreg/httpapi"
	"github.com/keyreg/keyreg/projections"
	"github.com/keyreg/keyreg/replay"
)

// views is one generation of the views: its store, the projector that feeds it and the
// API that serves it. A rebuild makes a new one and swaps it in.
type views struct {
	gen       string
	store     *projections.Store
	projector *projections.Projector // nil when read-only
	api       *httpapi.API
	inflight  atomic.Int64 // requests being served by this generation
	running   atomic.Bool
	cancel    context.CancelFunc
	done      chan struct{}
}

// newViews wires a generation: its store, its projector (unless read-only) and the API
// that serves them, with the node's command handler, log and sealer.
func (n *Node) newViews(gen string, store *projections.Store) *views {
	v := &views{gen: gen, store: store}
	deps := httpapi.Deps{Views: store, Log: n.js, Metrics: n.metrics, Logger: n.cfg.Logger, ReadyCheck: n.ready, Replayer: n, TrustedProxies: n.cfg.TrustedProxies}
	deps.Audit = n.auditDeps(store)
	deps.SSEMaxPerKey, deps.SSEMaxTotal, deps.MinSeqWait = n.cfg.SSEMaxPerKey, n.cfg.SSEMaxTotal, n.cfg.MinSeqWait
	// A write answers (503 when the stream did not take it in time) well before the
	// HTTP write timeout closes its connection.
	deps.CommandTimeout = min(httpapi.DefaultCommandTimeout, n.cfg.WriteTimeout/2)
	if n.users != nil {
		deps.Subscribers = nodeSubscribers{n}
	}
	if n.usage != nil {
		deps.Usage = n.usage
	}
	if n.hooks != nil {
		deps.Webhooks = nodeWebhooks{n}
	}
	if !n.cfg.ReadOnly {
		v.projector = projections.NewProjector(store, n.js)
		deps.Commands, deps.Waiter = n.Commands, v.projector
		deps.Backup = nodeBackup{n}
		deps.LeakReportKeys, deps.Leaks = n.leakKeys, n.Commands
	}
	v.api = httpapi.New(deps)
	return v
}

// start runs the projector until ctx ends or stop; a failure goes to errs.
func (v *views) start(ctx context.Context, errs chan<- error) {
	ctx, v.cancel = context.WithCancel(ctx)
	v.done = make(chan struct{})
	v.running.Store(true)
	go func() {
		defer close(v.done)
		defer v.running.Store(false)
		if err := v.projector.Run(ctx); ctx.Err() == nil {
			select {
			case errs <- fmt.Errorf("generation %s: %w", v.gen, err):
			default:
			}
		}
	}()
}

// stop stops the projector after its batch and closes the store.
func (v *views) stop() {
	if v.cancel != nil {
		v.cancel()
		<-v.done
	}
	v.store.Close()
}

// serveHTTP hands a request to the serving generation. Requests hold swapMu shared, so a
// swap waits for them and they wait for a swap: none fails, and a read after a write sees
// it. No client I/O happens under swapMu, so a slow client cannot hold a swap up (and,
// with it, every request queued behind the swap): the body is read into memory first,
// under the server's read deadline, and the response is buffered and written to the
// client after the lock is released. Event streams and exports, which last, clear their
// connection's deadlines and only count themselves in their generation, which stays open
// until they end.
func (n *Node) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if n.API().IsStream(r) {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Time{})  // the stream outlives ReadTimeout and WriteTimeout;
		rc.SetWriteDeadline(time.Time{}) // heartbeats find clients that left
		n.swapMu.RLock()
		v := n.current.Load()
		v.inflight.Add(1)
		n.swapMu.RUnlock()
		defer v.inflight.Add(-1)
		v.api.ServeHTTP(w, r)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// Up to one byte beyond the limit, so that the API still answers 413.
		body, err := io.ReadAll(io.LimitReader(r.Body, httpapi.MaxBody+1))
		if err != nil {
			status, detail := http.StatusBadRequest, "cannot read the request body"
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				status, detail = http.StatusRequestTimeout, "the request body did not arrive in time"
			}
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(&httpapi.Problem{Status: status, Title: http.StatusText(status), Code: httpapi.CodeBodyUnread, Detail: detail})
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	buf := &bufferedResponse{header: http.Header{}}
	n.swapMu.RLock()
	v := n.current.Load()
	v.inflight.Add(1)
	func() {
		defer n.swapMu.RUnlock()
		defer v.inflight.Add(-1)
		v.api.ServeHTTP(buf, r)
	}()
	buf.writeTo(w)
}

// bufferedResponse keeps a response in memory, to be written to the client later.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 && code >= 200 {
		b.status = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// Flush does nothing: the response goes out whole, after the handler.
func (b *bufferedResponse) Flush() {}

func (b *bufferedResponse) writeTo(w http.ResponseWriter) {
	maps.Copy(w.Header(), b.header)
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	w.Write(b.body.Bytes())
}

// rebuilder runs online rebuilds, one at a time, and reports their progress.
type rebuilder struct {
	mu      sync.Mutex
	status  httpapi.ReplayStatus
	wg      sync.WaitGroup
	applied prometheus.Gauge
	target  prometheus.Gauge
}

func (r *rebuilder) register(m *httpapi.Metrics) {
	r.applied = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyreg_replay_applied_events", Help: "Events applied by the running or last online rebuild."})
	r.target = prometheus.NewGauge(prometheus.GaugeOpts{Name: "keyreg_replay_target_events", Help: "Stream sequence the running or last online rebuild builds up to before catching up."})
	m.Registry().MustRegister(r.applied, r.target)
	r.status.State = "idle"
}

func (r *rebuilder) wait() { r.wg.Wait() }

func (r *rebuilder) set(f func(s *httpapi.ReplayStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.status)
	r.applied.Set(float64(r.status.Applied))
	r.target.Set(float64(r.status.Target))
}

// ReplayStatus implements httpapi.Replayer.
func (n *Node) ReplayStatus() httpapi.ReplayStatus {
	n.rebuild.mu.Lock()
	defer n.rebuild.mu.Unlock()
	return n.rebuild.status
}

// ErrReplayRunning means an online rebuild is already running.
var ErrReplayRunning = errors.New("a rebuild is already running")

// StartReplay implements httpapi.Replayer: it starts an online rebuild in the background
// and returns its first status.
func (n *Node) StartReplay(ctx context.Context) (httpapi.ReplayStatus, error) {
	if n.cfg.ReadOnly {
		return httpapi.ReplayStatus{}, errors.New("a read-only server has no live views to rebuild")
	}
	n.rebuild.mu.Lock()
	if s := n.rebuild.status.State; s == "building" || s == "catching_up" || s == "swapping" {
		n.rebuild.mu.Unlock()
		return httpapi.ReplayStatus{}, ErrReplayRunning
	}
	n.rebuild.status = httpapi.ReplayStatus{State: "building", StartedAt: time.Now().UTC()}
	n.rebuild.mu.Unlock()
	n.rebuild.wg.Add(1)
	go func() {
		defer n.rebuild.wg.Done()
		// The rebuild belongs to the node, not to the request that started it.
		err := n.Rebuild(context.WithoutCancel(ctx))
		n.rebuild.set(func(s *httpapi.ReplayStatus) {
			s.FinishedAt = time.Now().UTC()
			if err != nil {
				s.State, s.Error = "failed", err.Error()
			} else {
				s.State = "done"
			}
		})
		if err != nil {
			n.cfg.Logger.Error("online rebuild failed", "err", err)
		}
	}()
	return n.ReplayStatus(), nil
}

// Rebuild builds a new generation of the views from the stream while the current one
// keeps serving reads and writes, catches it up with the live stream, and swaps it in.
// Requests wait for the swap (a few milliseconds) rather than fail. The old generation is
// closed and removed once its last request ends.
func (n *Node) Rebuild(ctx context.Context) error {
	start := time.Now()
	gen, err := n.gens.Create()
	if err != nil {
		return err
	}
	fail := func(err error) error {
		os.RemoveAll(n.gens.Dir(gen))
		return err
	}
	dir := n.gens.Dir(gen)
	stats, err := replay.Rebuild(ctx, n.js, dir, replay.Options{Progress: func(applied, target uint64) {
		n.rebuild.set(func(s *httpapi.ReplayStatus) {
			s.Generation, s.Applied, s.Target = gen, applied, target
			s.EventsPerSecond = float64(applied) / time.Since(start).Seconds()
		})
	}})
	if err != nil {
		return fail(err)
	}
	n.rebuild.set(func(s *httpapi.ReplayStatus) { s.State, s.Generation = "catching_up", gen })
	store, err := projections.Open(dir, projections.Options{LazySync: true})
	if err != nil {
		return fail(err)
	}
	nv := n.newViews(gen, store)
	nv.start(ctx, n.projErr)
	old := n.current.Load()
	if err := nv.projector.WaitFor(ctx, old.store.Checkpoint()); err != nil {
		nv.stop()
		return fail(err)
	}

	// Swap: wait for the requests in flight, make sure the new views have everything the
	// old ones had applied (so reads still see earlier writes), then switch.
	n.rebuild.set(func(s *httpapi.ReplayStatus) { s.State = "swapping" })
	n.swapMu.Lock()
	err = nv.projector.WaitFor(ctx, old.store.Checkpoint())
	if err == nil {
		err = n.gens.Swap(gen)
	}
	if err != nil {
		n.swapMu.Unlock()
		nv.stop()
		return fail(err)
	}
	n.current.Store(nv)
	n.swapMu.Unlock()
	n.rebuild.set(func(s *httpapi.ReplayStatus) {
		s.Applied = stats.Applied
		s.EventsPerSecond = stats.PerSecond()
	})
	n.cfg.Logger.Info("views swapped", "generation", gen, "applied", stats.Applied, "took", time.Since(start).Round(time.Millisecond))

	// Retire the old generation once its last request (such as an event stream) ends.
	old.api.Close() // its event streams end; clients resume on the new views (Last-Event-ID)
	n.rebuild.wg.Add(1)
	go func() {
		defer n.rebuild.wg.Done()
		for old.inflight.Load() > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		old.stop()
		if err := os.RemoveAll(n.gens.Dir(old.gen)); err != nil {
			n.cfg.Logger.Warn("remove old views", "generation", old.gen, "err", err)
		}
	}()
	return nil
}
