package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/confyaml"
)

// ErrInvalid is matched (errors.Is) by every configuration error.
var ErrInvalid = errors.New("invalid firewall policy")

// ConfigError is a mistake in the policy configuration: where and what to
// write instead. errors.Is(err, ErrInvalid) holds for it. Compile returns
// it; FromYAML and FromDocument return confyaml.Errors (every mistake of the
// section, each with errors.Is(err, ErrInvalid)).
type ConfigError struct {
	Line int    // 0 when unknown
	Key  string // dotted key path (firewall.policy.…); "" when Msg names it
	Msg  string
}

func (e *ConfigError) Error() string {
	msg := e.Msg
	if e.Key != "" {
		msg = e.Key + ": " + msg
	}
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, msg)
	}
	return msg
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalid }

// prefix is the dotted path of the policy in the configuration file.
const prefix = "firewall.policy"

type parser struct {
	cfg *Config
	w   *confyaml.Walker
}

// errReported is returned by a handler whose errors are already recorded.
var errReported = errors.New("firewall.policy: errors reported")

func newParser(cfg *Config) *parser {
	return &parser{cfg: cfg, w: &confyaml.Walker{Class: ErrInvalid, Lines: cfg.Lines}}
}

// record adds a handler's error to the walker (once).
func (p *parser) record(err error) {
	if err == nil || err == errReported {
		return
	}
	var ce *ConfigError
	if errors.As(err, &ce) {
		p.w.Add(confyaml.Error{Line: ce.Line, Key: ce.Key, Msg: ce.Msg})
		return
	}
	p.w.Add(confyaml.Error{Msg: err.Error()})
}

func (p *parser) errf(n *yaml.Node, key, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	k := ""
	if key != "" {
		k = prefix + "." + key
	}
	return &ConfigError{Line: line, Key: k, Msg: fmt.Sprintf(format, args...)}
}

// FromDocument reads the policy from a whole configuration document: the
// `firewall.policy` mapping and the top-level `allowlist`. A document
// without `firewall.policy` gives the default policy.
func FromDocument(doc *yaml.Node) (*Config, error) {
	root := doc
	if root != nil && root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	var polNode, polKey, allow *yaml.Node
	if root != nil && root.Kind == yaml.MappingNode {
		if fw := mapGet(root, "firewall"); fw != nil && fw.Kind == yaml.MappingNode {
			polNode = mapGet(fw, "policy")
			polKey = mapKey(fw, "policy")
		}
		allow = mapGet(root, "allowlist")
	}
	cfg, err := FromYAML(polNode)
	if err != nil {
		return nil, err
	}
	if polKey != nil {
		cfg.Lines["policy"] = polKey.Line
	}
	if allow != nil && cfg.TrustAllowlist {
		p := newParser(cfg)
		list, err := p.prefixes(allow, "")
		if err != nil {
			var ce *ConfigError
			if errors.As(err, &ce) {
				ce.Key = "allowlist"
			}
			p.record(err)
			return nil, p.w.Err()
		}
		cfg.Trusted.Allowlist = list
		cfg.Lines["allowlist"] = allow.Line
	}
	return cfg, nil
}

// FromYAML reads the `firewall.policy` mapping. nil gives the defaults.
// Errors carry the line number and say what to write instead.
func FromYAML(node *yaml.Node) (*Config, error) {
	cfg := Default()
	if node == nil {
		return cfg, nil
	}
	if node.Kind == yaml.DocumentNode && len(node.Content) > 0 {
		node = node.Content[0]
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return cfg, nil
	}
	p := newParser(cfg)
	cfg.Lines[""] = node.Line
	err := p.mapping(node, "", map[string]func(*yaml.Node, string) error{
		"input": func(n *yaml.Node, k string) error {
			v, err := p.scalar(n, k)
			if err != nil {
				return err
			}
			if v != "drop" && v != "accept" {
				return p.errf(n, k, "%q is not a policy (write drop, or accept to only count)", v)
			}
			cfg.Input = v
			return nil
		},
		"trust_allowlist": func(n *yaml.Node, k string) error { return p.boolean(n, k, &cfg.TrustAllowlist) },
		"trusted":         p.trusted,
		"services":        p.services,
		"protections":     p.protections,
		"port_scan":       p.portScan,
		"sip_scanner":     p.sipScanner,
	})
	p.record(err)
	if err := p.w.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapKey(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

func join(base, key string) string {
	if base == "" {
		return key
	}
	return base + "." + key
}

// mapping walks a mapping node, calling the handler of each key; unknown
// keys are errors that name the nearest known key or list them. Every key
// is read: the errors of all of them are recorded, and errReported tells
// the caller that some were.
func (p *parser) mapping(n *yaml.Node, base string, handlers map[string]func(*yaml.Node, string) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, base, "expected a mapping of keys (like `key: value` lines indented under it)")
	}
	before := len(p.w.Errs)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := join(base, k.Value)
		h, ok := handlers[k.Value]
		if !ok {
			known := make([]string, 0, len(handlers))
			for name := range handlers {
				known = append(known, name)
			}
			sort.Strings(known)
			if s := confyaml.Suggest(k.Value, known); s != "" {
				p.w.Suggestf(k.Line, prefix+"."+path, s, "unknown key")
			} else {
				p.record(p.errf(k, path, "unknown key (known keys here: %s)", strings.Join(known, ", ")))
			}
			continue
		}
		if seen[k.Value] {
			p.record(p.errf(k, path, "key appears twice; keep one"))
			continue
		}
		seen[k.Value] = true
		p.cfg.Lines[path] = k.Line
		p.record(h(v, path))
	}
	if len(p.w.Errs) > before {
		return errReported
	}
	return nil
}

