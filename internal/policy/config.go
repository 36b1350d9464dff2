// Package policy is pbxguard's hardened firewall policy: a declarative model
// (default deny, trusted sources, service ports, TCP sanity checks, rate
// limits, port-scan and SIP-scanner guards) read from the `firewall.policy`
// key of the configuration, compiled to nftables or iptables-restore text,
// checked against the administrator's own session, and applied atomically
// with an automatic rollback unless confirmed.
//
// Compilation is pure: the same Config always gives the same text. The I/O
// (running nft, reading /proc/net/tcp, the pending-rollback file) lives in
// apply.go and session.go behind small seams so that it can be tested in a
// network namespace.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Table is the nftables table the policy lives in. It is pbxguard's own:
// apply, rollback and remove touch nothing else. The daemon's ban table
// (`inet pbxguard`, input hook priority -10) runs before it.
const (
	TableFamily = "inet"
	TableName   = "pbxguard_policy"
	// IPTablesChain is the chain the iptables compiler fills.
	IPTablesChain = "PBXGUARD-POLICY"
)

// SourceKind says who may reach a service.
type SourceKind int

// Source kinds.
const (
	FromAny      SourceKind = iota // everybody
	FromTrusted                    // only trusted hosts, networks, interfaces
	FromLoopback                   // only the machine itself
	FromList                       // the listed addresses and networks (and trusted ones)
)

func (k SourceKind) String() string {
	switch k {
	case FromAny:
		return "any"
	case FromTrusted:
		return "trusted"
	case FromLoopback:
		return "loopback"
	default:
		return "list"
	}
}

// Sources is a `from:` value.
type Sources struct {
	Kind     SourceKind
	Prefixes []netip.Prefix // for FromList
}

// PortRange is an inclusive range of ports; Lo == Hi for a single port.
type PortRange struct{ Lo, Hi uint16 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Contains reports whether port is in the range.
func (r PortRange) Contains(port uint16) bool { return port >= r.Lo && port <= r.Hi }

// Rate is "Count per Unit" where Unit is second, minute or hour.
type Rate struct {
	Count int
	Unit  string
}

func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Count, r.Unit) }

// Limit is a rate with a burst (both in packets).
type Limit struct {
	Enabled bool
	Rate    Rate
	Burst   int
}

// Service is one service that the policy opens.
type Service struct {
	Name    string
	Enabled bool
	TCP     []PortRange
	UDP     []PortRange
	From    Sources
	Why     string // what the service is, for rule comments
}

// SIP is the SIP service with its guards.
type SIP struct {
	Service
	TLS       []PortRange // TCP ports for SIP over TLS (part of Service.TCP as well)
	RateLimit Limit       // per source; UDP: every packet, TCP: new connections
}

// SSH is the SSH service with its per-source connection cap.
type SSH struct {
	Service
	Port uint16
}

// Custom is an administrator-defined service.
type Custom = Service

// Services are the services the policy opens, in compile order.
type Services struct {
	SSH    SSH
	SIP    SIP
	RTP    Service
	AMI    Service
	HTTP   Service
	HTTPS  Service
	Custom []Custom
}

// Protections are the TCP/ICMP sanity checks, each switchable.
type Protections struct {
	Null         bool  // no TCP flag set (nmap -sN)
	Xmas         bool  // FIN+PSH+URG (nmap -sX)
	SynFin       bool  // SYN and FIN together
	SynRst       bool  // SYN and RST together
	FinNoAck     bool  // FIN without ACK (nmap -sF)
	NewNotSyn    bool  // a new connection that does not start with a SYN
	Fragments    bool  // IPv4 fragments (dropped before reassembly)
	SynFlood     Limit // new SYNs per source
	SSHConnLimit int   // concurrent SSH connections per source; 0 = off
	ICMPEcho     Limit // echo requests (both families), global
}

// PortScan is the port-scan guard: a source that sends more than Ports new
// connection attempts to closed ports within Within lands in a timed set
// for Ban and everything from it is dropped.
type PortScan struct {
	Enabled bool
	Ports   int
	Within  time.Duration
	Ban     time.Duration
}

// SIPScanner is the SIP scanner guard: datagrams to the SIP UDP ports that
// carry a known scanner User-Agent are dropped and their source lands in a
// timed set for Ban.
type SIPScanner struct {
	Enabled    bool
	UserAgents []string
	Ban        time.Duration
	// SearchBytes is how far into a UDP datagram nftables looks for the
	// User-Agent header (nftables cannot search; it compares at every
	// offset up to this bound, one rule per offset).
	SearchBytes int
}

// Config is the policy.
type Config struct {
	Input          string // "drop" (default) or "accept" (audit mode: only the protections drop)
	TrustAllowlist bool   // the top-level allowlist is trusted too
	Trusted        Trusted
	Services       Services
	Protections    Protections
	PortScan       PortScan
	SIPScanner     SIPScanner

	// Source is the file the policy came from (for messages); Lines maps
	// dotted keys ("trusted.hosts") to their line in it.
	Source string
	Lines  map[string]int

	trustedHostsFlow bool // trusted.hosts is written [a, b] (for the lock-out fix message)
}

// Trusted sources are accepted for everything.
type Trusted struct {
	Hosts      []netip.Addr
	Networks   []netip.Prefix
	Interfaces []string
	Allowlist  []netip.Prefix // from the top-level allowlist when TrustAllowlist
	// SIP are trusted for SIP only: exempt from the SIP rate limits and the
	// SIP scanner guard, on the SIP ports. It is the daemon's allowlist
	// (the allowlist, the host's addresses and the Asterisk trunks that
	// allowlist_asterisk_trunks reads from pjsip.conf/sip.conf/iax.conf),
	// so that the carrier the daemon never bans is never throttled either.
	// Filled by the caller (pbxguard firewall plan/apply), not from YAML.
	SIP []Origin
}

