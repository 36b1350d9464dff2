package cluster

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerOptions configure the embedded NATS server (`pbxguard cluster
// serve`) for operators who do not run NATS yet.
type ServerOptions struct {
	Listen   string   // host:port of the client listener; port -1 = random
	StoreDir string   // JetStream storage directory
	Name     string   // server name (default: derived from Listen)
	Cluster  string   // host:port of the route listener ("" = no cluster)
	Routes   []string // nats-route://host:port of the other servers
}

// StartServer starts an embedded NATS server with JetStream and waits
// until it accepts clients. Shutdown stops it.
func StartServer(o ServerOptions) (*server.Server, error) {
	host, port, err := splitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w (write host:port, e.g. 127.0.0.1:4222)", o.Listen, err)
	}
	if o.StoreDir == "" {
		return nil, fmt.Errorf("--store: a directory for JetStream's data is required")
	}
	opts := &server.Options{
		Host: host, Port: port, JetStream: true, StoreDir: o.StoreDir,
		ServerName: o.Name, NoSigs: true, MaxPayload: 64 * 1024,
	}
	if opts.ServerName == "" {
		opts.ServerName = "pbxguard-" + strconv.Itoa(port)
	}
	if o.Cluster != "" {
		ch, cp, err := splitHostPort(o.Cluster)
		if err != nil {
			return nil, fmt.Errorf("--cluster %q: %w", o.Cluster, err)
		}
		opts.Cluster = server.ClusterOpts{Name: "pbxguard", Host: ch, Port: cp}
		for _, r := range o.Routes {
			u, err := url.Parse(r)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("--routes %q: write nats-route://host:port", r)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server on %s did not start within 10s", o.Listen)
	}
	return s, nil
}

func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < -1 || n > 65535 {
		return "", 0, fmt.Errorf("port %q", p)
	}
	return h, n, nil
}