func (p *parser) scalar(n *yaml.Node, key string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", p.errf(n, key, "expected a single value, not a list or mapping")
	}
	return n.Value, nil
}

func (p *parser) boolean(n *yaml.Node, key string, dst *bool) error {
	v, err := p.scalar(n, key)
	if err != nil {
		return err
	}
	switch strings.ToLower(v) {
	case "true", "yes", "on":
		*dst = true
	case "false", "no", "off":
		*dst = false
	default:
		return p.errf(n, key, "%q is not true or false", v)
	}
	return nil
}

func (p *parser) integer(n *yaml.Node, key string, lo, hi int, dst *int) error {
	v, err := p.scalar(n, key)
	if err != nil {
		return err
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < lo || i > hi {
		return p.errf(n, key, "%q is not a whole number from %d to %d", v, lo, hi)
	}
	*dst = i
	return nil
}

// ParseDuration accepts Go durations plus days (d) and weeks (w): 90s, 10m,
// 1h, 1d, 1w, 1h30m (a unit is required here), up to ten years
// (confyaml.ParseDuration, the one duration reader).
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if strings.Trim(s, "0123456789") == "" {
		return 0, fmt.Errorf("%q is not a duration (give a unit: 30s, 10m)", s)
	}
	return confyaml.ParseDuration(s)
}

func (p *parser) duration(n *yaml.Node, key string, min time.Duration, dst *time.Duration) error {
	v, err := p.scalar(n, key)
	if err != nil {
		return err
	}
	d, err := ParseDuration(v)
	if errors.Is(err, confyaml.ErrDurationRange) {
		return p.errf(n, key, "%q is out of range (at most %s)", v, confyaml.FormatDuration(confyaml.MaxDuration))
	}
	if err != nil {
		return p.errf(n, key, "%q is not a duration (try 30s, 10m, 1h, 1d, 1w)", v)
	}
	if d < min {
		return p.errf(n, key, "%q is too short (at least %s)", v, min)
	}
	*dst = d
	return nil
}

// ports reads `5060`, `"10000-20000"`, or a list of those.
func (p *parser) ports(n *yaml.Node, key string) ([]PortRange, error) {
	var items []*yaml.Node
	switch n.Kind {
	case yaml.SequenceNode:
		items = n.Content
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		items = []*yaml.Node{n}
	default:
		return nil, p.errf(n, key, "expected a port, a range like 10000-20000, or a list of them")
	}
	var out []PortRange
	for _, it := range items {
		if it.Kind != yaml.ScalarNode {
			return nil, p.errf(it, key, "expected a port, a range like 10000-20000, or a list of them")
		}
		v := strings.TrimSpace(it.Value)
		if v == "0" {
			continue // 0 switches the protocol off
		}
		lo, hi, isRange := strings.Cut(v, "-")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || a == 0 || b < a {
			return nil, p.errf(it, key, "%q is not a port or range (try 5060 or \"10000-20000\"; 1-65535, low end first)", v)
		}
		out = append(out, PortRange{uint16(a), uint16(b)})
	}
	return out, nil
}