// Origin is a trusted prefix and where it came from (a file:line and
// what), shown in the plan.
type Origin struct {
	Prefix netip.Prefix
	From   string
}

// SIPPrefixes returns Trusted.SIP's prefixes without those another entry
// covers (an nftables interval set refuses overlaps), in their order.
func (t Trusted) SIPPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for i, o := range t.SIP {
		p := o.Prefix.Masked()
		covered := false
		for j, q := range t.SIP {
			qm := q.Prefix.Masked()
			if i != j && qm.Bits() <= p.Bits() && qm.Contains(p.Addr()) && (qm.Bits() < p.Bits() || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// Prefixes returns every trusted address and network as prefixes.
func (t Trusted) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, h := range t.Hosts {
		out = append(out, netip.PrefixFrom(h, h.BitLen()))
	}
	out = append(out, t.Networks...)
	out = append(out, t.Allowlist...)
	return out
}

// defaultUserAgents are the User-Agent prefixes of well-known SIP scanners.
var defaultUserAgents = []string{
	"friendly-scanner", "sipvicious", "sipcli", "sip-scan", "VaxSIPUserAgent",
	"iWar", "sundayddr", "pplsip",
}

// Default returns the policy used when a key is absent: drop by default,
// SSH from anywhere with a per-source connection cap, SIP over UDP/TCP/TLS
// from anywhere rate-limited per source, RTP 10000-20000/udp, AMI and
// provisioning closed to the outside, every protection on except IPv4
// fragments (large SIP INVITEs over UDP fragment legitimately).
func Default() *Config {
	return &Config{
		Input:          "drop",
		TrustAllowlist: true,
		Services: Services{
			SSH: SSH{Service: Service{Name: "ssh", Enabled: true, TCP: []PortRange{{22, 22}}, From: Sources{Kind: FromAny}, Why: "remote administration"}, Port: 22},
			SIP: SIP{
				Service:   Service{Name: "sip", Enabled: true, UDP: []PortRange{{5060, 5060}}, TCP: []PortRange{{5060, 5060}, {5061, 5061}}, From: Sources{Kind: FromAny}, Why: "SIP signalling"},
				TLS:       []PortRange{{5061, 5061}},
				RateLimit: Limit{Enabled: true, Rate: Rate{20, "second"}, Burst: 40},
			},
			RTP:   Service{Name: "rtp", Enabled: true, UDP: []PortRange{{10000, 20000}}, From: Sources{Kind: FromAny}, Why: "call media (Asterisk rtp.conf rtpstart-rtpend)"},
			AMI:   Service{Name: "ami", Enabled: true, TCP: []PortRange{{5038, 5038}}, From: Sources{Kind: FromLoopback}, Why: "Asterisk Manager Interface"},
			HTTP:  Service{Name: "http", Enabled: true, TCP: []PortRange{{80, 80}}, From: Sources{Kind: FromTrusted}, Why: "phone provisioning over HTTP"},
			HTTPS: Service{Name: "https", Enabled: true, TCP: []PortRange{{443, 443}}, From: Sources{Kind: FromTrusted}, Why: "phone provisioning over HTTPS"},
		},
		Protections: Protections{
			Null: true, Xmas: true, SynFin: true, SynRst: true, FinNoAck: true, NewNotSyn: true,
			Fragments:    false,
			SynFlood:     Limit{Enabled: true, Rate: Rate{25, "second"}, Burst: 50},
			SSHConnLimit: 5,
			ICMPEcho:     Limit{Enabled: true, Rate: Rate{5, "second"}, Burst: 10},
		},
		PortScan:   PortScan{Enabled: true, Ports: 10, Within: time.Minute, Ban: time.Hour},
		SIPScanner: SIPScanner{Enabled: true, UserAgents: append([]string(nil), defaultUserAgents...), Ban: 24 * time.Hour, SearchBytes: 512},
		Lines:      map[string]int{},
	}
}

// ServiceList returns the enabled services in compile order.
func (c *Config) ServiceList() []Service {
	s := c.Services
	all := []Service{s.SSH.Service, s.SIP.Service, s.RTP, s.AMI, s.HTTP, s.HTTPS}
	all = append(all, s.Custom...)
	var out []Service
	for _, v := range all {
		if v.Enabled && (len(v.TCP) > 0 || len(v.UDP) > 0) {
			out = append(out, v)
		}
	}
	return out
}

// IsTrusted reports whether addr is trusted (host, network or allowlist).
func (c *Config) IsTrusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range c.Trusted.Prefixes() {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// AllowsTCP reports whether a new TCP connection from addr to port would be
// accepted by the compiled policy (loopback, trusted sources, or a service
// open to addr). It ignores rate limits and guards: those never hold a
// single administrator's connection.
func (c *Config) AllowsTCP(addr netip.Addr, port uint16) bool {
	addr = addr.Unmap()
	if addr.IsLoopback() || c.IsTrusted(addr) || c.Input == "accept" {
		return true
	}
	for _, s := range c.ServiceList() {
		open := false
		for _, r := range s.TCP {
			if r.Contains(port) {
				open = true
			}
		}
		if !open {
			continue
		}
		switch s.From.Kind {
		case FromAny:
			return true
		case FromList:
			for _, p := range s.From.Prefixes {
				if p.Contains(addr) {
					return true
				}
			}
		}
	}
	return false
}

// DefaultUserAgents are the User-Agent prefixes of well-known SIP scanners
// (a copy).
func DefaultUserAgents() []string { return slices.Clone(defaultUserAgents) }
