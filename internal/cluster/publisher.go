package cluster

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultOutbox is the outbox's default capacity.
const DefaultOutbox = 100_000

// publishBatch is how many messages go out before their acks are awaited.
const publishBatch = 256

// Publisher sends this node's bans to JetStream. Offer never blocks: the
// ban goes into a bounded in-memory outbox that a worker (Run) drains.
// While NATS is unreachable the messages wait there and go out when it is
// back; when the outbox is full the oldest message is dropped (counted).
type Publisher struct {
	node  string
	log   *slog.Logger
	stats *Stats

	persist OutboxStore // nil = memory only
	saved   atomic.Bool // the store may hold messages

	mu    sync.Mutex
	queue []Ban // FIFO: queue[head:]
	head  int
	limit int
	wake  chan struct{}
}

// NewPublisher makes a publisher for node with an outbox of limit
// messages (0 = DefaultOutbox).
func NewPublisher(node string, limit int, stats *Stats, log *slog.Logger) *Publisher {
	if limit <= 0 {
		limit = DefaultOutbox
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stats == nil {
		stats = NewStats()
	}
	return &Publisher{node: node, log: log, stats: stats, limit: limit, wake: make(chan struct{}, 1)}
}

// OutboxStore keeps the outbox across restarts (store.Outbox). The
// publisher writes it only when publishing fails or the daemon stops with
// messages waiting, never on the path of a ban.
type OutboxStore interface {
	Replace(ctx context.Context, msgs [][]byte) error
	Load(ctx context.Context) ([][]byte, error)
}

// Persist makes the outbox survive restarts in st; call it before Run.
func (p *Publisher) Persist(st OutboxStore) { p.persist = st }

// restore puts the saved messages in front of the queue.
func (p *Publisher) restore(ctx context.Context) {
	if p.persist == nil {
		return
	}
	msgs, err := p.persist.Load(ctx)
	if err != nil {
		p.log.Error("cluster: reading the saved outbox", "err", err)
		return
	}
	p.saved.Store(len(msgs) > 0)
	var bans []Ban
	for _, m := range msgs {
		b, err := Decode(Subject(p.node), m, time.Now())
		if err != nil {
			p.log.Warn("cluster: saved outbox message dropped", "err", err)
			continue
		}
		bans = append(bans, b)
	}
	p.mu.Lock()
	p.queue = append(bans, p.queue[p.head:]...)
	p.head = 0
	if over := len(p.queue) - p.limit; over > 0 {
		p.head = over
		p.stats.outboxDropped.Add(uint64(over))
	}
	n := len(p.queue) - p.head
	p.mu.Unlock()
	p.stats.outbox.Store(int64(n))
	if len(bans) > 0 {
		p.log.Info("cluster: publishing the bans saved while NATS was unreachable", "count", len(bans))
	}
}

// spill saves what waits now (an empty outbox clears the saved one).
// Without a store, or with nothing waiting and nothing saved, it does
// nothing.
func (p *Publisher) spill(ctx context.Context) {
	if p.persist == nil || (p.Len() == 0 && !p.saved.Load()) {
		return
	}
	p.mu.Lock()
	q := append([]Ban(nil), p.queue[p.head:]...)
	p.mu.Unlock()
	msgs := make([][]byte, 0, len(q))
	for _, b := range q {
		if data, err := Encode(b); err == nil {
			msgs = append(msgs, data)
		}
	}
	if err := p.persist.Replace(ctx, msgs); err != nil {
		p.log.Error("cluster: saving the outbox", "waiting", len(msgs), "err", err)
		return
	}
	p.saved.Store(len(msgs) > 0)
}

// Offer queues b (its Origin is set to this node). It never waits.
func (p *Publisher) Offer(b Ban) {
	b.Origin = p.node
	p.mu.Lock()
	if len(p.queue)-p.head >= p.limit {
		p.head++ // drop the oldest
		p.stats.outboxDropped.Add(1)
	}
	p.queue = append(p.queue, b)
	n := len(p.queue) - p.head
	p.mu.Unlock()
	p.stats.outbox.Store(int64(n))
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Len is the number of messages waiting in the outbox.
func (p *Publisher) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queue) - p.head
}

