package firewall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Names of the ipset sets.
const (
	IPSet4 = "pbxguard4"
	IPSet6 = "pbxguard6"
)

// ipsetMaxTimeout is the largest timeout ipset accepts (seconds).
const ipsetMaxTimeout = 2147483

// IPSet keeps bans in two ipset sets with per-entry timeouts (hash:ip, or
// hash:net with Options.Prefixes) matched by one iptables/ip6tables rule
// each in chain PBXGUARD, jumped to from INPUT. Every Add or Delete is one
// `ipset restore` process however many entries it carries.
type IPSet struct {
	opts Options
	log  *slog.Logger
	r    runner
	mu   sync.Mutex
}

// NewIPSet checks that the tools exist; it changes nothing until Init.
func NewIPSet(opts Options) (*IPSet, error) {
	for _, t := range [][2]string{{"ipset", "ipset"}, {"iptables", "iptables"}, {"ip6tables", "iptables"}} {
		if _, err := lookTool(opts, t[0], t[1]); err != nil {
			return nil, err
		}
	}
	return &IPSet{opts: opts, log: opts.logger().With("backend", "ipset"), r: newRunner(opts)}, nil
}

// Name implements Backend.
func (s *IPSet) Name() string { return "ipset" }

func (s *IPSet) setType() string {
	if s.opts.Prefixes {
		return "hash:net"
	}
	return "hash:ip"
}

// Init implements Backend: creates the sets (-exist: kept when present) and
// the PBXGUARD chains with their match-set rules and jumps.
func (s *IPSet) Init(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	max := s.opts.maxElem()
	hashsize := 1024
	for hashsize < max/4 && hashsize < 1<<20 {
		hashsize *= 2
	}
	var existing map[string]ipsetHeader
	if out, err := s.r.run(ctx, nil, "ipset", "list", "-t"); err == nil {
		existing = parseIPSetTerse(out)
	}
	for _, f := range ipFamilies {
		name, want := s.want(f.v6)
		if got, ok := existing[name]; ok && got.differs(want) != "" {
			// Made with other settings (prefixes, max_elem changed): a set
			// cannot be altered, and the kernel refuses to destroy or
			// rename it while our rule uses it. Take the rule out, destroy
			// the set; the right one and the rule are made below, and the
			// daemon adds its bans again.
			s.log.Warn("ipset: set made with other settings; replacing it (the daemon restores its bans)",
				"set", name, "differs", got.differs(want))
			_, _ = s.r.run(ctx, nil, f.tables, "-w", "-D", IPTChain, "-m", "set", "--match-set", name, "src", "-j", "DROP")
			if _, err := s.r.run(ctx, nil, "ipset", "destroy", name); err != nil {
				return fmt.Errorf("ipset: replacing set %s made with other settings (%s): %w (another rule uses it? run 'pbxguard firewall remove')", name, got.differs(want), err)
			}
		}
		if _, err := s.r.run(ctx, nil, "ipset", "create", name, want.typ, "family", want.family,
			"hashsize", strconv.Itoa(hashsize), "maxelem", strconv.Itoa(max), "timeout", "3600", "-exist"); err != nil {
			return fmt.Errorf("ipset: %w (a set of another type or size exists? run 'pbxguard firewall remove' first)", err)
		}
		rule := []string{"-m", "set", "--match-set", name, "src", "-j", "DROP"}
		if err := ensureChain(ctx, s.r, f, [][]string{rule}, hooks(s.opts)); err != nil {
			return fmt.Errorf("ipset: %w", err)
		}
	}
	s.log.Info("ipset: ready", "sets", IPSet4+","+IPSet6, "type", s.setType(), "maxelem", max)
	return nil
}

// Add implements Backend: one `ipset -exist restore` for all entries
// (-exist also refreshes the timeout of a present entry).
func (s *IPSet) Add(ctx context.Context, bans []Ban) error {
	bans, errs := validBans(bans, s.opts.Prefixes)
	if len(bans) == 0 {
		return errs
	}
	var buf bytes.Buffer
	for _, b := range bans {
		to := int64(0) // ipset: timeout 0 is a permanent entry
		if b.Timeout != Permanent {
			to = min(seconds(b.Timeout), ipsetMaxTimeout)
		}
		fmt.Fprintf(&buf, "add %s %s timeout %d\n", ipsetName(b.Prefix), ipsetEntry(b.Prefix), to)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.r.run(ctx, &buf, "ipset", "-exist", "restore"); err != nil {
		if strings.Contains(err.Error(), "is full") {
			err = fmt.Errorf("set is full (maxelem %d): raise firewall.max_elem, then 'pbxguard firewall remove' and restart: %w", s.opts.maxElem(), err)
		}
		return errors.Join(errs, fmt.Errorf("ipset: adding %d entries: %w", len(bans), err))
	}
	return errs
}

func ipsetName(p netip.Prefix) string {
	if p.Addr().Is4() {
		return IPSet4
	}
	return IPSet6
}

func ipsetEntry(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

// Delete implements Backend (-exist: absent entries are fine).
func (s *IPSet) Delete(ctx context.Context, prefixes []netip.Prefix) error {
	var buf bytes.Buffer
	n := 0
	for _, p := range prefixes {
		q, err := normalize(p, true)
		if err != nil {
			continue
		}
		fmt.Fprintf(&buf, "del %s %s\n", ipsetName(q), ipsetEntry(q))
		n++
	}
	if n == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.r.run(ctx, &buf, "ipset", "-exist", "restore"); err != nil {
		return fmt.Errorf("ipset: deleting %d entries: %w", n, err)
	}
	return nil
}

// List implements Backend, from `ipset save` (remaining timeouts in seconds).
func (s *IPSet) List(ctx context.Context) ([]Ban, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Ban
	for _, name := range []string{IPSet4, IPSet6} {
		data, err := s.r.run(ctx, nil, "ipset", "save", name)
		if err != nil {
			return nil, fmt.Errorf("ipset: %w (run 'pbxguard firewall init'?)", err)
		}
		bans, err := parseIPSetSave(data)
		if err != nil {
			return nil, fmt.Errorf("ipset: reading %s: %w", name, err)
		}
		out = append(out, bans...)
	}
	return out, nil
}

// parseIPSetSave reads `add SET ENTRY timeout N` lines.
func parseIPSetSave(data []byte) ([]Ban, error) {
	var out []Ban
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "add" {
			continue
		}
		p, err := parsePrefixOrAddr(f[2])
		if err != nil {
			return nil, err
		}
		b := Ban{Prefix: p}
		for i := 3; i+1 < len(f); i++ {
			if f[i] == "timeout" {
				sec, err := strconv.ParseInt(f[i+1], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("entry %s: timeout %q: %w", f[2], f[i+1], err)
				}
				b.Timeout = time.Duration(sec) * time.Second
				if sec == 0 { // a permanent entry
					b.Timeout = Permanent
				}
			}
		}
		out = append(out, b)
	}
	return out, sc.Err()
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Remove implements Backend: the chains and jumps, then the sets.
func (s *IPSet) Remove(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs error
	for _, f := range ipFamilies {
		errs = errors.Join(errs, removeChain(ctx, s.r, f))
	}
	for _, name := range []string{IPSet4, IPSet6} {
		if _, err := s.r.run(ctx, nil, "ipset", "list", "-n", name); err != nil {
			continue
		}
		if _, err := s.r.run(ctx, nil, "ipset", "destroy", name); err != nil {
			errs = errors.Join(errs, fmt.Errorf("ipset: %w", err))
		}
	}
	return errs
}

// Close implements Backend.
func (s *IPSet) Close() error { return nil }
