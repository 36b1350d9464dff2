package policy

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Rule is one rule of the compiled policy, independent of the backend's
// syntax for the parts that differ (the nftables text is in NFT).
type Rule struct {
	Name    string // unique, stable: the first word of the comment and the key of `show`
	Why     string // the reason, the rest of the comment
	NFT     string // nftables match and statements, without counter, verdict and comment
	Verdict string // accept, drop, jump CHAIN
	Counter bool
}

// Comment is the text stored with the rule in the kernel.
func (r Rule) Comment() string { return r.Name + ": " + r.Why }

// Set is a named nftables set.
type Set struct {
	Name     string
	Type     string // ipv4_addr, ipv6_addr
	Flags    []string
	Timeout  time.Duration
	Size     int
	Elements []string
	Why      string   // the set's comment
	Typeof   string   // instead of Type, e.g. "@th,64,128"
	Notes    []string // lines shown as # comments in the plan (not stored in the kernel)
}

// Chain is an nftables chain; a base chain has a Hook.
type Chain struct {
	Name     string
	Hook     string
	Priority int
	Policy   string
	Why      string
	Rules    []Rule
}

// Ruleset is the compiled policy.
type Ruleset struct {
	Sets   []Set
	Chains []Chain
}

// Rules returns every rule of every chain in order.
func (rs *Ruleset) Rules() []Rule {
	var out []Rule
	for _, c := range rs.Chains {
		out = append(out, c.Rules...)
	}
	return out
}

type builder struct {
	cfg   *Config
	sets  []Set
	rules []Rule
}

func (b *builder) add(name, why, nft, verdict string) {
	b.rules = append(b.rules, Rule{Name: name, Why: why, NFT: nft, Verdict: verdict, Counter: true})
}

func (b *builder) set(s Set) { b.sets = append(b.sets, s) }

// dynSets declares the IPv4 and IPv6 variants of a dynamic set.
func (b *builder) dynSets(name string, timeout time.Duration, why string) {
	for _, fam := range []string{"4", "6"} {
		typ := "ipv4_addr"
		if fam == "6" {
			typ = "ipv6_addr"
		}
		flags := []string{"dynamic"}
		if timeout > 0 {
			flags = append(flags, "timeout")
		}
		b.set(Set{Name: name + fam, Type: typ, Flags: flags, Timeout: timeout, Size: 65536, Why: why})
	}
}

// fam is one address family's selectors.
type fam struct {
	suffix string // "4" or "6"
	saddr  string // "ip saddr" or "ip6 saddr"
	label  string // "IPv4" or "IPv6"
}

var fams = []fam{{"4", "ip saddr", "IPv4"}, {"6", "ip6 saddr", "IPv6"}}

