package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"

	"github.com/mdlayher/netlink/nltest"
	"sort"
	"strings"
	"time"
)

// Options configure every backend; each backend reads the fields it needs.
type Options struct {
	// Logger receives what the backend does; nil discards.
	Logger *slog.Logger
	// NetNS is the name of a network namespace (as made by `ip netns add`)
	// to work in instead of the current one: the nftables backend opens
	// /run/netns/NAME for its netlink socket, the command-running backends
	// prefix every command with `ip netns exec NAME`. Tests, benchmarks and
	// `pbxguard demo` use it; a production daemon leaves it empty.
	NetNS string
	// NetNSFd, when > 0, is an open fd of a network namespace for the
	// nftables backend (takes precedence over NetNS for netlink).
	NetNSFd int
	// Forward also drops banned sources in the forward hook, for hosts
	// whose services run in containers or VMs behind the host.
	Forward bool
	// Prefixes lets the sets hold prefixes (e.g. an IPv6 /64) and not only
	// single addresses: nftables sets get `flags interval, timeout`, ipset
	// sets are hash:net. Without it, Add refuses anything that is not a
	// /32 or /128.
	Prefixes bool
	// MaxElem is the most entries one set may hold (the configured cap on
	// bans). 0 means DefaultMaxElem. ipset needs it (its default of
	// 65,536 fails with "Hash is full"); nftables uses it as the set size
	// hint.
	MaxElem int
	// LegacyRefresh makes the nftables backend refresh timeouts of present
	// elements by delete-and-add in the same transaction, as it does by
	// itself on kernels before 6.10 (which ignore a new timeout on re-add).
	// For tests; leave false.
	LegacyRefresh bool
	// Exec, when set, runs the command-line tools (ipset, iptables, ...)
	// instead of executing them, and the tools are not looked up on PATH:
	// tests without root give a fake kernel here.
	Exec ExecFunc
	// NetlinkDial, when set, replaces the nftables backend's netlink socket
	// (nftables.WithTestDial): tests without root give a fake kernel here
	// (see package nfttest).
	NetlinkDial nltest.Func
}

// DefaultMaxElem is the set capacity when Options.MaxElem is 0.
const DefaultMaxElem = 1 << 20

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

func (o Options) maxElem() int {
	if o.MaxElem <= 0 {
		return DefaultMaxElem
	}
	return o.MaxElem
}

// constructors is the explicit registry of backends by config name.
var constructors = map[string]func(Options) (Backend, error){
	"nftables": func(o Options) (Backend, error) { return NewNftables(o) },
	"ipset":    func(o Options) (Backend, error) { return NewIPSet(o) },
	"iptables": func(o Options) (Backend, error) { return NewIPTables(o) },
	"dry-run":  func(o Options) (Backend, error) { return NewDryRun(o), nil },
}

// Names lists the valid backend names for New, sorted, "auto" included.
func Names() []string {
	names := []string{"auto"}
	for n := range constructors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New makes the backend called name (nftables, ipset, iptables, dry-run,
// auto). "auto" probes the kernel, see Detect. New does not call Init.
func New(name string, opts Options) (Backend, error) {
	if name == "auto" || name == "" {
		return Detect(context.Background(), opts)
	}
	c, ok := constructors[name]
	if !ok {
		return nil, fmt.Errorf("firewall: unknown backend %q (valid: %s)", name, strings.Join(Names(), ", "))
	}
	return c(opts)
}

// ErrUnsupportedPrefix is returned (wrapped) for a prefix that is neither a
// single address nor allowed by Options.Prefixes.
var ErrUnsupportedPrefix = errors.New("prefix bans need firewall prefixes enabled")

// normalize checks and canonicalises a prefix: IPv4-mapped IPv6 becomes
// IPv4, host bits are cleared.
func normalize(p netip.Prefix, prefixes bool) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("firewall: invalid prefix %v", p)
	}
	a := p.Addr()
	bits := p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			return netip.Prefix{}, fmt.Errorf("firewall: %v: IPv4-mapped prefix shorter than /96", p)
		}
		a = a.Unmap()
		bits -= 96
	}
	a = a.WithZone("")
	q := netip.PrefixFrom(a, bits).Masked()
	if !prefixes && bits != a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("firewall: %v: %w (set firewall.prefixes: true)", p, ErrUnsupportedPrefix)
	}
	return q, nil
}

func checkTimeout(b Ban) error {
	if b.Timeout <= 0 {
		return fmt.Errorf("firewall: %v: ban timeout must be > 0 (got %v)", b.Prefix, b.Timeout)
	}
	return nil
}

// validBans is the first step of every backend's Add: each ban with its
// prefix normalised as the backend stores it (prefixes: whether it holds
// wider prefixes than single addresses). Entries with no timeout or a
// prefix the backend cannot hold are left out and reported in err.
func validBans(bans []Ban, prefixes bool) (ok []Ban, err error) {
	ok = make([]Ban, 0, len(bans))
	for _, b := range bans {
		if e := checkTimeout(b); e != nil {
			err = errors.Join(err, e)
			continue
		}
		p, e := normalize(b.Prefix, prefixes)
		if e != nil {
			err = errors.Join(err, e)
			continue
		}
		ok = append(ok, Ban{Prefix: p, Timeout: b.Timeout})
	}
	return ok, err
}

// lookTool finds a command or says how to install it.
func lookTool(o Options, name, pkg string) (string, error) {
	if o.Exec != nil {
		return name, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: apt-get install %s, or set firewall.backend: nftables", name, pkg)
	}
	return p, nil
}

// seconds rounds a timeout up to whole seconds (ipset and our iptables
// emulation count in seconds), at least 1.
func seconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

func (n *Nftables) logger() *slog.Logger { return n.log }
func (s *IPSet) logger() *slog.Logger    { return s.log }
func (t *IPTables) logger() *slog.Logger { return t.log }
func (d *DryRun) logger() *slog.Logger   { return d.log }
