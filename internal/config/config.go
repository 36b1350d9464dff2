// Package config reads pbxguard's one YAML configuration file. Every key is
// documented in deploy/pbxguard.yaml. Errors carry the line number and say
// what to write instead; unknown keys are errors with a "did you mean" hint.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Defaults.
const (
	DefaultStateDir      = "/var/lib/pbxguard"
	DefaultSocket        = "/run/pbxguard/pbxguard.sock"
	DefaultMetricsListen = "127.0.0.1:9469"
	DefaultLoggerConf    = "/etc/asterisk/logger.conf"
	DefaultAsteriskConf  = "/etc/asterisk/asterisk.conf"
	DefaultAsteriskLogs  = "/var/log/asterisk"
	DefaultAuthLog       = "/var/log/auth.log"
	DefaultAsteriskDir   = "/etc/asterisk"
)

// Config is the whole configuration.
type Config struct {
	// Path is the file it was read from ("" for defaults only).
	Path      string
	StateDir  string
	Timezone  string         // "" = the host's local zone
	Location  *time.Location // Timezone resolved
	Allowlist []netip.Prefix // configured entries plus loopback and the host's own addresses
	Firewall  Firewall
	Control   Control
	Metrics   Metrics
	Jails     []Jail // sorted by name; disabled jails included (Enabled=false)
	Audit     Audit
	// AllowlistAsteriskTrunks adds, at start, the SIP/IAX trunks that the
	// Asterisk configuration (Audit.AsteriskDir) identifies by a literal
	// address to the allowlist (default true).
	AllowlistAsteriskTrunks bool
	// Fraud is the raw `fraud:` section (parsed by the fraud package), nil when absent.
	Fraud *yaml.Node
	// Sensor is the packet-level SIP sensor (sensor.go).
	Sensor Sensor
	// Cluster shares bans with other nodes over NATS (cluster.go).
	Cluster Cluster
	// Warnings are things that work but deserve the administrator's attention.
	Warnings []string
}

// Firewall is the `firewall:` section.
type Firewall struct {
	Backend string // nftables | ipset | iptables | dry-run | auto
	Forward bool   // also drop banned addresses on the forward hook (containers, VMs)
	MaxElem int    // kernel set size (ipset maxelem); 0 = sized from the jails' max_tracked
	// Policy is the raw `firewall.policy:` section (parsed by the policy package), nil when absent.
	Policy *yaml.Node
}

// Audit is the `audit:` section: the Asterisk configuration audit the
// daemon runs at start.
type Audit struct {
	Enabled bool // default true
	// AsteriskDir is the Asterisk configuration directory (default
	// /etc/asterisk); allowlist_asterisk_trunks reads it too.
	AsteriskDir string
	// TrustedEndpoints may dial international numbers (audit.Options).
	TrustedEndpoints []string
}

// Control is the `control:` section.
type Control struct {
	Socket string
}

// Metrics is the `metrics:` section.
type Metrics struct {
	Listen string // "" disables the endpoint
}

// Jail is one entry of `jails:`.
type Jail struct {
	Name     string
	Line     int // line of its key in the file, 0 for built-in defaults
	Enabled  bool
	Detector string
	// Source is where events come from: "log" (files and/or journal) or
	// "ami" (fed by the AMI security events, not by log lines).
	Source           string
	Files            []string
	Journal          []string // journalctl matches, e.g. _SYSTEMD_UNIT=ssh.service
	MaxRetry         int
	FindTime         time.Duration
	BanTime          time.Duration
	MaxBanTime       time.Duration
	Increment        float64
	IPv6Prefix       int
	Weights          map[event.Kind]int // only the kinds the user set; the jail defaults the rest
	ChallengeTimeout time.Duration
	MaxTracked       int
}

// Options are the host facts the defaults depend on; zero values mean the
// real host. Tests set them.
type Options struct {
	LoggerConf   string // Asterisk logger.conf, default /etc/asterisk/logger.conf
	AsteriskConf string // Asterisk asterisk.conf (astlogdir)
	AsteriskLogs string // default log directory
	AuthLog      string // sshd's log file when no journal
	// HostPrefixes returns the host's own addresses; nil means net.Interfaces.
	HostPrefixes func() []netip.Prefix
	// HaveJournal reports whether journalctl is usable; nil means look it up on PATH.
	HaveJournal func() bool
}

