package daemon

import (
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/audit"
	"github.com/pbxguard/pbxguard/internal/config"
)

// Trunk is an address that Asterisk's configuration names as a SIP or IAX
// peer: a pjsip `type=identify` `match=` or a chan_sip/IAX peer's static
// `host=`. A carrier wrongly banned is an outage, and UDP sources can be
// spoofed, so these go into the allowlist (allowlist_asterisk_trunks).
type Trunk struct {
	Prefix  netip.Prefix `json:"prefix"`
	Section string       `json:"section"`
	Kind    string       `json:"kind"` // "pjsip identify", "sip peer", "iax peer"
	At      string       `json:"at"`   // file:line of the value
}

// SkippedTrunk is a trunk address that was not allowlisted, and why.
type SkippedTrunk struct {
	Value   string `json:"value"`
	Section string `json:"section"`
	Kind    string `json:"kind"`
	At      string `json:"at"`
	Why     string `json:"why"`
}

// Widest prefixes taken from Asterisk's configuration; a wider `match=`
// (0.0.0.0/0 would turn banning off) is skipped and must be written in
// pbxguard's allowlist by hand if it is really meant.
const (
	trunkMinBits4 = 16
	trunkMinBits6 = 32
)

// AsteriskTrunks reads pjsip.conf, sip.conf and iax.conf (with their
// relative #includes) in the Asterisk configuration directory dir and
// returns the literal trunk addresses, and those it skipped: hostnames
// (pbxguard does no DNS lookups), negated and too wide entries. Missing
// files are fine; an unreadable directory is an error.
func AsteriskTrunks(dir string) ([]Trunk, []SkippedTrunk, error) {
	if _, err := os.ReadDir(dir); err != nil {
		return nil, nil, fmt.Errorf("asterisk configuration %s: %w", dir, err)
	}
	t, s := asteriskTrunks(os.DirFS(dir))
	return t, s, nil
}

func asteriskTrunks(fsys fs.FS) (trunks []Trunk, skipped []SkippedTrunk) {
	parse := func(name string) *audit.File {
		if _, err := fs.Stat(fsys, name); err != nil {
			return nil
		}
		return audit.Parse(fsys, name)
	}
	take := func(v *audit.Var, section, kind, item string) {
		at := v.Pos.String()
		p, why := trunkPrefix(item)
		if why != "" {
			skipped = append(skipped, SkippedTrunk{Value: item, Section: section, Kind: kind, At: at, Why: why})
			return
		}
		trunks = append(trunks, Trunk{Prefix: p, Section: section, Kind: kind, At: at})
	}
	if f := parse("pjsip.conf"); f != nil {
		for _, s := range f.Concrete() {
			if !strings.EqualFold(s.Value("type", ""), "identify") {
				continue
			}
			for _, v := range s.All("match") {
				for _, item := range strings.Split(v.Value, ",") {
					if item = strings.TrimSpace(item); item != "" {
						take(v, s.Name, "pjsip identify", item)
					}
				}
			}
		}
	}
	for _, c := range []struct{ file, kind string }{{"sip.conf", "sip peer"}, {"iax.conf", "iax peer"}} {
		f := parse(c.file)
		if f == nil {
			continue
		}
		for _, s := range f.Concrete() {
			if strings.EqualFold(s.Name, "general") || strings.EqualFold(s.Name, "authentication") {
				continue
			}
			v, ok := s.Get("host")
			if !ok {
				continue
			}
			h := strings.TrimSpace(v.Value)
			if h == "" || strings.EqualFold(h, "dynamic") {
				continue // registers from wherever it is: nothing to trust
			}
			take(v, s.Name, c.kind, h)
		}
	}
	return trunks, skipped
}

// trunkPrefix reads one address as Asterisk writes it: 192.0.2.7,
// 192.0.2.7:5060, 192.0.2.0/24, 192.0.2.0/255.255.255.0, 2001:db8::7,
// [2001:db8::7]:5060, 2001:db8::/64. why is non-empty when it is skipped.
func trunkPrefix(s string) (netip.Prefix, string) {
	if strings.HasPrefix(s, "!") {
		return netip.Prefix{}, "an excluded (!) entry: nothing to allowlist"
	}
	addr, mask, hasMask := strings.Cut(s, "/")
	if strings.HasPrefix(addr, "[") {
		end := strings.IndexByte(addr, ']')
		if end < 0 {
			return netip.Prefix{}, "not an address"
		}
		rest := addr[end+1:]
		if rest != "" && !isPort(strings.TrimPrefix(rest, ":")) {
			return netip.Prefix{}, "not an address"
		}
		addr = addr[1:end]
	} else if host, port, ok := strings.Cut(addr, ":"); ok && !strings.Contains(port, ":") {
		if !isPort(port) {
			return netip.Prefix{}, "not an address"
		}
		addr = host
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, "a hostname: pbxguard does no DNS lookups; add the trunk's address to allowlist: by hand"
	}
	a = a.Unmap().WithZone("")
	bits := a.BitLen()
	if hasMask {
		if n, err := strconv.Atoi(mask); err == nil && n >= 0 && n <= a.BitLen() {
			bits = n
		} else if m, err := netip.ParseAddr(mask); err == nil && m.Is4() && a.Is4() {
			if bits = maskBits(m); bits < 0 {
				return netip.Prefix{}, "a non-contiguous netmask"
			}
		} else {
			return netip.Prefix{}, "not an address or network"
		}
	}
	if (a.Is4() && bits < trunkMinBits4) || (a.Is6() && bits < trunkMinBits6) {
		return netip.Prefix{}, fmt.Sprintf("wider than /%d (IPv4) or /%d (IPv6): write it in allowlist: by hand if it is really meant", trunkMinBits4, trunkMinBits6)
	}
	return netip.PrefixFrom(a, bits).Masked(), ""
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536
}

