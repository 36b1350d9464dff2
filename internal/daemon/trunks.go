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

	"github.com/pbxguard/pbxguard/internal/audit"
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

// trunkAllowlist returns the trunks of the Asterisk configuration in dir,
// logging each one allowlisted (with its file:line) and each one skipped
// (with what to do).
func trunkAllowlist(dir string, log *slog.Logger) []netip.Prefix {
	trunks, skipped, err := AsteriskTrunks(dir)
	if err != nil {
		log.Warn("asterisk trunks not allowlisted: cannot read the configuration", "err", err,
			"hint", "set audit.asterisk_dir to Asterisk's configuration directory, or allowlist_asterisk_trunks: false")
		return nil
	}
	out := make([]netip.Prefix, 0, len(trunks))
	for _, t := range trunks {
		log.Info("allowlisted an asterisk trunk", "prefix", t.Prefix, "section", t.Section, "kind", t.Kind, "at", filepath.Join(dir, t.At))
		out = append(out, t.Prefix)
	}
	for _, s := range skipped {
		log.Warn("asterisk trunk not allowlisted", "value", s.Value, "section", s.Section, "kind", s.Kind, "at", filepath.Join(dir, s.At), "why", s.Why)
	}
	return out
}