func (o Options) withDefaults() Options {
	if o.LoggerConf == "" {
		o.LoggerConf = DefaultLoggerConf
	}
	if o.AsteriskConf == "" {
		o.AsteriskConf = DefaultAsteriskConf
	}
	if o.AsteriskLogs == "" {
		o.AsteriskLogs = readAstLogDir(o.AsteriskConf, DefaultAsteriskLogs)
	}
	if o.AuthLog == "" {
		o.AuthLog = DefaultAuthLog
	}
	if o.HostPrefixes == nil {
		o.HostPrefixes = HostPrefixes
	}
	if o.HaveJournal == nil {
		o.HaveJournal = func() bool {
			_, err := exec.LookPath("journalctl")
			return err == nil
		}
	}
	return o
}

// Error is one problem in the file, with its line.
type Error struct {
	Line int    // 0 when not tied to a line
	Key  string // dotted key path, e.g. jails.asterisk.bantime
	Msg  string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads and checks the file at path. A failure is an Errors (line
// numbered problems) or an I/O error, both wrapped.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w (write one from deploy/pbxguard.yaml)", err)
	}
	c, err := Parse(data, opts)
	if c != nil {
		c.Path = path
	}
	return c, err
}

// Default returns the configuration of an empty file.
func Default(opts Options) (*Config, error) { return Parse(nil, opts) }

// Parse reads a configuration from YAML text.
func Parse(data []byte, opts Options) (*Config, error) {
	opts = opts.withDefaults()
	p := &parser{opts: opts}
	c := &Config{
		StateDir: DefaultStateDir,
		Firewall: Firewall{Backend: "auto"},
		Control:  Control{Socket: DefaultSocket},
		Metrics:  Metrics{Listen: DefaultMetricsListen},
		Audit:    Audit{Enabled: true, AsteriskDir: DefaultAsteriskDir},

		AllowlistAsteriskTrunks: true,
		Sensor:                  DefaultSensor(),
		Cluster:                 DefaultCluster(),
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, Errors{{Msg: yamlErr(err)}}
	}
	var root *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	var userAllow []netip.Prefix
	jailsSeen := false
	if root != nil && !(root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		p.mapping(root, "", map[string]func(k string, v *yaml.Node){
			"state_dir": func(k string, v *yaml.Node) { c.StateDir = p.path(k, v) },
			"timezone":  func(k string, v *yaml.Node) { c.Timezone = p.str(k, v) },
			"allowlist": func(k string, v *yaml.Node) { userAllow = p.prefixes(k, v) },
			"firewall": func(k string, v *yaml.Node) {
				p.mapping(v, k, map[string]func(string, *yaml.Node){
					"backend": func(k string, v *yaml.Node) {
						c.Firewall.Backend = p.oneOf(k, v, "nftables", "ipset", "iptables", "dry-run", "auto")
					},
					"forward":  func(k string, v *yaml.Node) { c.Firewall.Forward = p.boolean(k, v) },
					"max_elem": func(k string, v *yaml.Node) { c.Firewall.MaxElem = p.intRange(k, v, 0, 1<<30) },
					"policy":   func(_ string, v *yaml.Node) { c.Firewall.Policy = v },
				})
			},
			"control": func(k string, v *yaml.Node) {
				p.mapping(v, k, map[string]func(string, *yaml.Node){
					"socket": func(k string, v *yaml.Node) { c.Control.Socket = p.path(k, v) },
				})
			},
			"metrics": func(k string, v *yaml.Node) {
				p.mapping(v, k, map[string]func(string, *yaml.Node){
					"listen": func(k string, v *yaml.Node) { c.Metrics.Listen = p.listen(k, v) },
				})
			},
			"fraud":   func(_ string, v *yaml.Node) { c.Fraud = v },
			"sensor":  func(k string, v *yaml.Node) { p.sensor(k, v, &c.Sensor) },
			"cluster": func(k string, v *yaml.Node) { p.cluster(k, v, &c.Cluster) },
			"audit": func(k string, v *yaml.Node) {
				p.mapping(v, k, map[string]func(string, *yaml.Node){
					"enabled":           func(k string, v *yaml.Node) { c.Audit.Enabled = p.boolean(k, v) },
					"asterisk_dir":      func(k string, v *yaml.Node) { c.Audit.AsteriskDir = p.path(k, v) },
					"trusted_endpoints": func(k string, v *yaml.Node) { c.Audit.TrustedEndpoints = p.strings(k, v) },
				})
			},
			"allowlist_asterisk_trunks": func(k string, v *yaml.Node) { c.AllowlistAsteriskTrunks = p.boolean(k, v) },
			"jails": func(k string, v *yaml.Node) {
				jailsSeen = true
				c.Jails = p.jails(k, v)
			},
		})
	}
	if c.Timezone != "" {
		loc, err := time.LoadLocation(c.Timezone)
		if err != nil {
			p.errorf(p.lineOf["timezone"], "timezone", "%q is not a known zone (try Europe/Paris, UTC, or leave it out for the host's zone)", c.Timezone)
		} else {
			c.Location = loc
		}
	}
	if c.Location == nil {
		c.Location = time.Local
	}
	if !jailsSeen {
		c.Jails = p.jails("jails", nil)
	}
	p.checkSensor(c)
	p.checkCluster(c)
	c.Allowlist = mergePrefixes(append(append(loopback(), opts.HostPrefixes()...), userAllow...))
	c.Warnings = p.warnings
	if len(p.errs) > 0 {
		return c, p.errs
	}
	return c, nil
}

