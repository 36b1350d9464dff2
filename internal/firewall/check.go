package firewall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/nftables"
)

// Health is what Checker.Check found in the kernel.
type Health struct {
	// Missing names pbxguard's kernel objects that are gone or not as
	// Init made them ("table inet pbxguard", "ipset pbxguard4",
	// "jump INPUT -> PBXGUARD (iptables)"). Empty: everything is there.
	Missing []string
	// Entries is how many bans the kernel holds now, or -1 when the
	// backend cannot count them cheaply (nftables: a set dump is
	// quadratic, 3.4 s for 100k entries).
	Entries int
}

// Intact reports whether every kernel object of the backend is in place.
func (h Health) Intact() bool { return len(h.Missing) == 0 }

// Checker is a Backend that can verify cheaply (a few netlink dumps or
// tool runs, no element listing) that its table, sets, chains and jumps
// are still there: `nft flush ruleset`, `ipset destroy`, `iptables -F`
// by somebody else. The daemon calls it about once a second and, when
// something is missing, calls Init and adds its active bans again.
// Check's error means the check itself could not run.
type Checker interface {
	Check(ctx context.Context) (Health, error)
}

// AsChecker returns b's Checker, looking through WithAllowlist.
func AsChecker(b Backend) (Checker, bool) {
	for {
		if c, ok := b.(Checker); ok {
			return c, true
		}
		u, ok := b.(interface{ Unwrap() Backend })
		if !ok {
			return nil, false
		}
		b = u.Unwrap()
	}
}

// Unwrap returns the backend behind the allowlist gate (for AsChecker).
func (a *allowlisted) Unwrap() Backend { return a.Backend }

// Check implements Checker: the table, each set (with its kind), each
// base chain and its drop rules.
func (n *Nftables) Check(ctx context.Context) (Health, error) {
	h := Health{Entries: -1}
	if err := ctx.Err(); err != nil {
		return h, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	sets, err := n.conn.GetSets(n.table)
	if err != nil || len(sets) == 0 {
		// google/nftables flattens the dump's errno (%v): ask for the
		// table itself to tell "no table" from a failed read.
		if _, terr := n.conn.ListTableOfFamily(NftTable, nftables.TableFamilyINet); terr != nil {
			if isENOENT(terr) {
				h.Missing = append(h.Missing, "table inet "+NftTable)
				return h, nil
			}
			return h, fmt.Errorf("nftables: looking for table inet %s: %w", NftTable, terr)
		}
		if err != nil {
			return h, fmt.Errorf("nftables: reading the sets of table inet %s: %w", NftTable, err)
		}
	}
	have := map[string]*nftables.Set{}
	for _, s := range sets {
		have[s.Name] = s
	}
	for _, s := range n.sets {
		got, ok := have[s.set.Name]
		switch {
		case !ok:
			h.Missing = append(h.Missing, "set "+s.set.Name)
		case got.Interval != s.set.Interval || !got.HasTimeout:
			h.Missing = append(h.Missing, "set "+s.set.Name+" (other flags)")
		}
	}
	chains := []string{NftInput}
	if n.opts.Forward {
		chains = append(chains, NftForward)
	}
	for _, name := range chains {
		ch, err := n.conn.ListChain(n.table, name)
		if err != nil || ch == nil {
			h.Missing = append(h.Missing, "chain "+name)
			continue
		}
		rules, err := n.conn.GetRules(n.table, ch)
		if err != nil {
			return h, fmt.Errorf("nftables: reading chain %s: %w", name, err)
		}
		tags := map[string]bool{}
		for _, r := range rules {
			tags[string(r.UserData)] = true
		}
		for _, s := range n.sets {
			if !tags[string(s.tag)] {
				h.Missing = append(h.Missing, "rule "+name+" -> @"+s.set.Name)
			}
		}
	}
	return h, nil
}

// ipsetHeader is one set as `ipset list -t` describes it.
type ipsetHeader struct {
	typ     string
	family  string
	maxelem int
	timeout bool
	entries int
}

// parseIPSetTerse reads `ipset list -t` (every set, headers only).
func parseIPSetTerse(data []byte) map[string]ipsetHeader {
	out := map[string]ipsetHeader{}
	var name string
	var cur ipsetHeader
	flush := func() {
		if name != "" {
			out[name] = cur
		}
		name, cur = "", ipsetHeader{entries: -1}
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			flush()
			name = v
		case "Type":
			cur.typ = v
		case "Header":
			f := strings.Fields(v)
			for i := 0; i < len(f); i++ {
				switch f[i] {
				case "family":
					if i+1 < len(f) {
						cur.family = f[i+1]
					}
				case "maxelem":
					if i+1 < len(f) {
						cur.maxelem, _ = strconv.Atoi(f[i+1])
					}
				case "timeout":
					cur.timeout = true
				}
			}
		case "Number of entries":
			cur.entries, _ = strconv.Atoi(v)
		}
	}
	flush()
	return out
}

// want describes the set Init makes for a family.
func (s *IPSet) want(v6 bool) (name string, h ipsetHeader) {
	name, fam := IPSet4, "inet"
	if v6 {
		name, fam = IPSet6, "inet6"
	}
	return name, ipsetHeader{typ: s.setType(), family: fam, maxelem: s.opts.maxElem(), timeout: true}
}

// differs says how an existing set differs from the wanted one ("" = not).
func (h ipsetHeader) differs(want ipsetHeader) string {
	var d []string
	if h.typ != want.typ {
		d = append(d, fmt.Sprintf("type %s, want %s", h.typ, want.typ))
	}
	if h.family != want.family {
		d = append(d, fmt.Sprintf("family %s, want %s", h.family, want.family))
	}
	if h.maxelem != want.maxelem {
		d = append(d, fmt.Sprintf("maxelem %d, want %d", h.maxelem, want.maxelem))
	}
	if !h.timeout {
		d = append(d, "no timeout support")
	}
	return strings.Join(d, ", ")
}