func (p *parser) prefix(n *yaml.Node, key string) (netip.Prefix, error) {
	v := strings.TrimSpace(n.Value)
	if n.Kind != yaml.ScalarNode || v == "" {
		return netip.Prefix{}, p.errf(n, key, "expected an address or network like 192.0.2.10, 198.51.100.0/24 or 2001:db8::/32")
	}
	if strings.Contains(v, "/") {
		pf, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, p.errf(n, key, "%q is not a network (try 198.51.100.0/24 or 2001:db8::/32)", v)
		}
		if pf.Masked() != pf {
			return netip.Prefix{}, p.errf(n, key, "%q has host bits set (write %s)", v, pf.Masked())
		}
		return netip.PrefixFrom(pf.Addr().Unmap(), pf.Bits()), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, p.errf(n, key, "%q is not an address (try 192.0.2.10 or 2001:db8::10; IPv6 in quotes)", v)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (p *parser) prefixes(n *yaml.Node, key string) ([]netip.Prefix, error) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	var out []netip.Prefix
	for _, it := range items {
		pf, err := p.prefix(it, key)
		if err != nil {
			return nil, err
		}
		out = append(out, pf)
	}
	return out, nil
}

// from reads `any`, `trusted`, `loopback` or a list of addresses/networks.
func (p *parser) from(n *yaml.Node, key string, dst *Sources) error {
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "any":
			*dst = Sources{Kind: FromAny}
			return nil
		case "trusted":
			*dst = Sources{Kind: FromTrusted}
			return nil
		case "loopback":
			*dst = Sources{Kind: FromLoopback}
			return nil
		}
	}
	list, err := p.prefixes(n, key)
	if err != nil {
		var ce *ConfigError
		detail := err.Error()
		if errors.As(err, &ce) {
			detail = ce.Msg
		}
		return p.errf(n, key, "expected any, trusted, loopback or a list of addresses/networks (%s)", detail)
	}
	*dst = Sources{Kind: FromList, Prefixes: list}
	return nil
}

func (p *parser) trusted(n *yaml.Node, base string) error {
	t := &p.cfg.Trusted
	return p.mapping(n, base, map[string]func(*yaml.Node, string) error{
		"hosts": func(n *yaml.Node, k string) error {
			p.cfg.trustedHostsFlow = n.Kind != yaml.SequenceNode || n.Style&yaml.FlowStyle != 0
			list, err := p.prefixes(n, k)
			if err != nil {
				return err
			}
			for _, pf := range list {
				if !pf.IsSingleIP() {
					return p.errf(n, k, "%s is a network; put it under %s.trusted.networks", pf, prefix)
				}
				t.Hosts = append(t.Hosts, pf.Addr())
			}
			return nil
		},
		"networks": func(n *yaml.Node, k string) error {
			list, err := p.prefixes(n, k)
			t.Networks = append(t.Networks, list...)
			return err
		},
		"interfaces": func(n *yaml.Node, k string) error {
			items := []*yaml.Node{n}
			if n.Kind == yaml.SequenceNode {
				items = n.Content
			}
			for _, it := range items {
				v, err := p.scalar(it, k)
				if err != nil {
					return err
				}
				if v == "" || len(v) > 15 || strings.ContainsAny(v, " \"/\\") {
					return p.errf(it, k, "%q is not an interface name (like wg0 or eth1, at most 15 characters)", v)
				}
				t.Interfaces = append(t.Interfaces, v)
			}
			return nil
		},
	})
}

// serviceKeys returns the handlers shared by every service.
func (p *parser) serviceKeys(s *Service, single *[]PortRange) map[string]func(*yaml.Node, string) error {
	h := map[string]func(*yaml.Node, string) error{
		"enabled": func(n *yaml.Node, k string) error { return p.boolean(n, k, &s.Enabled) },
		"from":    func(n *yaml.Node, k string) error { return p.from(n, k, &s.From) },
	}
	if single != nil {
		name := "port"
		if s.Name == "rtp" {
			name = "ports"
		}
		h[name] = func(n *yaml.Node, k string) error {
			r, err := p.ports(n, k)
			if err != nil {
				return err
			}
			*single = r
			return nil
		}
	}
	return h
}