// take returns up to n queued messages without removing them.
func (p *Publisher) take(n int) []Ban {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.queue[p.head:]
	return append([]Ban(nil), q[:min(n, len(q))]...)
}

// done removes the first n messages (sent, or given up).
func (p *Publisher) done(n int) {
	p.mu.Lock()
	p.head = min(p.head+n, len(p.queue))
	if p.head == len(p.queue) {
		p.queue, p.head = p.queue[:0], 0
	} else if p.head > 4096 && p.head > len(p.queue)/2 {
		p.queue = append(p.queue[:0], p.queue[p.head:]...)
		p.head = 0
	}
	n = len(p.queue) - p.head
	p.mu.Unlock()
	p.stats.outbox.Store(int64(n))
}

// Run sends the outbox until ctx is done. A batch that fails (NATS down,
// no stream) is retried after a pause that doubles up to 5 s; the order
// of one node's messages is kept.
func (p *Publisher) Run(ctx context.Context, js jetstream.JetStream) error {
	pause := 50 * time.Millisecond
	failing := false
	for {
		// After a failure, one message at a time until one is stored:
		// a batch in which an early message fails and a later one is
		// stored would be stored out of order when sent again.
		n := publishBatch
		if failing {
			n = 1
		}
		batch := p.take(n)
		if len(batch) == 0 {
			p.spill(ctx) // all sent: clear the saved outbox, if any
			select {
			case <-ctx.Done():
				return nil
			case <-p.wake:
				continue
			}
		}
		sent, err := p.send(ctx, js, batch)
		p.done(sent)
		if err == nil {
			pause, failing = 50*time.Millisecond, false
			continue
		}
		failing = true
		p.spill(ctx)
		if ctx.Err() != nil {
			return nil
		}
		p.stats.publishErrors.Add(1)
		p.log.Warn("cluster: publishing bans failed; they wait in the outbox", "waiting", p.Len(), "retry_in", pause, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// send publishes batch asynchronously and waits for the acks. It returns
// how many leading messages are safely stored (or invalid and dropped).
func (p *Publisher) send(ctx context.Context, js jetstream.JetStream, batch []Ban) (int, error) {
	futs := make([]jetstream.PubAckFuture, len(batch))
	subject := Subject(p.node)
	for i, b := range batch {
		data, err := Encode(b)
		if err != nil {
			// Never valid: sending it again would not help.
			p.log.Error("cluster: ban not publishable; dropped", "prefix", b.Prefix, "err", err)
			p.stats.outboxDropped.Add(1)
			continue
		}
		m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, b.MsgID())
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return p.await(ctx, futs[:i], err)
		}
		futs[i] = f
	}
	return p.await(ctx, futs, nil)
}

// await waits for the futures in order; the count is of the leading
// messages acknowledged (or nil: dropped as invalid).
func (p *Publisher) await(ctx context.Context, futs []jetstream.PubAckFuture, sendErr error) (int, error) {
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	ok := 0
	var firstErr error
	for _, f := range futs {
		if f == nil {
			if firstErr == nil {
				ok++
			}
			continue
		}
		select {
		case <-f.Ok():
			if firstErr == nil {
				ok++
			}
			p.stats.published.Add(1)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = err
			}
		case <-timeout.C:
			// The rest are sent again; Nats-Msg-Id keeps them single.
			if firstErr == nil {
				firstErr = errors.New("no acknowledgement from JetStream within 10s")
			}
			return ok, firstErr
		case <-ctx.Done():
			return ok, ctx.Err()
		}
	}
	if firstErr == nil {
		firstErr = sendErr
	}
	return ok, firstErr
}
