package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Applier is the daemon's side: it puts remote bans through the same
// path as local ones (allowlist and trunks first).
type Applier interface {
	// ApplyRemote bans b.Prefix until until. applied is false (and err
	// nil) when the allowlist refused it.
	ApplyRemote(ctx context.Context, b Ban, until time.Time) (applied bool, err error)
	// UnbanRemote lifts a ban that came from another node.
	UnbanRemote(ctx context.Context, b Ban) error
}

// maxTracked bounds the reporters kept for min_reporters.
const maxTracked = 1 << 20

// Consumer applies the other nodes' messages. Its handler runs on one
// goroutine (JetStream delivers in order).
type Consumer struct {
	node       string
	accept     []string // empty = any node
	minReports int
	maxBan     time.Duration
	apply      Applier
	stats      *Stats
	log        *slog.Logger
	now        func() time.Time

	mu        sync.Mutex
	reporters map[netip.Prefix]map[string]time.Time // prefix -> node -> until
	applied   map[netip.Prefix]bool                 // remote bans applied here
	handled   int
}

func newConsumer(o Options, apply Applier, stats *Stats) *Consumer {
	return &Consumer{node: o.Node, accept: o.AcceptFrom, minReports: max(o.MinReporters, 1), maxBan: o.MaxBanTime,
		apply: apply, stats: stats, log: o.Logger, now: o.Now,
		reporters: map[netip.Prefix]map[string]time.Time{}, applied: map[netip.Prefix]bool{}}
}

// handle treats one message; false asks for a redelivery (the daemon
// failed to apply it).
func (c *Consumer) handle(ctx context.Context, subject string, data []byte) bool {
	c.stats.received.Add(1)
	now := c.now()
	b, err := Decode(subject, data, now)
	if err != nil {
		var r *Reject
		reason := ReasonSchema
		if errors.As(err, &r) {
			reason = r.Reason
		}
		c.stats.reject(subjectNode(subject), reason)
		c.log.Warn("cluster: message rejected", "subject", subject, "reason", reason, "err", err)
		return true
	}
	if b.Origin == c.node {
		c.stats.ignored.Add(1)
		return true
	}
	if len(c.accept) > 0 && !slices.Contains(c.accept, b.Origin) {
		c.stats.reject(b.Origin, ReasonNotFrom)
		c.log.Warn("cluster: message from a node not in accept.from", "origin", b.Origin, "prefix", b.Prefix)
		return true
	}
	c.stats.seen(b)
	if b.Op == OpUnban {
		return c.unban(ctx, b, now)
	}
	until := b.Until
	if c.maxBan > 0 && until.After(now.Add(c.maxBan)) {
		until = now.Add(c.maxBan)
	}
	if !until.After(now) {
		c.stats.expired.Add(1)
		return true
	}
	if n := c.report(b.Prefix, b.Origin, until, now); n < c.minReports {
		c.stats.waiting.Add(1)
		return true
	}
	ok, err := c.apply.ApplyRemote(ctx, b, until)
	if err != nil {
		c.stats.applyErrors.Add(1)
		c.log.Error("cluster: applying a remote ban failed; it will be redelivered", "origin", b.Origin, "prefix", b.Prefix, "err", err)
		return false
	}
	if !ok {
		c.stats.allowlisted.Add(1)
		return true
	}
	c.mu.Lock()
	c.applied[b.Prefix] = true
	c.mu.Unlock()
	c.stats.applied.Add(1)
	delay := max(c.now().Sub(b.At), 0)
	c.stats.delay.Observe(delay.Seconds())
	c.log.Debug("cluster: remote ban applied", "origin", b.Origin, "prefix", b.Prefix, "until", until.UTC().Format(time.RFC3339), "delay_us", delay.Microseconds())
	return true
}

// report records that origin bans prefix until until and returns how many
// distinct nodes report it as still banned.
func (c *Consumer) report(p netip.Prefix, origin string, until, now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handled++
	if c.handled%65536 == 0 || len(c.reporters) >= maxTracked {
		for q, m := range c.reporters {
			for n, u := range m {
				if !u.After(now) {
					delete(m, n)
				}
			}
			if len(m) == 0 {
				delete(c.reporters, q)
				delete(c.applied, q)
			}
		}
	}
	m := c.reporters[p]
	if m == nil {
		if len(c.reporters) >= maxTracked {
			return 0
		}
		m = map[string]time.Time{}
		c.reporters[p] = m
	}
	m[origin] = until
	n := 0
	for _, u := range m {
		if u.After(now) {
			n++
		}
	}
	return n
}

// unban lifts a remote ban once no node that reported it still does.
func (c *Consumer) unban(ctx context.Context, b Ban, now time.Time) bool {
	c.mu.Lock()
	m := c.reporters[b.Prefix]
	delete(m, b.Origin)
	left := 0
	for _, u := range m {
		if u.After(now) {
			left++
		}
	}
	lift := c.applied[b.Prefix] && left == 0
	if lift {
		delete(c.applied, b.Prefix)
		delete(c.reporters, b.Prefix)
	}
	c.mu.Unlock()
	if !lift {
		return true
	}
	if err := c.apply.UnbanRemote(ctx, b); err != nil {
		c.stats.applyErrors.Add(1)
		c.log.Error("cluster: lifting a remote ban failed", "origin", b.Origin, "prefix", b.Prefix, "err", err)
		return false
	}
	c.stats.unbanned.Add(1)
	return true
}

func subjectNode(subject string) string {
	if n, ok := strings.CutPrefix(subject, SubjectPrefix); ok && ValidName(n) {
		return n
	}
	return ""
}

// DurableName is the durable consumer of node.
func DurableName(node string) string { return "pbxguard-" + node }

// run consumes the stream with this node's durable consumer until ctx is
// done. A new durable starts at the stream's first message, so a new node
// catches up on every ban still active; an old one resumes where it
// stopped.
func (c *Consumer) run(ctx context.Context, js jetstream.JetStream, stream string) error {
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       DurableName(c.node),
		Description:   "pbxguard node " + c.node + ": remote bans",
		FilterSubject: SubjectPrefix + ">",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 4096,
	})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if c.handle(ctx, m.Subject(), m.Data()) {
			_ = m.Ack()
		} else {
			_ = m.NakWithDelay(time.Second)
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