func (p *parser) services(n *yaml.Node, base string) error {
	s := &p.cfg.Services
	simple := func(svc *Service, proto string) func(*yaml.Node, string) error {
		return func(n *yaml.Node, k string) error {
			dst := &svc.TCP
			if proto == "udp" {
				dst = &svc.UDP
			}
			return p.mapping(n, k, p.serviceKeys(svc, dst))
		}
	}
	return p.mapping(n, base, map[string]func(*yaml.Node, string) error{
		"ssh": func(n *yaml.Node, k string) error {
			if err := p.mapping(n, k, p.serviceKeys(&s.SSH.Service, &s.SSH.TCP)); err != nil {
				return err
			}
			if len(s.SSH.TCP) != 1 || s.SSH.TCP[0].Lo != s.SSH.TCP[0].Hi {
				return p.errf(n, k+".port", "give exactly one port for ssh (like 22)")
			}
			s.SSH.Port = s.SSH.TCP[0].Lo
			return nil
		},
		"sip": func(n *yaml.Node, k string) error {
			sip := &s.SIP
			var plain []PortRange
			for _, r := range sip.TCP {
				if !containsRange(sip.TLS, r) {
					plain = append(plain, r)
				}
			}
			h := p.serviceKeys(&sip.Service, nil)
			h["udp"] = func(n *yaml.Node, k string) error {
				r, err := p.ports(n, k)
				sip.UDP = r
				return err
			}
			h["tcp"] = func(n *yaml.Node, k string) error {
				r, err := p.ports(n, k)
				plain = r
				return err
			}
			h["tls"] = func(n *yaml.Node, k string) error {
				r, err := p.ports(n, k)
				sip.TLS = r
				return err
			}
			h["rate_limit"] = func(n *yaml.Node, k string) error { return p.limit(n, k, &sip.RateLimit) }
			if err := p.mapping(n, k, h); err != nil {
				return err
			}
			sip.TCP = append(append([]PortRange(nil), plain...), sip.TLS...)
			return nil
		},
		"rtp":   simple(&s.RTP, "udp"),
		"ami":   simple(&s.AMI, "tcp"),
		"http":  simple(&s.HTTP, "tcp"),
		"https": simple(&s.HTTPS, "tcp"),
		"custom": func(n *yaml.Node, k string) error {
			if n.Kind != yaml.SequenceNode {
				return p.errf(n, k, "expected a list of services, each like {name: tftp, udp: 69, from: trusted}")
			}
			names := map[string]bool{"ssh": true, "sip": true, "rtp": true, "ami": true, "http": true, "https": true}
			bad := false
			for i, item := range n.Content {
				c := Service{Enabled: true, From: Sources{Kind: FromTrusted}, Why: "custom service"}
				ik := fmt.Sprintf("%s[%d]", k, i)
				h := p.serviceKeys(&c, nil)
				h["name"] = func(n *yaml.Node, k string) error {
					v, err := p.scalar(n, k)
					if err != nil {
						return err
					}
					ok := v != ""
					for _, r := range v {
						if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
							ok = false
						}
					}
					if !ok || len(v) > 24 {
						return p.errf(n, k, "%q is not a service name (lower-case letters, digits, - and _, at most 24)", v)
					}
					c.Name = v
					return nil
				}
				h["tcp"] = func(n *yaml.Node, k string) error {
					r, err := p.ports(n, k)
					c.TCP = r
					return err
				}
				h["udp"] = func(n *yaml.Node, k string) error {
					r, err := p.ports(n, k)
					c.UDP = r
					return err
				}
				h["why"] = func(n *yaml.Node, k string) error {
					v, err := p.scalar(n, k)
					if strings.ContainsAny(v, "\"\\\n") || len(v) > 60 {
						return p.errf(n, k, "keep the description under 60 characters without quotes or backslashes")
					}
					c.Why = v
					return err
				}
				// Each item is checked, whatever the previous ones hold.
				if err := p.mapping(item, ik, h); err != nil {
					p.record(err)
					bad = true
					continue
				}
				if c.Name == "" {
					p.record(p.errf(item, ik, "a custom service needs a name (like name: tftp)"))
					bad = true
					continue
				}
				if names[c.Name] {
					p.record(p.errf(item, ik+".name", "%q is already used; pick another name", c.Name))
					bad = true
					continue
				}
				names[c.Name] = true
				if len(c.TCP)+len(c.UDP) == 0 {
					p.record(p.errf(item, ik, "a custom service needs tcp: or udp: ports"))
					bad = true
					continue
				}
				s.Custom = append(s.Custom, c)
			}
			if bad {
				return errReported
			}
			return nil
		},
	})
}

func containsRange(list []PortRange, r PortRange) bool {
	for _, x := range list {
		if x == r {
			return true
		}
	}
	return false
}

