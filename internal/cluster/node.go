package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure a node (config `cluster:`).
type Options struct {
	Node string
	URLs []string
	// Credentials: a creds file, or user + password, or an nkey seed file.
	CredsFile, User, Password, NKeyFile string
	// TLS: CA to verify the servers, client certificate and key.
	CAFile, CertFile, KeyFile string
	// Stream: name, replicas, max age of messages.
	Stream   string
	Replicas int
	MaxAge   time.Duration
	// Outbox is the outbox capacity (0 = DefaultOutbox); OutboxStore,
	// when set, keeps it across restarts while NATS is unreachable.
	Outbox      int
	OutboxStore OutboxStore
	// Accept: nodes to accept bans from (empty = any), distinct reporters
	// needed before a ban is applied, cap on remote bans (0 = none).
	AcceptFrom   []string
	MinReporters int
	MaxBanTime   time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

// DefaultStream is the stream's default name.
const DefaultStream = "PBXGUARD_BANS"

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if len(o.URLs) == 0 {
		o.URLs = []string{nats.DefaultURL}
	}
	return o
}

// Node is this pbxguard's membership of the cluster: a publisher of its
// bans and a consumer of the others'.
type Node struct {
	opts  Options
	stats *Stats
	pub   *Publisher
	cons  *Consumer

	conn   chan *nats.Conn // holds the connection once Run has one
	stream chan jetstream.JetStream
}

// New makes a node; Run connects it. Offer works before Run (the bans
// wait in the outbox).
func New(o Options, apply Applier) (*Node, error) {
	o = o.withDefaults()
	if !ValidName(o.Node) {
		return nil, fmt.Errorf("cluster: node name %q: use 1-64 letters, digits, '-' or '_' (it is a NATS subject token)", o.Node)
	}
	stats := NewStats()
	n := &Node{opts: o, stats: stats,
		pub:    NewPublisher(o.Node, o.Outbox, stats, o.Logger),
		cons:   newConsumer(o, apply, stats),
		conn:   make(chan *nats.Conn, 1),
		stream: make(chan jetstream.JetStream, 1)}
	if o.OutboxStore != nil {
		n.pub.Persist(o.OutboxStore)
	}
	return n, nil
}

// Stats are the node's counters (a prometheus.Collector).
func (n *Node) Stats() *Stats { return n.stats }

// Offer queues a local ban or unban for publishing; it never waits.
func (n *Node) Offer(b Ban) { n.pub.Offer(b) }

// OutboxLen is the number of messages waiting.
func (n *Node) OutboxLen() int { return n.pub.Len() }

// Connect opens a NATS connection with o's URLs, credentials and TLS. It
// keeps trying in the background when no server answers yet.
func Connect(o Options) (*nats.Conn, error) {
	o = o.withDefaults()
	opts := []nats.Option{
		nats.Name("pbxguard " + o.Node),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(-1), // the outbox is the buffer
	}
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.nats.nkey_file %s: %w", o.NKeyFile, err)
		}
		opts = append(opts, opt)
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	if o.CertFile != "" || o.KeyFile != "" {
		opts = append(opts, nats.ClientCert(o.CertFile, o.KeyFile))
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to NATS %s: %w", strings.Join(o.URLs, ","), err)
	}
	return nc, nil
}

// StreamConfig is the ban stream's configuration.
func StreamConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	return jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "pbxguard bans shared between nodes",
		Subjects:    []string{SubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.MaxAge,
		MaxMsgSize:  MaxMessage,
		Duplicates:  2 * time.Minute,
		Discard:     jetstream.DiscardOld,
	}
}

// Run connects, makes sure the stream exists, and runs the publisher and
// the consumer until ctx is done. NATS being down is not an error: the
// node keeps trying, and the outbox holds the local bans meanwhile.
func (n *Node) Run(ctx context.Context) error {
	log := n.opts.Logger
	nc, err := Connect(n.opts)
	if err != nil {
		return err
	}
	defer nc.Close()
	n.conn <- nc
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishBatch*2))
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.stream <- js
	n.pub.restore(ctx)
	defer func() {
		// Stopping with messages waiting: they are saved for the next start.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.pub.spill(sctx)
	}()
	// The publisher starts once the stream exists: a message refused for
	// want of a stream while the next one is stored would be stored out
	// of order when sent again.
	pubDone := make(chan struct{})
	started := false
	defer func() {
		if started {
			<-pubDone
		}
	}()
	pause := 250 * time.Millisecond
	for {
		err := n.ensureStream(ctx, js)
		if err == nil {
			if !started {
				started = true
				go func() { defer close(pubDone); _ = n.pub.Run(ctx, js) }()
			}
			err = n.cons.run(ctx, js, n.opts.Stream)
		}
		if err == nil || ctx.Err() != nil {
			return nil
		}
		log.Warn("cluster: stream or consumer not ready; retrying", "stream", n.opts.Stream, "in", pause, "err", err)
		if !started {
			n.pub.spill(ctx)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}

// ensureStream creates the stream when it does not exist. An existing
// stream is left as it is: the operator (or the first node) owns its
// settings, and every node rewriting them at each start would race.
func (n *Node) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := js.Stream(sctx, n.opts.Stream); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", n.opts.Stream, err)
	}
	_, err := js.CreateStream(sctx, StreamConfig(n.opts))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("stream %s: %w", n.opts.Stream, err)
	}
	return nil
}

// Status is what `pbxguard cluster status` shows.
type Status struct {
	Node      string   `json:"node"`
	Connected bool     `json:"connected"`
	Server    string   `json:"server,omitempty"`
	Stream    string   `json:"stream"`
	Messages  uint64   `json:"stream_messages"`
	Lag       uint64   `json:"consumer_lag"`
	Error     string   `json:"error,omitempty"`
	Stats     Snapshot `json:"stats"`
}

// Status reports the connection, the stream, this node's consumer lag and
// the counters.
func (n *Node) Status(ctx context.Context) Status {
	st := Status{Node: n.opts.Node, Stream: n.opts.Stream, Stats: n.stats.Snapshot()}
	var nc *nats.Conn
	var js jetstream.JetStream
	select {
	case nc = <-n.conn:
		n.conn <- nc
		js = <-n.stream
		n.stream <- js
	default:
		st.Error = "not started"
		return st
	}
	st.Connected = nc.IsConnected()
	st.Server = nc.ConnectedUrlRedacted()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, n.opts.Stream)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	if info, err := s.Info(ctx); err == nil {
		st.Messages = info.State.Msgs
	}
	c, err := s.Consumer(ctx, DurableName(n.opts.Node))
	if err != nil {
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			st.Error = err.Error()
		}
		return st
	}
	if info, err := c.Info(ctx); err == nil {
		st.Lag = info.NumPending + uint64(info.NumAckPending)
	}
	return st
}
