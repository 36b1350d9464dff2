package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the daemon's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry       *prometheus.Registry
	lines          *prometheus.CounterVec
	events         *prometheus.CounterVec
	activeBans     *prometheus.GaugeVec
	banLatency     latencyObserver
	backendErrors  *prometheus.CounterVec
	sourceErrors   *prometheus.CounterVec
	callRecords    *prometheus.CounterVec
	auditFindings  *prometheus.GaugeVec
	storeErrors    prometheus.Counter
	storeOK        prometheus.Gauge
	storeDropped   prometheus.Counter
	storeRecovered prometheus.Gauge

	kernelInSync         prometheus.Gauge
	kernelOutOfSyncSince prometheus.Gauge
	kernelHeals          prometheus.Counter
	kernelHealFailures   prometheus.Counter
}

// latencyObserver feeds the histogram and keeps the last samples for
// exact quantiles in `pbxguard status`.
type latencyObserver struct {
	hist prometheus.Histogram
	mu   sync.Mutex
	ring []float64
	next int
	n    uint64
}

const latencyRing = 4096

func (l *latencyObserver) Observe(v float64) {
	l.hist.Observe(v)
	l.mu.Lock()
	if len(l.ring) < latencyRing {
		l.ring = append(l.ring, v)
	} else {
		l.ring[l.next] = v
		l.next = (l.next + 1) % latencyRing
	}
	l.n++
	l.mu.Unlock()
}

// LatencySummary is the line-to-kernel ban latency over the last bans.
type LatencySummary struct {
	Count uint64  `json:"count"`
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	Maxms float64 `json:"max_ms"`
}

// LatencySummary returns quantiles of the last (up to 4096) ban latencies.
func (m *Metrics) LatencySummary() LatencySummary {
	l := &m.banLatency
	l.mu.Lock()
	s := append([]float64(nil), l.ring...)
	n := l.n
	l.mu.Unlock()
	if len(s) == 0 {
		return LatencySummary{}
	}
	sort.Float64s(s)
	q := func(p float64) float64 { return s[min(len(s)-1, int(p*float64(len(s))))] * 1000 }
	return LatencySummary{Count: n, P50ms: q(0.50), P99ms: q(0.99), Maxms: s[len(s)-1] * 1000}
}

// NewMetrics makes the metrics on a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pbxguard_lines_total", Help: "Log lines read, per jail and source.",
		}, []string{"jail", "source"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pbxguard_events_total", Help: "Events detected, per detector and kind.",
		}, []string{"detector", "kind"}),
		activeBans: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pbxguard_active_bans", Help: "Bans in force, per jail.",
		}, []string{"jail"}),
		banLatency: latencyObserver{hist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pbxguard_ban_latency_seconds",
			Help:    "From reading the line that triggered a ban to the firewall backend's Add returning.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 18), // 25µs .. 3.3s
		})},
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pbxguard_backend_errors_total", Help: "Firewall backend operations that failed, per operation.",
		}, []string{"op"}),
	}
	m.sourceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pbxguard_source_errors_total", Help: "Sources that stopped with an error (and were reopened), per jail and source.",
	}, []string{"jail", "source"})
	m.callRecords = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pbxguard_fraud_records_total", Help: "CDR and CEL records read by the fraud followers, per file kind and result (handled, rejected: malformed or not an endpoint's).",
	}, []string{"kind", "result"})
	m.auditFindings = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pbxguard_audit_findings", Help: "Findings of the Asterisk configuration audit run at start, per severity.",
	}, []string{"severity"})
	for _, s := range []string{"critical", "high", "medium", "low", "info"} {
		m.auditFindings.WithLabelValues(s).Set(0)
	}
	m.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pbxguard_store_errors_total", Help: "Store operations (bans, positions, expiry) that failed; failed ban writes are retried.",
	})
	m.storeOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pbxguard_store_ok", Help: "1 when the last store write worked, 0 while it fails (disk full?).",
	})
	m.storeDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pbxguard_store_bans_given_up_total", Help: "Bans given up after the unsaved queue overflowed (decided again from their lines at the next start).",
	})
	m.storeRecovered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pbxguard_store_recovered", Help: "1 when the store was corrupt at start, moved aside and started afresh (bans rebuilt from the kernel).",
	})
	m.Registry.MustRegister(m.storeErrors, m.storeOK, m.storeDropped, m.storeRecovered)
	m.kernelInSync = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pbxguard_kernel_in_sync", Help: "1 when the kernel holds pbxguard's table, sets, chains and the store's active bans (last check), else 0.",
	})
	m.kernelOutOfSyncSince = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pbxguard_kernel_out_of_sync_since_seconds", Help: "Unix time since when the kernel disagrees with the store; 0 when it agrees.",
	})
	m.kernelHeals = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pbxguard_kernel_heals_total", Help: "Times the daemon put its lost table, sets or chains and every active ban back into the kernel.",
	})
	m.kernelHealFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pbxguard_kernel_heal_failures_total", Help: "Attempts to restore the kernel state that failed (retried with a growing pause).",
	})
	m.Registry.MustRegister(m.kernelInSync, m.kernelOutOfSyncSince, m.kernelHeals, m.kernelHealFailures)
	m.Registry.MustRegister(m.lines, m.events, m.activeBans, m.banLatency.hist, m.backendErrors, m.sourceErrors, m.callRecords, m.auditFindings,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(buildInfo())
	for _, op := range []string{"init", "add", "delete", "list", "check"} {
		m.backendErrors.WithLabelValues(op)
	}
	return m
}

// Serve exposes /metrics on addr until stop is called.
func (m *Metrics) Serve(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w (another process on that port? set metrics.listen, or \"\" to turn it off)", addr, err)
	}
	return m.ServeListener(ln, log), nil
}

// ServeListener exposes /metrics on ln until stop is called (stop closes ln).
func (m *Metrics) ServeListener(ln net.Listener, log *slog.Logger) (stop func()) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			log.Warn("metrics server: shutdown", "err", err)
			srv.Close() // a scrape still running: cut it, shutdown is bounded
		}
	}
}