// rate parses "20/second", "20/s", "100/minute".
func parseRate(v string) (Rate, bool) {
	num, unit, ok := strings.Cut(strings.TrimSpace(v), "/")
	if !ok {
		return Rate{}, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 1 || n > 1000000 {
		return Rate{}, false
	}
	switch strings.TrimSpace(unit) {
	case "s", "sec", "second":
		return Rate{n, "second"}, true
	case "m", "min", "minute":
		return Rate{n, "minute"}, true
	case "h", "hour":
		return Rate{n, "hour"}, true
	}
	return Rate{}, false
}

// limit reads `false`, `true` (defaults) or {rate: 20/second, burst: 40}.
func (p *parser) limit(n *yaml.Node, key string, dst *Limit) error {
	if n.Kind == yaml.ScalarNode {
		return p.boolean(n, key, &dst.Enabled)
	}
	dst.Enabled = true
	return p.mapping(n, key, map[string]func(*yaml.Node, string) error{
		"enabled": func(n *yaml.Node, k string) error { return p.boolean(n, k, &dst.Enabled) },
		"rate": func(n *yaml.Node, k string) error {
			v, err := p.scalar(n, k)
			if err != nil {
				return err
			}
			r, ok := parseRate(v)
			if !ok {
				return p.errf(n, k, "%q is not a rate (try 20/second, 100/minute)", v)
			}
			dst.Rate = r
			return nil
		},
		"burst": func(n *yaml.Node, k string) error { return p.integer(n, k, 1, 1000000, &dst.Burst) },
	})
}

func (p *parser) protections(n *yaml.Node, base string) error {
	pr := &p.cfg.Protections
	b := func(dst *bool) func(*yaml.Node, string) error {
		return func(n *yaml.Node, k string) error { return p.boolean(n, k, dst) }
	}
	return p.mapping(n, base, map[string]func(*yaml.Node, string) error{
		"null":        b(&pr.Null),
		"xmas":        b(&pr.Xmas),
		"syn_fin":     b(&pr.SynFin),
		"syn_rst":     b(&pr.SynRst),
		"fin_no_ack":  b(&pr.FinNoAck),
		"new_not_syn": b(&pr.NewNotSyn),
		"fragments":   b(&pr.Fragments),
		"syn_flood":   func(n *yaml.Node, k string) error { return p.limit(n, k, &pr.SynFlood) },
		"icmp_echo":   func(n *yaml.Node, k string) error { return p.limit(n, k, &pr.ICMPEcho) },
		"ssh_conn_limit": func(n *yaml.Node, k string) error {
			if n.Kind == yaml.ScalarNode && (n.Value == "false" || n.Value == "off") {
				pr.SSHConnLimit = 0
				return nil
			}
			return p.integer(n, k, 0, 10000, &pr.SSHConnLimit)
		},
	})
}

func (p *parser) portScan(n *yaml.Node, base string) error {
	ps := &p.cfg.PortScan
	if n.Kind == yaml.ScalarNode {
		return p.boolean(n, base, &ps.Enabled)
	}
	ps.Enabled = true
	return p.mapping(n, base, map[string]func(*yaml.Node, string) error{
		"enabled": func(n *yaml.Node, k string) error { return p.boolean(n, k, &ps.Enabled) },
		"ports":   func(n *yaml.Node, k string) error { return p.integer(n, k, 2, 10000, &ps.Ports) },
		"within":  func(n *yaml.Node, k string) error { return p.duration(n, k, time.Second, &ps.Within) },
		"ban":     func(n *yaml.Node, k string) error { return p.duration(n, k, time.Second, &ps.Ban) },
	})
}

func (p *parser) sipScanner(n *yaml.Node, base string) error {
	ss := &p.cfg.SIPScanner
	if n.Kind == yaml.ScalarNode {
		return p.boolean(n, base, &ss.Enabled)
	}
	ss.Enabled = true
	return p.mapping(n, base, map[string]func(*yaml.Node, string) error{
		"enabled": func(n *yaml.Node, k string) error { return p.boolean(n, k, &ss.Enabled) },
		"ban":     func(n *yaml.Node, k string) error { return p.duration(n, k, time.Second, &ss.Ban) },
		"search_bytes": func(n *yaml.Node, k string) error {
			return p.integer(n, k, 64, 1400, &ss.SearchBytes)
		},
		"user_agents": func(n *yaml.Node, k string) error {
			if n.Kind != yaml.SequenceNode {
				return p.errf(n, k, "expected a list of User-Agent prefixes, like [friendly-scanner, sipvicious]")
			}
			ss.UserAgents = nil
			for _, it := range n.Content {
				v, err := p.scalar(it, k)
				if err != nil {
					return err
				}
				if len(v) < 4 || len(v) > 64 || strings.ContainsAny(v, "\"\\\r\n") {
					return p.errf(it, k, "%q: a User-Agent prefix needs 4 to 64 characters without quotes or backslashes", v)
				}
				ss.UserAgents = append(ss.UserAgents, v)
			}
			return nil
		},
	})
}