func nftPorts(rs []PortRange) string {
	if len(rs) == 1 {
		return rs[0].String()
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func portsText(rs []PortRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// nftDuration writes d the way nft reads it (1d2h3m4s).
func nftDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var sb strings.Builder
	s := int64(d / time.Second)
	for _, u := range []struct {
		n   int64
		sfx string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if s >= u.n {
			fmt.Fprintf(&sb, "%d%s", s/u.n, u.sfx)
			s %= u.n
		}
	}
	return sb.String()
}

func splitFamilies(ps []netip.Prefix) (v4, v6 []string) {
	for _, p := range ps {
		s := p.String()
		if p.IsSingleIP() {
			s = p.Addr().String()
		}
		if p.Addr().Is4() {
			v4 = append(v4, s)
		} else {
			v6 = append(v6, s)
		}
	}
	return v4, v6
}

func nftSet(elems []string) string {
	if len(elems) == 1 {
		return elems[0]
	}
	return "{ " + strings.Join(elems, ", ") + " }"
}

// portScanRate turns "N ports within T" into an nft/iptables rate.
func portScanRate(ps PortScan) Rate {
	secs := int(ps.Within / time.Second)
	if secs < 1 {
		secs = 1
	}
	perHour := (ps.Ports*3600 + secs - 1) / secs
	if perHour%3600 == 0 {
		return Rate{perHour / 3600, "second"}
	}
	if perHour%60 == 0 {
		return Rate{perHour / 60, "minute"}
	}
	if secs <= 60 {
		return Rate{(ps.Ports*60 + secs - 1) / secs, "minute"}
	}
	return Rate{perHour, "hour"}
}

// UASignatures returns the 16-byte patterns the nftables SIP scanner guard
// compares at every offset: the last 16 bytes of "User-Agent: <prefix>",
// so a short prefix keeps the header name as context.
func UASignatures(uas []string) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	for _, ua := range uas {
		s := "User-Agent: " + ua
		sig := s[len(s)-16:]
		if !seen[sig] {
			seen[sig] = true
			out = append(out, []byte(sig))
		}
	}
	return out
}

// Compile turns the policy into a ruleset. It is pure.
func Compile(cfg *Config) (*Ruleset, error) {
	if err := Validate(cfg); err != nil {
		return nil, err
	}
	b := &builder{cfg: cfg}
	pr := cfg.Protections
	t := cfg.Trusted

	var chains []Chain

	// IPv4 fragments must be dropped before conntrack reassembles them
	// (defragmentation runs at priority -400), so they get their own chain.
	if pr.Fragments {
		chains = append(chains, Chain{
			Name: "fragments", Hook: "prerouting", Priority: -450, Policy: "accept",
			Why: "runs before reassembly (-400) so IPv4 fragments can be seen and dropped",
			Rules: []Rule{{Name: "fragments", Why: "IPv4 fragment for this host (hping3 -f, evasion, frag attacks)",
				NFT: "fib daddr type local ip frag-off & 0x3fff != 0", Verdict: "drop", Counter: true}},
		})
	}

	b.add("loopback", "the host talking to itself (AMI, local SIP, DNS cache) is always accepted", `iif "lo"`, "accept")
	if len(t.Interfaces) > 0 {
		q := make([]string, len(t.Interfaces))
		for i, n := range t.Interfaces {
			q[i] = fmt.Sprintf("%q", n)
		}
		b.add("trusted-interfaces", "everything arriving on a trusted interface is accepted", "iifname "+nftSet(q), "accept")
	}
	tv4, tv6 := splitFamilies(t.Prefixes())
	for i, el := range [][]string{tv4, tv6} {
		f := fams[i]
		if len(el) == 0 {
			continue
		}
		b.set(Set{Name: "trusted" + f.suffix, Type: map[string]string{"4": "ipv4_addr", "6": "ipv6_addr"}[f.suffix], Flags: []string{"interval"}, Elements: el, Why: "trusted hosts and networks: accepted for everything"})
		b.add("trusted"+f.suffix, "trusted "+f.label+" hosts and networks (firewall.policy.trusted, allowlist) reach everything", f.saddr+" @trusted"+f.suffix, "accept")
	}
	b.add("icmpv6-nd", "IPv6 neighbour and router discovery: without it IPv6 stops working",
		"icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ip6 hoplimit 255", "accept")
	b.add("icmpv6-errors", "ICMPv6 errors IPv6 needs (path MTU discovery, unreachable, time exceeded)",
		"icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem }", "accept")
	b.add("icmpv6-mld", "multicast listener discovery from link-local routers (RFC 4890)",
		"ip6 saddr fe80::/10 icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report }", "accept")

	if pr.Null {
		b.add("tcp-null", "no TCP flag at all is never legitimate (nmap -sN NULL scan)", "tcp flags & (fin|syn|rst|psh|ack|urg) == 0x0", "drop")
	}
	if pr.Xmas {
		b.add("tcp-xmas", "FIN+PSH+URG together is never legitimate (nmap -sX XMAS scan)", "tcp flags & (fin|psh|urg) == fin|psh|urg", "drop")
	}
	if pr.SynFin {
		b.add("tcp-syn-fin", "SYN and FIN together is never legitimate (OS fingerprinting, hping3 -S -F)", "tcp flags & (syn|fin) == syn|fin", "drop")
	}
	if pr.SynRst {
		b.add("tcp-syn-rst", "SYN and RST together is never legitimate (hping3 -S -R)", "tcp flags & (syn|rst) == syn|rst", "drop")
	}
	if pr.FinNoAck {
		b.add("tcp-fin-no-ack", "FIN without ACK is never legitimate (nmap -sF FIN scan)", "tcp flags & (fin|ack) == fin", "drop")
	}
	b.add("ct-invalid", "conntrack cannot place the packet in any connection: drop it", "ct state invalid", "drop")

	sip := cfg.Services.SIP
	if sip.Enabled && len(t.SIP) > 0 {
		sv4, sv6 := splitFamilies(t.SIPPrefixes())
		for i, el := range [][]string{sv4, sv6} {
			f := fams[i]
			if len(el) == 0 {
				continue
			}
			var notes []string
			for _, o := range t.SIP {
				if o.Prefix.Addr().Is4() == (f.suffix == "4") {
					notes = append(notes, fmt.Sprintf("  %s: %s", o.Prefix, oneLine(o.From)))
				}
			}
			b.set(Set{Name: "sip_trusted" + f.suffix, Type: map[string]string{"4": "ipv4_addr", "6": "ipv6_addr"}[f.suffix], Flags: []string{"interval"}, Elements: el,
				Why:   "the daemon's allowlist (allowlist, host addresses, Asterisk trunks): SIP never rate-limited",
				Notes: append([]string{"where each entry comes from:"}, notes...)})
			if len(sip.UDP) > 0 {
				b.add("sip-trusted-udp"+f.suffix, "SIP from the allowlist and the Asterisk trunks: exempt from the SIP rate limit and scanner guard",
					fmt.Sprintf("%s @sip_trusted%s udp dport %s", f.saddr, f.suffix, nftPorts(sip.UDP)), "accept")
			}
			if len(sip.TCP) > 0 {
				b.add("sip-trusted-tcp"+f.suffix, "SIP TCP/TLS from the allowlist and the Asterisk trunks: exempt from the SIP rate limit",
					fmt.Sprintf("%s @sip_trusted%s tcp dport %s", f.saddr, f.suffix, nftPorts(sip.TCP)), "accept")
			}
		}
	}

	if cfg.PortScan.Enabled {
		b.dynSets("portscan_ban", cfg.PortScan.Ban, "sources caught port scanning (filled by the portscan rules)")
		for _, f := range fams {
			b.add("portscan-ban"+f.suffix, fmt.Sprintf("source caught port scanning: dropped for %s", nftDuration(cfg.PortScan.Ban)), f.saddr+" @portscan_ban"+f.suffix, "drop")
		}
	}
	scanner := cfg.SIPScanner.Enabled && sip.Enabled && len(sip.UDP) > 0 && len(cfg.SIPScanner.UserAgents) > 0
	if scanner {
		b.dynSets("sipscan_ban", cfg.SIPScanner.Ban, "sources that sent a SIP scanner User-Agent")
		for _, f := range fams {
			b.add("sipscan-ban"+f.suffix, fmt.Sprintf("source sent a SIP scanner User-Agent: dropped for %s", nftDuration(cfg.SIPScanner.Ban)), f.saddr+" @sipscan_ban"+f.suffix, "drop")
		}
	}
	if sip.Enabled && sip.RateLimit.Enabled && sip.From.Kind != FromTrusted && sip.From.Kind != FromLoopback {
		l := sip.RateLimit
		if len(sip.UDP) > 0 {
			b.dynSets("sip_udp_rate", time.Minute, "per-source meter of SIP datagrams")
			for _, f := range fams {
				b.add("sip-rate-udp"+f.suffix, fmt.Sprintf("over %s burst %d SIP datagrams from one source (floods ride one conntrack flow, so every packet counts)", l.Rate, l.Burst),
					fmt.Sprintf("udp dport %s update @sip_udp_rate%s { %s limit rate over %s burst %d packets }", nftPorts(sip.UDP), f.suffix, f.saddr, l.Rate, l.Burst), "drop")
			}
		}
		if len(sip.TCP) > 0 {
			b.dynSets("sip_tcp_rate", time.Minute, "per-source meter of new SIP TCP/TLS connections")
			for _, f := range fams {
				b.add("sip-rate-tcp"+f.suffix, fmt.Sprintf("over %s burst %d new SIP TCP/TLS connections from one source", l.Rate, l.Burst),
					fmt.Sprintf("tcp dport %s ct state new update @sip_tcp_rate%s { %s limit rate over %s burst %d packets }", nftPorts(sip.TCP), f.suffix, f.saddr, l.Rate, l.Burst), "drop")
			}
		}
	}
	var scannerChains []Chain
	if scanner {
		b.add("sip-scanner", "first datagram of a SIP flow is searched for scanner User-Agents",
			fmt.Sprintf("udp dport %s ct state new", nftPorts(sip.UDP)), "jump sip_scanner")
		var sigSet Set
		scannerChains, sigSet = compileScanner(cfg.SIPScanner)
		b.set(sigSet)
	}

	b.add("established", "replies and packets of connections already accepted", "ct state established,related", "accept")
	if pr.NewNotSyn {
		b.add("tcp-new-not-syn", "a new TCP connection must start with SYN (nmap -sA, -sW, stray packets)", "tcp flags & (fin|syn|rst|ack) != syn ct state new", "drop")
	}
	if pr.SynFlood.Enabled {
		b.dynSets("synflood", time.Minute, "per-source meter of new TCP connections")
		for _, f := range fams {
			b.add("syn-flood"+f.suffix, fmt.Sprintf("over %s burst %d new TCP connections from one source (SYN flood)", pr.SynFlood.Rate, pr.SynFlood.Burst),
				fmt.Sprintf("tcp flags & (fin|syn|rst|ack) == syn ct state new update @synflood%s { %s limit rate over %s burst %d packets }", f.suffix, f.saddr, pr.SynFlood.Rate, pr.SynFlood.Burst), "drop")
		}
	}
	b.add("icmp-errors", "ICMP errors for our own traffic (unreachable, fragmentation needed, time exceeded)",
		"icmp type { destination-unreachable, time-exceeded, parameter-problem }", "accept")
	if pr.ICMPEcho.Enabled {
		e := pr.ICMPEcho
		b.add("icmp-echo", fmt.Sprintf("ping answered up to %s burst %d", e.Rate, e.Burst), fmt.Sprintf("icmp type echo-request limit rate %s burst %d packets", e.Rate, e.Burst), "accept")
		b.add("icmpv6-echo", fmt.Sprintf("IPv6 ping answered up to %s burst %d", e.Rate, e.Burst), fmt.Sprintf("icmpv6 type echo-request limit rate %s burst %d packets", e.Rate, e.Burst), "accept")
		b.add("icmp-echo-excess", "ping above the rate limit", "icmp type echo-request", "drop")
		b.add("icmpv6-echo-excess", "IPv6 ping above the rate limit", "icmpv6 type echo-request", "drop")
	} else {
		b.add("icmp-echo", "ping answered (no rate limit configured)", "icmp type echo-request", "accept")
		b.add("icmpv6-echo", "IPv6 ping answered (no rate limit configured)", "icmpv6 type echo-request", "accept")
	}
	ssh := cfg.Services.SSH
	if pr.SSHConnLimit > 0 && ssh.Enabled {
		b.dynSets("ssh_conn", 0, "per-source count of open SSH connections")
		for _, f := range fams {
			b.add("ssh-conn-limit"+f.suffix, fmt.Sprintf("more than %d concurrent SSH connections from one source (password guessing)", pr.SSHConnLimit),
				fmt.Sprintf("tcp dport %d ct state new add @ssh_conn%s { %s ct count over %d }", ssh.Port, f.suffix, f.saddr, pr.SSHConnLimit), "drop")
		}
	}
	for _, s := range cfg.ServiceList() {
		b.service(s)
	}
	if cfg.PortScan.Enabled {
		ps := cfg.PortScan
		r := portScanRate(ps)
		b.dynSets("portscan_rate", ps.Within, "per-source meter of new connections to closed ports")
		for _, f := range fams {
			b.add("portscan"+f.suffix, fmt.Sprintf("more than %d new connections to closed ports within %s: source banned for %s", ps.Ports, nftDuration(ps.Within), nftDuration(ps.Ban)),
				fmt.Sprintf("meta l4proto { tcp, udp } ct state new update @portscan_rate%s { %s limit rate over %s burst %d packets } add @portscan_ban%s { %s }", f.suffix, f.saddr, r, ps.Ports, f.suffix, f.saddr), "drop")
		}
	}
	final := "drop"
	why := "default input policy: nothing above accepted this packet"
	if cfg.Input == "accept" {
		final = "accept"
		why = "default input policy accept (audit mode): counts what a drop policy would drop"
	}
	b.add("default", why, "", final)

	input := Chain{Name: "input", Hook: "input", Priority: 0, Policy: cfg.Input,
		Why: "runs after the daemon's ban table (inet pbxguard, priority -10)", Rules: b.rules}
	chains = append(chains, input)
	chains = append(chains, scannerChains...)
	return &Ruleset{Sets: b.sets, Chains: chains}, nil
}

func compileScanner(ss SIPScanner) ([]Chain, Set) {
	sigs := UASignatures(ss.UserAgents)
	set := Set{Name: "sip_scanner_ua", Typeof: "@th,64,128", Why: "16-byte signatures of scanner User-Agents",
		Notes: []string{"the last 16 bytes of \"User-Agent: <prefix>\" for each sip_scanner.user_agents entry:"}}
	for _, sig := range sigs {
		set.Elements = append(set.Elements, "0x"+hex.EncodeToString(sig))
		set.Notes = append(set.Notes, fmt.Sprintf("  %q", sig))
	}
	var rules []Rule
	for off := 0; off+16 <= ss.SearchBytes; off++ {
		rules = append(rules, Rule{
			Name:    fmt.Sprintf("sip-ua@%d", off),
			Why:     "scanner User-Agent at this payload byte",
			NFT:     fmt.Sprintf("@th,%d,128 @sip_scanner_ua", 64+8*off),
			Verdict: "jump sip_scanner_hit",
		})
	}
	hit := []Rule{
		{Name: "sipscan4", Why: "known SIP scanner User-Agent: drop and remember the IPv4 source", NFT: "add @sipscan_ban4 { ip saddr }", Verdict: "drop", Counter: true},
		{Name: "sipscan6", Why: "known SIP scanner User-Agent: drop and remember the IPv6 source", NFT: "add @sipscan_ban6 { ip6 saddr }", Verdict: "drop", Counter: true},
	}
	return []Chain{
		{Name: "sip_scanner", Why: "nftables cannot search a payload: one fixed-offset compare per byte of the first datagram", Rules: rules},
		{Name: "sip_scanner_hit", Why: "a scanner User-Agent was found", Rules: hit},
	}, set
}

func (b *builder) service(s Service) {
	matches := func() []string {
		var m []string
		if len(s.TCP) > 0 {
			m = append(m, "tcp dport "+nftPorts(s.TCP))
		}
		if len(s.UDP) > 0 {
			m = append(m, "udp dport "+nftPorts(s.UDP))
		}
		return m
	}()
	for _, m := range matches {
		proto := strings.Fields(m)[0]
		what := s.Why + ", " + proto + " " + portsText(map[string][]PortRange{"tcp": s.TCP, "udp": s.UDP}[proto]) + ","
		sfx := ""
		if len(matches) > 1 {
			sfx = "-" + proto
		}
		switch s.From.Kind {
		case FromAny:
			b.add(s.Name+sfx, what+" open to everybody", m, "accept")
		case FromTrusted:
			b.add(s.Name+sfx+"-closed", what+" only for trusted sources (accepted above)", m, "drop")
		case FromLoopback:
			b.add(s.Name+sfx+"-closed", what+" only from this host (loopback accepted above)", m, "drop")
		case FromList:
			v4, v6 := splitFamilies(s.From.Prefixes)
			for i, el := range [][]string{v4, v6} {
				if len(el) == 0 {
					continue
				}
				f := fams[i]
				b.add(s.Name+sfx+f.suffix, what+" for the sources listed in its from:", f.saddr+" "+nftSet(el)+" "+m, "accept")
			}
			b.add(s.Name+sfx+"-closed", what+" closed to sources not in its from: list", m, "drop")
		}
	}
}

// oneLine keeps a note on its line: control characters become spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// NFT renders the ruleset as one `nft -f` transaction: the table is
// declared, deleted and defined again in the same file, so the kernel
// swaps the whole policy at once or not at all.
func (rs *Ruleset) NFT(header string) string {
	var sb strings.Builder
	for _, line := range strings.Split(strings.TrimRight(header, "\n"), "\n") {
		if line != "" {
			sb.WriteString("# " + line + "\n")
		}
	}
	fmt.Fprintf(&sb, "table %s %s\ndelete table %s %s\n", TableFamily, TableName, TableFamily, TableName)
	sb.WriteString(rs.NFTTable())
	return sb.String()
}

// NFTTable renders only the table definition.
func (rs *Ruleset) NFTTable() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "table %s %s {\n", TableFamily, TableName)
	for _, s := range rs.Sets {
		fmt.Fprintf(&sb, "\tset %s {\n", s.Name)
		for _, n := range s.Notes {
			fmt.Fprintf(&sb, "\t\t# %s\n", n)
		}
		if s.Typeof != "" {
			fmt.Fprintf(&sb, "\t\ttypeof %s\n", s.Typeof)
		} else {
			fmt.Fprintf(&sb, "\t\ttype %s\n", s.Type)
		}
		if s.Size > 0 {
			fmt.Fprintf(&sb, "\t\tsize %d\n", s.Size)
		}
		if len(s.Flags) > 0 {
			fmt.Fprintf(&sb, "\t\tflags %s\n", strings.Join(s.Flags, ","))
		}
		if s.Timeout > 0 {
			fmt.Fprintf(&sb, "\t\ttimeout %s\n", nftDuration(s.Timeout))
		}
		if len(s.Elements) > 0 {
			fmt.Fprintf(&sb, "\t\telements = { %s }\n", strings.Join(s.Elements, ", "))
		}
		if s.Why != "" {
			fmt.Fprintf(&sb, "\t\tcomment %q\n", s.Why)
		}
		sb.WriteString("\t}\n\n")
	}
	for i, c := range rs.Chains {
		if i > 0 {
			sb.WriteString("\n")
		}
		fmt.Fprintf(&sb, "\tchain %s {\n", c.Name)
		if c.Why != "" {
			fmt.Fprintf(&sb, "\t\t# %s\n", c.Why)
		}
		if c.Hook != "" {
			fmt.Fprintf(&sb, "\t\ttype filter hook %s priority %d; policy %s;\n", c.Hook, c.Priority, c.Policy)
		}
		for _, r := range c.Rules {
			sb.WriteString("\t\t" + r.NFTLine() + "\n")
		}
		sb.WriteString("\t}\n")
	}
	sb.WriteString("}\n")
	return sb.String()
}

