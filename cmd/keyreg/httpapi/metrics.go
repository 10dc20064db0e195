package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keyreg/keyreg/commands"
	"github.com/keyreg/keyreg/events"
)

// Metrics are keyreg's Prometheus metrics, on a registry of their own. A nil *Metrics
// records nothing.
type Metrics struct {
	reg        *prometheus.Registry
	commands   *prometheus.CounterVec
	verifies   *prometheus.CounterVec
	byCode     sync.Map // verify code -> its counter in verifies, so a verify skips the label lookup
	appendTime prometheus.Histogram
	requests   *prometheus.CounterVec
	reqTime    *prometheus.HistogramVec
}

// NewMetrics registers the metrics. lag, when set, reports how many stream messages the
// views have not applied yet.
func NewMetrics(lag func() float64) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyreg_commands_total", Help: "Commands handled, by command and outcome.",
		}, []string{"command", "outcome"}),
		verifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyreg_verifies_total", Help: "Verify answers over HTTP, by code.",
		}, []string{"code"}),
		appendTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "keyreg_append_seconds", Help: "Time to append a command's events to the stream (fsync included).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyreg_http_requests_total", Help: "HTTP requests, by method, route pattern and status.",
		}, []string{"method", "route", "status"}),
		reqTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keyreg_http_request_seconds", Help: "HTTP request latency, by method and route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"method", "route"}),
	}
	m.reg.MustRegister(m.commands, m.verifies, m.appendTime, m.requests, m.reqTime,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if lag != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keyreg_projector_lag_events", Help: "Stream messages the views have not applied yet.",
		}, lag))
	}
	return m
}

// Registry returns the registry, so other parts can add metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *Metrics) command(name string, err error) {
	if m == nil {
		return
	}
	m.commands.WithLabelValues(name, outcome(err)).Inc()
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, events.ErrInvalid):
		return "invalid"
	case errors.Is(err, events.ErrNotFound):
		return "not_found"
	case errors.Is(err, events.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, commands.ErrPrecondition):
		return "precondition_failed"
	case errors.Is(err, commands.ErrNameTaken), errors.Is(err, commands.ErrAlreadyExists),
		errors.Is(err, commands.ErrRevoked), errors.Is(err, commands.ErrRetired), errors.Is(err, events.ErrConflict):
		return "conflict"
	}
	return "error"
}

func (m *Metrics) verify(code string) {
	if m == nil {
		return
	}
	if c, ok := m.byCode.Load(code); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := m.verifies.WithLabelValues(code)
	m.byCode.Store(code, c)
	c.Inc()
}

// observeHTTP counts and times a request. Its labels come from fixed sets, whatever a
// client sends: a method outside them is "other"; the route is the pattern the request
// matched (e.g. /v1/workspaces/{ws}/keys), "none" if it matched none, never the path.
func (m *Metrics) observeHTTP(method, pattern string, status int, d time.Duration) {
	method, route := methodLabel(method), routeLabel(pattern)
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.reqTime.WithLabelValues(method, route).Observe(d.Seconds())
}

func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// routeLabel is the path of a ServeMux pattern ("POST /v1/verify" -> "/v1/verify").
func routeLabel(pattern string) string {
	if pattern == "" {
		return "none"
	}
	if _, path, ok := strings.Cut(pattern, " "); ok {
		return path
	}
	return pattern
}

// InstrumentLog returns log with its appends timed into keyreg_append_seconds.
func (m *Metrics) InstrumentLog(log events.Log) events.Log {
	return timedLog{Log: log, h: m.appendTime}
}

type timedLog struct {
	events.Log
	h prometheus.Histogram
}

// ReadNear implements events.NearReader, passing it on to the wrapped log.
func (t timedLog) ReadNear(ctx context.Context, filter string, from uint64, fn func(events.Record) error) error {
	return events.ReadNear(ctx, t.Log, filter, from, fn)
}

func (t timedLog) Append(ctx context.Context, msgs []events.Message) ([]uint64, error) {
	start := time.Now()
	seqs, err := t.Log.Append(ctx, msgs)
	t.h.Observe(time.Since(start).Seconds())
	return seqs, err
}