// iptMissing lists what of chain IPTChain is gone in one family's
// `iptables -S` output: the chain, its jumps from hooks, the given rules.
// It also returns the number of pbxguard ban rules in the chain.
func iptMissing(f ipt, out []byte, rules []string, hooks []string) (missing []string, bans int) {
	have := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		have[line] = true
		if iptRuleRE.MatchString(line) {
			bans++
		}
	}
	if !have["-N "+IPTChain] {
		return []string{fmt.Sprintf("chain %s (%s)", IPTChain, f.tables)}, 0
	}
	for _, h := range hooks {
		if !have["-A "+h+" -j "+IPTChain] {
			missing = append(missing, fmt.Sprintf("jump %s -> %s (%s)", h, IPTChain, f.tables))
		}
	}
	for _, r := range rules {
		if !have["-A "+IPTChain+" "+r] {
			missing = append(missing, fmt.Sprintf("rule %q in %s (%s)", r, IPTChain, f.tables))
		}
	}
	return missing, bans
}

// Check implements Checker: both sets (type, family, maxelem; their
// entry counts) from one `ipset list -t`, and per family the chain, its
// match-set rule and the jumps from one `iptables -S`.
func (s *IPSet) Check(ctx context.Context) (Health, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := Health{}
	out, err := s.r.run(ctx, nil, "ipset", "list", "-t")
	if err != nil {
		return Health{Entries: -1}, fmt.Errorf("ipset: %w", err)
	}
	sets := parseIPSetTerse(out)
	for _, f := range ipFamilies {
		name, want := s.want(f.v6)
		got, ok := sets[name]
		switch {
		case !ok:
			h.Missing = append(h.Missing, "ipset "+name)
		case got.differs(want) != "":
			h.Missing = append(h.Missing, "ipset "+name+" ("+got.differs(want)+")")
		default:
			if got.entries > 0 {
				h.Entries += got.entries
			}
		}
		rules, err := s.r.run(ctx, nil, f.tables, "-w", "-S")
		if err != nil {
			return Health{Entries: -1}, fmt.Errorf("ipset: %w", err)
		}
		m, _ := iptMissing(f, rules, []string{"-m set --match-set " + name + " src -j DROP"}, hooks(s.opts))
		h.Missing = append(h.Missing, m...)
	}
	return h, nil
}

// Check implements Checker: per family, the chain and the jumps, and
// that the chain still holds every rule this backend wrote (an
// `iptables -F PBXGUARD` empties it).
func (t *IPTables) Check(ctx context.Context) (Health, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := Health{}
	for _, f := range ipFamilies {
		out, err := t.r.run(ctx, nil, f.tables, "-w", "-S")
		if err != nil {
			return Health{Entries: -1}, fmt.Errorf("iptables: %w", err)
		}
		m, bans := iptMissing(f, out, nil, hooks(t.opts))
		h.Missing = append(h.Missing, m...)
		want := 0
		for p := range t.entries {
			if p.Addr().Is6() == f.v6 {
				want++
			}
		}
		if bans < want && len(m) == 0 {
			h.Missing = append(h.Missing, fmt.Sprintf("%d of %d ban rules in %s (%s)", want-bans, want, IPTChain, f.tables))
		}
		h.Entries += bans
	}
	return h, nil
}

// isENOENT: the kernel answered ENOENT (google/nftables keeps the errno
// for some calls and only its text for others).
func isENOENT(err error) bool {
	return errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), syscall.ENOENT.Error())
}

// RemoveAll deletes what each backend made in the kernel, whichever is
// configured: table inet pbxguard (nftables), the sets pbxguard4 and
// pbxguard6 (ipset), chain PBXGUARD with its jumps in iptables and
// ip6tables (ipset, iptables). A backend whose tools are missing is
// skipped. It returns what was there and is gone.
func RemoveAll(ctx context.Context, opts Options) (removed []string, err error) {
	r := newRunner(opts)
	if n, nerr := NewNftables(opts); nerr == nil {
		if _, terr := n.conn.ListTableOfFamily(NftTable, nftables.TableFamilyINet); terr == nil {
			if rerr := n.Remove(ctx); rerr != nil {
				err = errors.Join(err, rerr)
			} else {
				removed = append(removed, "table inet "+NftTable)
			}
		}
		n.Close()
	}
	var chains []string
	for _, f := range ipFamilies {
		if _, lerr := lookTool(opts, f.tables, "iptables"); lerr != nil {
			continue
		}
		if _, cerr := r.run(ctx, nil, f.tables, "-w", "-S", IPTChain); cerr == nil {
			chains = append(chains, f.tables+" chain "+IPTChain+" and its jumps")
		}
	}
	var sets []string
	if _, lerr := lookTool(opts, "ipset", "ipset"); lerr == nil {
		out, _ := r.run(ctx, nil, "ipset", "list", "-n")
		for _, name := range strings.Fields(string(out)) {
			if name == IPSet4 || name == IPSet6 {
				sets = append(sets, "ipset "+name)
			}
		}
	}
	if s, serr := NewIPSet(opts); serr == nil {
		if rerr := s.Remove(ctx); rerr != nil {
			err = errors.Join(err, rerr)
		} else {
			removed = append(removed, chains...)
			removed = append(removed, sets...)
			chains = nil
		}
	}
	if len(chains) > 0 {
		if t, terr := NewIPTables(opts); terr == nil {
			if rerr := t.Remove(ctx); rerr != nil {
				err = errors.Join(err, rerr)
			} else {
				removed = append(removed, chains...)
			}
		}
	}
	return removed, err
}
