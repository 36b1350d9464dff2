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

// Remote is a remote ban to apply, until its (capped) end.
type Remote struct {
	Ban   Ban
	Until time.Time
}

// Applier is the daemon's side: it puts remote bans through the same
// gate as local ones (allowlist and trunks first).
type Applier interface {
	// ApplyRemote bans each r.Ban.Prefix until r.Until, in one kernel
	// batch. applied[i] is false when the allowlist refused rs[i]. An error
	// means none is known to be in the kernel (they are redelivered).
	ApplyRemote(ctx context.Context, rs []Remote) (applied []bool, err error)
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
	swept     int // handled at the last sweep
}

func newConsumer(o Options, apply Applier, stats *Stats) *Consumer {
	return &Consumer{node: o.Node, accept: o.AcceptFrom, minReports: max(o.MinReporters, 1), maxBan: o.MaxBanTime,
		apply: apply, stats: stats, log: o.Logger, now: o.Now,
		reporters: map[netip.Prefix]map[string]time.Time{}, applied: map[netip.Prefix]bool{}}
}

// prepare checks one message. done reports that it needs nothing more
// (rejected, ignored, waiting, or an unban, already handled; ok false asks
// for a redelivery); otherwise r is to be applied.
func (c *Consumer) prepare(ctx context.Context, subject string, data []byte) (r Remote, done, ok bool) {
	c.stats.received.Add(1)
	now := c.now()
	b, err := Decode(subject, data, now)
	if err != nil {
		var rj *Reject
		reason := ReasonSchema
		if errors.As(err, &rj) {
			reason = rj.Reason
		}
		c.stats.reject(subjectNode(subject), reason)
		c.log.Warn("cluster: message rejected", "subject", subject, "reason", reason, "err", err)
		return r, true, true
	}
	if b.Origin == c.node {
		c.stats.ignored.Add(1)
		return r, true, true
	}
	if len(c.accept) > 0 && !slices.Contains(c.accept, b.Origin) {
		c.stats.reject(b.Origin, ReasonNotFrom)
		c.log.Warn("cluster: message from a node not in accept.from", "origin", b.Origin, "prefix", b.Prefix)
		return r, true, true
	}
	c.stats.seen(b)
	if b.Op == OpUnban {
		return r, true, c.unban(ctx, b, now)
	}
	until := b.Until
	if c.maxBan > 0 && until.After(now.Add(c.maxBan)) {
		until = now.Add(c.maxBan)
	}
	if !until.After(now) {
		c.stats.expired.Add(1)
		return r, true, true
	}
	if n := c.report(b.Prefix, b.Origin, until, now); n < c.minReports {
		c.stats.waiting.Add(1)
		return r, true, true
	}
	return Remote{Ban: b, Until: until}, false, true
}

// applyBatch applies rs in one call to the daemon and counts the outcome.
func (c *Consumer) applyBatch(ctx context.Context, rs []Remote) error {
	applied, err := c.apply.ApplyRemote(ctx, rs)
	if err != nil {
		c.stats.applyErrors.Add(uint64(len(rs)))
		c.log.Error("cluster: applying remote bans failed; they will be redelivered", "count", len(rs), "err", err)
		return err
	}
	now := c.now()
	c.mu.Lock()
	for i, r := range rs {
		if i < len(applied) && applied[i] {
			c.applied[r.Ban.Prefix] = true
		}
	}
	c.mu.Unlock()
	for i, r := range rs {
		if i >= len(applied) || !applied[i] {
			c.stats.allowlisted.Add(1)
			continue
		}
		c.stats.applied.Add(1)
		delay := max(now.Sub(r.Ban.At), 0)
		c.stats.delay.Observe(delay.Seconds())
		c.log.Debug("cluster: remote ban applied", "origin", r.Ban.Origin, "prefix", r.Ban.Prefix, "until", r.Until.UTC().Format(time.RFC3339), "delay_us", delay.Microseconds())
	}
	return nil
}

// report records that origin bans prefix until until and returns how many
// distinct nodes report it as still banned.
func (c *Consumer) report(p netip.Prefix, origin string, until, now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.handled++
	// Expired reporters are swept every 65,536 messages, and when the
	// table is full at most every 1,024 (a full sweep per message would
	// make every message cost a scan of a million entries).
	full := len(c.reporters) >= maxTracked && c.handled-c.swept >= 1024
	if c.handled%65536 == 0 || full {
		c.swept = c.handled
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
	msgs := make(chan jetstream.Msg, 4096)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return err
	}
	defer cc.Stop()
	batch := make([]Remote, 0, applyBatch)
	held := make([]jetstream.Msg, 0, applyBatch)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if c.applyBatch(ctx, batch) == nil {
			for _, m := range held {
				_ = m.Ack()
			}
		} else {
			for _, m := range held {
				_ = m.NakWithDelay(time.Second)
			}
		}
		batch, held = batch[:0], held[:0]
	}
	for {
		var m jetstream.Msg
		select {
		case <-ctx.Done():
			return nil
		case m = <-msgs:
		}
		// Take what is already there, up to applyBatch, then apply it in
		// one kernel batch; an unban waits for the bans before it.
		for {
			r, done, ok := c.prepare(ctx, m.Subject(), m.Data())
			switch {
			case !done:
				batch, held = append(batch, r), append(held, m)
			case ok:
				_ = m.Ack()
			default:
				_ = m.NakWithDelay(time.Second)
			}
			if len(batch) >= applyBatch {
				flush()
			}
			select {
			case m = <-msgs:
				if string(m.Data()) != "" && len(batch) > 0 && isUnban(m.Data()) {
					flush()
				}
				continue
			default:
			}
			break
		}
		flush()
	}
}

// applyBatch is the most remote bans applied in one kernel batch.
const applyBatch = 256

// isUnban is a cheap look at a message: does it ask for an unban?
func isUnban(data []byte) bool { return strings.Contains(string(data), `"op":"unban"`) }