// NFTLine is the rule in nft syntax.
func (r Rule) NFTLine() string {
	parts := []string{}
	if r.NFT != "" {
		parts = append(parts, r.NFT)
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	parts = append(parts, r.Verdict, fmt.Sprintf("comment %q", r.Comment()))
	return strings.Join(parts, " ")
}

// Validate checks what the YAML reader cannot: cross-key consistency.
func Validate(cfg *Config) error {
	if cfg.Input != "drop" && cfg.Input != "accept" {
		return &ConfigError{Line: cfg.Lines["input"], Msg: fmt.Sprintf("%s.input: %q is not a policy (write drop)", prefix, cfg.Input)}
	}
	names := map[string]bool{}
	for _, s := range cfg.ServiceList() {
		if names[s.Name] {
			return &ConfigError{Msg: fmt.Sprintf("%s.services: %q defined twice", prefix, s.Name)}
		}
		names[s.Name] = true
		if s.From.Kind == FromList && len(s.From.Prefixes) == 0 {
			return &ConfigError{Line: cfg.Lines["services."+s.Name+".from"], Msg: fmt.Sprintf("%s.services.%s.from: empty list (write trusted, any or addresses)", prefix, s.Name)}
		}
	}
	for _, ua := range cfg.SIPScanner.UserAgents {
		if len(ua) < 4 {
			return &ConfigError{Msg: fmt.Sprintf("%s.sip_scanner.user_agents: %q is shorter than 4 characters", prefix, ua)}
		}
	}
	if cfg.SIPScanner.Enabled && cfg.SIPScanner.SearchBytes < 16 {
		return &ConfigError{Msg: fmt.Sprintf("%s.sip_scanner.search_bytes: at least 16", prefix)}
	}
	if cfg.PortScan.Enabled && (cfg.PortScan.Ports < 2 || cfg.PortScan.Within < time.Second || cfg.PortScan.Ban < time.Second) {
		return &ConfigError{Msg: fmt.Sprintf("%s.port_scan: ports >= 2, within and ban >= 1s", prefix)}
	}
	return nil
}