// maskBits turns 255.255.255.0 into 24; -1 for a non-contiguous mask.
func maskBits(m netip.Addr) int {
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n := 0
	for v&0x80000000 != 0 {
		n++
		v <<= 1
	}
	if v != 0 {
		return -1
	}
	return n
}

// AllowEntry is one entry of the daemon's allowlist and where it came from.
type AllowEntry struct {
	Prefix netip.Prefix `json:"prefix"`
	// From: "loopback", "host address", "allowlist (FILE:LINE)", or for a
	// trunk "FILE:LINE [section] pjsip identify" (sip peer, iax peer).
	From     string `json:"from"`
	Loopback bool   `json:"loopback,omitempty"`
	Trunk    bool   `json:"trunk,omitempty"`
}

// Allowlist is the daemon's one allowlist, computed once per (re)start:
// cfg.Allowlist (loopback, the host's own addresses, allowlist:) and, with
// allowlist_asterisk_trunks, the literal trunk addresses of the Asterisk
// configuration (audit.asterisk_dir). The jails, the ban gate before the
// kernel and the compiled firewall policy (`pbxguard firewall plan/apply`:
// policy.Trusted.SIP, exempt from the SIP rate limits and scanner guard)
// all use it. log (nil = quiet) gets each trunk taken or skipped.
func Allowlist(cfg *config.Config, log *slog.Logger) []AllowEntry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hosts := map[netip.Prefix]bool{}
	for _, p := range config.HostPrefixes() {
		hosts[p.Masked()] = true
	}
	lines := allowlistLines(cfg.Path)
	out := make([]AllowEntry, 0, len(cfg.Allowlist))
	for _, p := range cfg.Allowlist {
		e := AllowEntry{Prefix: p}
		switch {
		case p == netip.MustParsePrefix("127.0.0.0/8") || p == netip.MustParsePrefix("::1/128"):
			e.From, e.Loopback = "loopback", true
		case lines[p.Masked()] > 0:
			e.From = fmt.Sprintf("allowlist (%s:%d)", cfg.Path, lines[p.Masked()])
		case hosts[p.Masked()]:
			e.From = "host address"
		default:
			e.From = "allowlist (" + cfg.Path + ")"
		}
		out = append(out, e)
	}
	if cfg.AllowlistAsteriskTrunks {
		for _, t := range trunkAllowlist(cfg.Audit.AsteriskDir, log) {
			out = append(out, AllowEntry{Prefix: t.Prefix, Trunk: true,
				From: fmt.Sprintf("%s [%s] %s", filepath.Join(cfg.Audit.AsteriskDir, t.At), t.Section, t.Kind)})
		}
	}
	return out
}

// allowlistLines maps the entries of the top-level allowlist: of the
// configuration file to their lines (best effort: nil when unreadable).
func allowlistLines(path string) map[netip.Prefix]int {
	out := map[netip.Prefix]int{}
	if path == "" {
		return out
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "allowlist" || root.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for _, n := range root.Content[i+1].Content {
			if p, err := config.ParsePrefix(n.Value); err == nil {
				out[p.Masked()] = n.Line
			}
		}
	}
	return out
}

// trunkAllowlist returns the trunks of the Asterisk configuration in dir,
// logging each one allowlisted (with its file:line) and each one skipped
// (with what to do).
func trunkAllowlist(dir string, log *slog.Logger) []Trunk {
	trunks, skipped, err := AsteriskTrunks(dir)
	if err != nil {
		log.Warn("asterisk trunks not allowlisted: cannot read the configuration", "err", err,
			"hint", "set audit.asterisk_dir to Asterisk's configuration directory, or allowlist_asterisk_trunks: false")
		return nil
	}
	out := make([]Trunk, 0, len(trunks))
	for _, t := range trunks {
		log.Info("allowlisted an asterisk trunk", "prefix", t.Prefix, "section", t.Section, "kind", t.Kind, "at", filepath.Join(dir, t.At))
		out = append(out, t)
	}
	for _, s := range skipped {
		log.Warn("asterisk trunk not allowlisted", "value", s.Value, "section", s.Section, "kind", s.Kind, "at", filepath.Join(dir, s.At), "why", s.Why)
	}
	return out
}
