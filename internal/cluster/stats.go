package cluster

import (
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are a node's cluster counters; safe for concurrent use. It is a
// prometheus.Collector.
type Stats struct {
	published, received, applied, ignored, allowlisted, expired, waiting, unbanned atomic.Uint64
	publishErrors, applyErrors, outboxDropped                                      atomic.Uint64
	outbox                                                                         atomic.Int64

	mu       sync.Mutex
	rejected map[string]uint64
	nodes    map[string]*NodeSeen

	delay prometheus.Histogram

	descs map[string]*prometheus.Desc
}

// NodeSeen is what this node knows of another.
type NodeSeen struct {
	Node     string    `json:"node"`
	Last     time.Time `json:"last_message"`
	Bans     uint64    `json:"bans"`
	Unbans   uint64    `json:"unbans"`
	Rejected uint64    `json:"rejected"`
}

// Snapshot is Stats at one moment (`pbxguard cluster status`).
type Snapshot struct {
	Published     uint64            `json:"published"`
	PublishErrors uint64            `json:"publish_errors"`
	Outbox        int64             `json:"outbox"`
	OutboxDropped uint64            `json:"outbox_dropped"`
	Received      uint64            `json:"received"`
	Applied       uint64            `json:"applied"`
	Unbanned      uint64            `json:"unbanned"`
	Ignored       uint64            `json:"ignored_own"`
	Allowlisted   uint64            `json:"allowlisted"`
	Expired       uint64            `json:"expired"`
	Waiting       uint64            `json:"waiting_reporters"`
	ApplyErrors   uint64            `json:"apply_errors"`
	Rejected      map[string]uint64 `json:"rejected"`
	Nodes         []NodeSeen        `json:"nodes"`
}

// NewStats makes empty counters.
func NewStats() *Stats {
	s := &Stats{rejected: map[string]uint64{}, nodes: map[string]*NodeSeen{},
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pbxguard_cluster_propagation_seconds",
			Help:    "Time from a remote node's ban (origin time) to the ban being in this node's kernel.",
			Buckets: []float64{.001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30, 60},
		})}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pbxguard_cluster_"+name, help, labels, nil)
	}
	s.descs = map[string]*prometheus.Desc{
		"published":      d("published_total", "Bans and unbans this node published (acknowledged by JetStream)."),
		"publish_errors": d("publish_errors_total", "Failed publish attempts (the messages stay in the outbox)."),
		"outbox":         d("outbox_length", "Messages waiting to be published."),
		"outbox_dropped": d("outbox_dropped_total", "Messages dropped because the outbox was full."),
		"received":       d("received_total", "Messages received from the stream (own ones included)."),
		"applied":        d("applied_total", "Remote bans applied to this node's kernel."),
		"rejected":       d("rejected_total", "Messages dropped as invalid or not accepted, by reason.", "reason"),
		"skipped":        d("skipped_total", "Valid remote bans not applied, by why (own, allowlisted, expired, waiting for reporters).", "why"),
		"apply_errors":   d("apply_errors_total", "Remote bans the daemon failed to apply (redelivered)."),
	}
	return s
}

// Delay is the propagation-delay histogram.
func (s *Stats) Delay() prometheus.Histogram { return s.delay }

func (s *Stats) reject(node, reason string) {
	s.mu.Lock()
	s.rejected[reason]++
	if n := s.nodes[node]; n != nil {
		n.Rejected++
	}
	s.mu.Unlock()
}

func (s *Stats) seen(b Ban) {
	s.mu.Lock()
	n := s.nodes[b.Origin]
	if n == nil {
		if len(s.nodes) >= 10_000 {
			s.mu.Unlock()
			return
		}
		n = &NodeSeen{Node: b.Origin}
		s.nodes[b.Origin] = n
	}
	if b.At.After(n.Last) {
		n.Last = b.At
	}
	if b.Op == OpBan {
		n.Bans++
	} else {
		n.Unbans++
	}
	s.mu.Unlock()
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() Snapshot {
	sn := Snapshot{Published: s.published.Load(), PublishErrors: s.publishErrors.Load(), Outbox: s.outbox.Load(),
		OutboxDropped: s.outboxDropped.Load(), Received: s.received.Load(), Applied: s.applied.Load(),
		Unbanned: s.unbanned.Load(), Ignored: s.ignored.Load(), Allowlisted: s.allowlisted.Load(),
		Expired: s.expired.Load(), Waiting: s.waiting.Load(), ApplyErrors: s.applyErrors.Load()}
	s.mu.Lock()
	sn.Rejected = maps.Clone(s.rejected)
	for _, n := range s.nodes {
		sn.Nodes = append(sn.Nodes, *n)
	}
	s.mu.Unlock()
	sort.Slice(sn.Nodes, func(a, b int) bool { return sn.Nodes[a].Node < sn.Nodes[b].Node })
	return sn
}

// Describe implements prometheus.Collector.
func (s *Stats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range s.descs {
		ch <- d
	}
	s.delay.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Stats) Collect(ch chan<- prometheus.Metric) {
	sn := s.Snapshot()
	c := func(name string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(s.descs[name], prometheus.CounterValue, float64(v), labels...)
	}
	c("published", sn.Published)
	c("publish_errors", sn.PublishErrors)
	c("outbox_dropped", sn.OutboxDropped)
	c("received", sn.Received)
	c("applied", sn.Applied)
	c("apply_errors", sn.ApplyErrors)
	ch <- prometheus.MustNewConstMetric(s.descs["outbox"], prometheus.GaugeValue, float64(sn.Outbox))
	for _, r := range []string{ReasonSize, ReasonSchema, ReasonVersion, ReasonSubject, ReasonOrigin, ReasonPrefix,
		ReasonDuration, ReasonTime, ReasonField, ReasonNotFrom} {
		c("rejected", sn.Rejected[r], r)
	}
	c("skipped", sn.Ignored, "own")
	c("skipped", sn.Allowlisted, "allowlisted")
	c("skipped", sn.Expired, "expired")
	c("skipped", sn.Waiting, "waiting_reporters")
	s.delay.Collect(ch)
}
