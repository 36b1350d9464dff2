package config

import (
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Cluster is the `cluster:` section: bans shared with other pbxguard nodes
// over NATS JetStream. On when the section is present (enabled: false
// turns it off).
type Cluster struct {
	Enabled bool
	Node    string // this node's name [the host name]
	NATS    ClusterNATS
	// Share lists the jails whose bans this node publishes; nil = all.
	Share []string
	// Accept: nodes accepted (empty = any), distinct reporters needed,
	// cap on remote bans.
	AcceptFrom   []string
	MinReporters int           // [1]
	MaxBanTime   time.Duration // [1w]
	Stream       ClusterStream
	Outbox       int // outbox capacity [100000]
	Line         int
}

// ClusterNATS is `cluster.nats:`.
type ClusterNATS struct {
	URLs         []string // [nats://127.0.0.1:4222]
	CredsFile    string
	User         string
	PasswordFile string
	NKeyFile     string
	CAFile       string
	CertFile     string
	KeyFile      string
}

// ClusterStream is `cluster.stream:`.
type ClusterStream struct {
	Name     string        // [PBXGUARD_BANS]
	Replicas int           // [1]
	MaxAge   time.Duration // [1w]
}

// DefaultCluster is the section's defaults (Enabled false until the
// section is there).
func DefaultCluster() Cluster {
	return Cluster{Node: hostNode(), NATS: ClusterNATS{URLs: []string{"nats://127.0.0.1:4222"}},
		MinReporters: 1, MaxBanTime: 7 * 24 * time.Hour, Outbox: 100_000,
		Stream: ClusterStream{Name: "PBXGUARD_BANS", Replicas: 1, MaxAge: 7 * 24 * time.Hour}}
}

// hostNode is the host name made a valid node name.
func hostNode() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "pbxguard"
	}
	h, _, _ = strings.Cut(h, ".")
	b := []byte(h)
	for i, c := range b {
		if !nodeByte(c) {
			b[i] = '-'
		}
	}
	return string(b[:min(len(b), 64)])
}

func nodeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

func validNode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !nodeByte(s[i]) {
			return false
		}
	}
	return true
}

func (p *parser) cluster(k string, v *yaml.Node, c *Cluster) {
	c.Line = v.Line
	c.Enabled = true
	node := func(k string, v *yaml.Node) string {
		s := p.str(k, v)
		if s != "" && !validNode(s) {
			p.errorf(v.Line, k, "%q: a node name is 1-64 letters, digits, '-' or '_' (it is a NATS subject token: no dots)", s)
		}
		return s
	}
	p.mapping(v, k, map[string]func(string, *yaml.Node){
		"enabled": func(k string, v *yaml.Node) { c.Enabled = p.boolean(k, v) },
		"node":    func(k string, v *yaml.Node) { c.Node = node(k, v) },
		"nats": func(k string, v *yaml.Node) {
			p.mapping(v, k, map[string]func(string, *yaml.Node){
				"urls": func(k string, v *yaml.Node) {
					c.NATS.URLs = p.strings(k, v)
					for _, s := range c.NATS.URLs {
						if u, err := url.Parse(s); err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "tls") {
							p.errorf(v.Line, k, "%q is not a NATS URL (write nats://host:4222 or tls://host:4222)", s)
						}
					}
				},
				"creds_file":    func(k string, v *yaml.Node) { c.NATS.CredsFile = p.path(k, v) },
				"user":          func(k string, v *yaml.Node) { c.NATS.User = p.str(k, v) },
				"password_file": func(k string, v *yaml.Node) { c.NATS.PasswordFile = p.path(k, v) },
				"nkey_file":     func(k string, v *yaml.Node) { c.NATS.NKeyFile = p.path(k, v) },
				"tls": func(k string, v *yaml.Node) {
					p.mapping(v, k, map[string]func(string, *yaml.Node){
						"ca_file":   func(k string, v *yaml.Node) { c.NATS.CAFile = p.path(k, v) },
						"cert_file": func(k string, v *yaml.Node) { c.NATS.CertFile = p.path(k, v) },
						"key_file":  func(k string, v *yaml.Node) { c.NATS.KeyFile = p.path(k, v) },
					})
				},
			})
		},
		"share": func(k string, v *yaml.Node) {
			c.Share = p.strings(k, v)
			if c.Share == nil {
				c.Share = []string{}
			}
		},
		"accept": func(k string, v *yaml.Node) {
			p.mapping(v, k, map[string]func(string, *yaml.Node){
				"from": func(k string, v *yaml.Node) {
					c.AcceptFrom = p.strings(k, v)
					for _, n := range c.AcceptFrom {
						if !validNode(n) {
							p.errorf(v.Line, k, "%q is not a node name (1-64 letters, digits, '-' or '_')", n)
						}
					}
				},
				"min_reporters": func(k string, v *yaml.Node) { c.MinReporters = p.intRange(k, v, 1, 1000) },
				"max_bantime":   func(k string, v *yaml.Node) { c.MaxBanTime = p.duration(k, v) },
			})
		},
		"stream": func(k string, v *yaml.Node) {
			p.mapping(v, k, map[string]func(string, *yaml.Node){
				"name": func(k string, v *yaml.Node) {
					c.Stream.Name = p.str(k, v)
					if !validNode(c.Stream.Name) {
						p.errorf(v.Line, k, "%q: a stream name is letters, digits, '-' or '_' (PBXGUARD_BANS)", c.Stream.Name)
					}
				},
				"replicas": func(k string, v *yaml.Node) { c.Stream.Replicas = p.intRange(k, v, 1, 5) },
				"max_age":  func(k string, v *yaml.Node) { c.Stream.MaxAge = p.duration(k, v) },
			})
		},
		"outbox": func(k string, v *yaml.Node) { c.Outbox = p.intRange(k, v, 100, 10_000_000) },
	})
	creds := 0
	for _, s := range []string{c.NATS.CredsFile, c.NATS.User, c.NATS.NKeyFile} {
		if s != "" {
			creds++
		}
	}
	if creds > 1 {
		p.errorf(v.Line, k+".nats", "give one of creds_file, user + password_file, or nkey_file")
	}
	if (c.NATS.User == "") != (c.NATS.PasswordFile == "") {
		p.errorf(v.Line, k+".nats", "user and password_file go together")
	}
	if (c.NATS.CertFile == "") != (c.NATS.KeyFile == "") {
		p.errorf(v.Line, k+".nats.tls", "cert_file and key_file go together")
	}
	if c.MaxBanTime <= 0 {
		p.errorf(v.Line, k+".accept.max_bantime", "must be more than 0 (try 1w)")
	}
}

// checkCluster: the jails in share must exist.
func (p *parser) checkCluster(c *Config) {
	if !c.Cluster.Enabled {
		return
	}
	for _, name := range c.Cluster.Share {
		if name == "manual" || name == "fraud" {
			continue
		}
		found := false
		for _, j := range c.Jails {
			found = found || j.Name == name
		}
		if !found {
			p.errorf(c.Cluster.Line, "cluster.share", "%q is not a jail (nor manual or fraud)", name)
		}
	}
}
