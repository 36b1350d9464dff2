// Package config reads pbxguard's one YAML configuration file. Every key is
// documented in deploy/pbxguard.yaml. Errors carry the line number and say
// what to write instead; unknown keys are errors with a "did you mean" hint.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/confyaml"
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
	// History is the raw `history:` section (ParseHistory, history.go), nil when absent.
	History *yaml.Node
	// Dashboard is the raw `dashboard:` section (ParseDashboard, dashboard.go), nil when absent.
	Dashboard *yaml.Node
	// Cluster shares bans with other nodes over NATS (cluster.go).
	Cluster Cluster
	// Warnings are things that work but deserve the administrator's attention.
	Warnings []string
	// Lines maps each key path read (jails.asterisk.files) to its line.
	Lines map[string]int
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
	// LoggerConf is Asterisk's logger.conf; default logger.conf in
	// audit.asterisk_dir (/etc/asterisk unless the file says otherwise).
	LoggerConf string
	// AsteriskConf is Asterisk's asterisk.conf (for astlogdir); default
	// asterisk.conf in audit.asterisk_dir.
	AsteriskConf string
	// AsteriskLogs is the default log directory: astlogdir of
	// asterisk.conf, else /var/log/asterisk.
	AsteriskLogs string
	AuthLog      string // sshd's log file when no journal
	// HostPrefixes returns the host's own addresses; nil means net.Interfaces.
	HostPrefixes func() []netip.Prefix
	// HaveJournal reports whether journalctl is usable; nil means look it up on PATH.
	HaveJournal func() bool
}

// withAsteriskDir fills in the Asterisk files from the Asterisk
// configuration directory (audit.asterisk_dir).
func (o Options) withAsteriskDir(dir string) Options {
	if dir == "" {
		dir = DefaultAsteriskDir
	}
	if o.LoggerConf == "" {
		o.LoggerConf = filepath.Join(dir, "logger.conf")
	}
	if o.AsteriskConf == "" {
		o.AsteriskConf = filepath.Join(dir, "asterisk.conf")
	}
	if o.AsteriskLogs == "" {
		o.AsteriskLogs = readAstLogDir(o.AsteriskConf, DefaultAsteriskLogs)
	}
	return o
}

func (o Options) withDefaults() Options {
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

// Error is one problem in the file, with its line, key path and
// suggestion: the one error type of every section (see confyaml).
type Error = confyaml.Error

// Errors is every problem found in one file.
type Errors = confyaml.Errors

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
	lines := map[string]int{}
	p := &parser{Walker: &confyaml.Walker{Lines: lines}, opts: opts, lineOf: lines}
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
		line, msg := yamlErr(err)
		return nil, Errors{{Line: line, Msg: msg}}
	}
	var root *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	var userAllow []netip.Prefix
	jailsSeen := false
	var jailsNode *yaml.Node
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
			"history":                   func(_ string, v *yaml.Node) { c.History = v },
			"dashboard":                 func(_ string, v *yaml.Node) { c.Dashboard = v },
			"jails": func(k string, v *yaml.Node) {
				jailsSeen, jailsNode = true, v
			},
		})
	}
	// The jails last: their log discovery reads logger.conf in
	// audit.asterisk_dir, wherever the audit: section is in the file.
	p.opts = p.opts.withAsteriskDir(c.Audit.AsteriskDir)
	if jailsSeen {
		c.Jails = p.jails("jails", jailsNode)
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
	c.Warnings = p.Warnings
	c.Lines = p.Lines
	if len(p.Errs) > 0 {
		p.Errs.Sort()
		return c, p.Errs
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
	*confyaml.Walker
	opts   Options
	lineOf map[string]int // the Walker's Lines: key path → line
}

func (p *parser) scalar(k string, v *yaml.Node) (string, bool) { return p.Scalar(k, v) }

func (p *parser) errorf(line int, key, format string, args ...any) {
	p.Errorf(line, key, format, args...)
}

func (p *parser) warnf(format string, args ...any) { p.Warnf(format, args...) }

func join(prefix, k string) string { return confyaml.Join(prefix, k) }

func describe(n *yaml.Node) string { return confyaml.Describe(n) }

func (p *parser) mapping(n *yaml.Node, prefix string, fields map[string]func(string, *yaml.Node)) {
	p.Mapping(n, prefix, fields)
}

func (p *parser) str(k string, v *yaml.Node) string {
	s, _ := p.scalar(k, v)
	return s
}

func (p *parser) path(k string, v *yaml.Node) string { return p.Path(k, v) }

func (p *parser) boolean(k string, v *yaml.Node) bool { return p.Bool(k, v) }

func (p *parser) intRange(k string, v *yaml.Node, lo, hi int) int { return p.Int(k, v, lo, hi) }

func (p *parser) duration(k string, v *yaml.Node) time.Duration {
	d, _ := p.Duration(k, v, 0, 0, "try 1h, 30m, 1w")
	return d
}

func (p *parser) oneOf(k string, v *yaml.Node, choices ...string) string {
	return p.OneOf(k, v, choices...)
}

func (p *parser) strings(k string, v *yaml.Node) []string { return p.Strings(k, v) }

func (p *parser) prefixes(k string, v *yaml.Node) []netip.Prefix { return p.Prefixes(k, v) }

func (p *parser) listen(k string, v *yaml.Node) string {
	s := p.HostPort(k, v, true, `try "127.0.0.1:9469", or "" to turn metrics off`)
	if s == "" {
		return ""
	}
	host, _, _ := net.SplitHostPort(s)
	if host != "" && host != "localhost" {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsLoopback() {
			p.warnf("metrics.listen %s is not a loopback address: /metrics will be reachable from the network", s)
		}
	}
	return s
}

// ParsePrefix reads an address (as a single-address prefix) or a CIDR.
func ParsePrefix(s string) (netip.Prefix, error) { return confyaml.ParsePrefix(s) }

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

// yamlErr splits yaml.v3's "yaml: line 3: mapping values are not allowed
// in this context" into the line and the message.
func yamlErr(err error) (int, string) {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if n, msg, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, s = l, msg
			}
		}
	}
	return line, s + " (check the indentation and the colons on that line)"
}

func suggest(s string, candidates []string) string { return confyaml.Suggest(s, candidates) }
