package cluster

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Report is what `pbxguard cluster status` shows, read from NATS itself
// (so it works while the daemon is down).
type Report struct {
	Node      string       `json:"node"`
	Connected bool         `json:"connected"`
	Server    string       `json:"server,omitempty"`
	Stream    string       `json:"stream"`
	Messages  uint64       `json:"stream_messages"`
	Bytes     uint64       `json:"stream_bytes"`
	Consumer  string       `json:"consumer"`
	Lag       uint64       `json:"consumer_lag"` // messages not yet delivered to this node
	Pending   int          `json:"consumer_ack_pending"`
	Nodes     []NodeReport `json:"nodes"`
	Outbox    *int64       `json:"outbox,omitempty"` // from the daemon's metrics, when reachable
}

// NodeReport is one publishing node as the stream shows it.
type NodeReport struct {
	Node        string    `json:"node"`
	Messages    uint64    `json:"messages"`
	LastMessage time.Time `json:"last_message"`
	LastOp      string    `json:"last_op,omitempty"`
	LastPrefix  string    `json:"last_prefix,omitempty"`
}

// Inspect connects with o and reads the stream and this node's consumer.
func Inspect(ctx context.Context, o Options) (Report, error) {
	o = o.withDefaults()
	r := Report{Node: o.Node, Stream: o.Stream, Consumer: DurableName(o.Node)}
	nc, err := Connect(o)
	if err != nil {
		return r, err
	}
	defer nc.Close()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("cluster: no NATS server answers at %s (is it running? pbxguard cluster serve, or check cluster.nats.urls)", strings.Join(o.URLs, ","))
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.Connected, r.Server = true, nc.ConnectedUrlRedacted()
	js, err := jetstream.New(nc)
	if err != nil {
		return r, err
	}
	s, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return r, fmt.Errorf("cluster: stream %s: %w (a pbxguard node creates it when it starts)", o.Stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(SubjectPrefix+">"))
	if err != nil {
		return r, fmt.Errorf("cluster: stream %s: %w", o.Stream, err)
	}
	r.Messages, r.Bytes = info.State.Msgs, info.State.Bytes
	for subj, n := range info.State.Subjects {
		nr := NodeReport{Node: strings.TrimPrefix(subj, SubjectPrefix), Messages: n}
		if m, err := s.GetLastMsgForSubject(ctx, subj); err == nil {
			nr.LastMessage = m.Time.UTC()
			if b, err := Decode(subj, m.Data, time.Now()); err == nil {
				nr.LastOp, nr.LastPrefix = string(b.Op), b.Prefix.String()
			}
		}
		r.Nodes = append(r.Nodes, nr)
	}
	sort.Slice(r.Nodes, func(a, b int) bool { return r.Nodes[a].Node < r.Nodes[b].Node })
	c, err := s.Consumer(ctx, r.Consumer)
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return r, nil
		}
		return r, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return r, err
	}
	r.Lag, r.Pending = ci.NumPending, ci.NumAckPending
	return r, nil
}