// Enabled returns the enabled jails.
func (c *Config) Enabled() []Jail {
	var out []Jail
	for _, j := range c.Jails {
		if j.Enabled {
			out = append(out, j)
		}
	}
	return out
}

type parser struct {
	opts     Options
	errs     Errors
	warnings []string
	lineOf   map[string]int
}

func (p *parser) errorf(line int, key, format string, args ...any) {
	p.errs = append(p.errs, Error{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) warnf(format string, args ...any) {
	p.warnings = append(p.warnings, fmt.Sprintf(format, args...))
}

func join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// mapping walks a mapping node, calling fields[key] for each key; unknown
// keys and duplicates are errors.
func (p *parser) mapping(n *yaml.Node, prefix string, fields map[string]func(string, *yaml.Node)) {
	if p.lineOf == nil {
		p.lineOf = map[string]int{}
	}
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		p.errorf(n.Line, prefix, "expected a mapping of keys (key: value), found %s", describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key := kn.Value
		full := join(prefix, key)
		if seen[key] {
			p.errorf(kn.Line, full, "appears twice (keep one)")
			continue
		}
		seen[key] = true
		f, ok := fields[key]
		if !ok {
			known := make([]string, 0, len(fields))
			for k := range fields {
				known = append(known, k)
			}
			sort.Strings(known)
			if s := suggest(key, known); s != "" {
				p.errorf(kn.Line, full, "unknown key (did you mean %q?)", s)
			} else {
				p.errorf(kn.Line, full, "unknown key (known here: %s)", strings.Join(known, ", "))
			}
			continue
		}
		p.lineOf[full] = kn.Line
		f(full, vn)
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func (p *parser) scalar(k string, v *yaml.Node) (string, bool) {
	if v.Kind != yaml.ScalarNode {
		p.errorf(v.Line, k, "expected a single value, found %s", describe(v))
		return "", false
	}
	return v.Value, true
}

func (p *parser) str(k string, v *yaml.Node) string {
	s, _ := p.scalar(k, v)
	return s
}

func (p *parser) path(k string, v *yaml.Node) string {
	s, ok := p.scalar(k, v)
	if ok && !strings.HasPrefix(s, "/") {
		p.errorf(v.Line, k, "%q is not an absolute path (write it from /)", s)
	}
	return s
}

func (p *parser) boolean(k string, v *yaml.Node) bool {
	s, ok := p.scalar(k, v)
	if !ok {
		return false
	}
	switch strings.ToLower(s) {
	case "true", "yes", "on":
		return true
	case "false", "no", "off":
		return false
	}
	p.errorf(v.Line, k, "%q is not true or false", s)
	return false
}

func (p *parser) intRange(k string, v *yaml.Node, lo, hi int) int {
	s, ok := p.scalar(k, v)
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		p.errorf(v.Line, k, "%q is not a whole number", s)
		return 0
	}
	if n < lo || n > hi {
		p.errorf(v.Line, k, "%d is out of range (%d to %d)", n, lo, hi)
		return 0
	}
	return n
}

func (p *parser) duration(k string, v *yaml.Node) time.Duration {
	s, ok := p.scalar(k, v)
	if !ok {
		return 0
	}
	d, err := ParseDuration(s)
	if err != nil {
		p.errorf(v.Line, k, "%q is not a duration (try 1h, 30m, 1w)", s)
		return 0
	}
	return d
}

func (p *parser) oneOf(k string, v *yaml.Node, choices ...string) string {
	s, ok := p.scalar(k, v)
	if !ok {
		return ""
	}
	for _, c := range choices {
		if s == c {
			return s
		}
	}
	if h := suggest(s, choices); h != "" {
		p.errorf(v.Line, k, "%q is not one of %s (did you mean %q?)", s, strings.Join(choices, ", "), h)
	} else {
		p.errorf(v.Line, k, "%q is not one of %s", s, strings.Join(choices, ", "))
	}
	return ""
}

func (p *parser) strings(k string, v *yaml.Node) []string {
	if v.Kind == yaml.ScalarNode {
		if v.Tag == "!!null" {
			return nil
		}
		return []string{v.Value}
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, k, "expected a list, found %s", describe(v))
		return nil
	}
	out := make([]string, 0, len(v.Content))
	for _, e := range v.Content {
		if s, ok := p.scalar(k, e); ok {
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) prefixes(k string, v *yaml.Node) []netip.Prefix {
	var out []netip.Prefix
	nodes := v.Content
	if v.Kind == yaml.ScalarNode {
		nodes = []*yaml.Node{v}
	} else if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, k, "expected a list of addresses or prefixes, found %s", describe(v))
		return nil
	}
	for _, e := range nodes {
		s, ok := p.scalar(k, e)
		if !ok {
			continue
		}
		pfx, err := ParsePrefix(s)
		if err != nil {
			p.errorf(e.Line, k, "%q is not an address or prefix (write 192.0.2.7, 192.0.2.0/24 or 2001:db8::/48)", s)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

func (p *parser) listen(k string, v *yaml.Node) string {
	s, ok := p.scalar(k, v)
	if !ok || s == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		p.errorf(v.Line, k, "%q is not host:port (try \"127.0.0.1:9469\", or \"\" to turn metrics off)", s)
		return ""
	}
	if host != "" && host != "localhost" {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() {
			p.warnf("metrics.listen %s is not a loopback address: /metrics will be reachable from the network", s)
		}
	}
	return s
}

// ParsePrefix reads an address (as a single-address prefix) or a CIDR.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, errors.New("use the IPv4 form")
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// HostPrefixes returns the host's own addresses as single-address prefixes.
func HostPrefixes() []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
	}
	return out
}

// mergePrefixes drops duplicates and entries inside another entry.
func mergePrefixes(in []netip.Prefix) []netip.Prefix {
	out := in[:0:0]
	for i, p := range in {
		covered := false
		for j, q := range in {
			if i != j && q.Bits() <= p.Bits() && q.Contains(p.Addr()) && (q.Bits() < p.Bits() || j < i) {
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

func yamlErr(err error) string {
	// yaml.v3 says "yaml: line 3: mapping values are not allowed in this context".
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	return s + " (check the indentation and the colons on that line)"
}

// suggest returns the candidate nearest to s when it is close enough.
func suggest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := levenshtein(strings.ToLower(s), c)
		if d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= 2 || (bestD <= 3 && len(s) > 6) || strings.ReplaceAll(strings.ToLower(s), "-", "_") == best ||
		strings.ReplaceAll(strings.ToLower(s), "_", "") == strings.ReplaceAll(best, "_", "") {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
