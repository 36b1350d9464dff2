package policy

import (
	"fmt"
	"strings"
	"time"
)

// IPTables renders the policy as iptables-restore (family "4") or
// ip6tables-restore (family "6") text for hosts without nftables.
//
// The rules live in pbxguard's own chain, PBXGUARD-POLICY, so the file is
// meant for `iptables-restore --noflush`: the chain is flushed and refilled
// in one commit, other chains (docker, libvirt, fail2ban) stay as they are.
// The single jump from INPUT is added once, outside the file:
//
//	iptables -C INPUT -j PBXGUARD-POLICY 2>/dev/null || iptables -I INPUT 1 -j PBXGUARD-POLICY
//
// Differences from the nftables policy, said in the rule comments too: the
// SIP scanner guard is a real substring search (-m string --algo bm); the
// port-scan guard uses `recent` (at most 20 hits remembered per source by
// default, so ports is capped at 20); dynamic limits use hashlimit.
func IPTables(cfg *Config, family string) (string, error) {
	if err := Validate(cfg); err != nil {
		return "", err
	}
	if family != "4" && family != "6" {
		return "", fmt.Errorf("iptables family %q: use 4 or 6", family)
	}
	if cfg.PortScan.Enabled && cfg.PortScan.Ports > 20 {
		return "", &ConfigError{Line: cfg.Lines["port_scan.ports"], Msg: fmt.Sprintf("%s.port_scan.ports: %d is above what iptables' recent module remembers per source (20); lower it or use nftables", prefix, cfg.PortScan.Ports)}
	}
	v6 := family == "6"
	cmd := "iptables"
	icmp := "icmp"
	if v6 {
		cmd = "ip6tables"
		icmp = "ipv6-icmp"
	}
	ch := IPTablesChain
	var lines []string
	add := func(name, why, match, target string) {
		c := name + ": " + why
		if len(c) > 255 {
			c = c[:255]
		}
		l := "-A " + ch
		if match != "" {
			l += " " + match
		}
		l += fmt.Sprintf(" -m comment --comment %q", c)
		if target != "" { // `recent --set` counters are matches: no target, evaluation goes on
			l += " -j " + target
		}
		lines = append(lines, l)
	}
	pr := cfg.Protections
	hl := func(name string, l Limit) string {
		return fmt.Sprintf("-m hashlimit --hashlimit-above %d/%s --hashlimit-burst %d --hashlimit-mode srcip --hashlimit-name %s", l.Rate.Count, secShort(l.Rate.Unit), l.Burst, name)
	}

	add("loopback", "the host talking to itself is always accepted", "-i lo", "ACCEPT")
	for _, ifc := range cfg.Trusted.Interfaces {
		add("trusted-interfaces", "everything arriving on a trusted interface is accepted", "-i "+ifc, "ACCEPT")
	}
	for _, p := range cfg.Trusted.Prefixes() {
		if p.Addr().Is4() == v6 {
			continue
		}
		add("trusted"+family, "trusted hosts and networks reach everything", "-s "+p.String(), "ACCEPT")
	}
	if v6 {
		for _, t := range []string{"router-solicitation", "router-advertisement", "neighbour-solicitation", "neighbour-advertisement"} {
			add("icmpv6-nd", "IPv6 neighbour and router discovery: without it IPv6 stops working", "-p ipv6-icmp --icmpv6-type "+t+" -m hl --hl-eq 255", "ACCEPT")
		}
		for _, t := range []string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem"} {
			add("icmpv6-errors", "ICMPv6 errors IPv6 needs", "-p ipv6-icmp --icmpv6-type "+t, "ACCEPT")
		}
		for _, t := range []string{"130", "131", "132", "143"} {
			add("icmpv6-mld", "multicast listener discovery from link-local routers", "-s fe80::/10 -p ipv6-icmp --icmpv6-type "+t, "ACCEPT")
		}
	}
	if pr.Null {
		add("tcp-null", "no TCP flag at all (nmap -sN)", "-p tcp --tcp-flags ALL NONE", "DROP")
	}
	if pr.Xmas {
		add("tcp-xmas", "FIN+PSH+URG (nmap -sX)", "-p tcp --tcp-flags FIN,PSH,URG FIN,PSH,URG", "DROP")
	}
	if pr.SynFin {
		add("tcp-syn-fin", "SYN and FIN together", "-p tcp --tcp-flags SYN,FIN SYN,FIN", "DROP")
	}
	if pr.SynRst {
		add("tcp-syn-rst", "SYN and RST together", "-p tcp --tcp-flags SYN,RST SYN,RST", "DROP")
	}
	if pr.FinNoAck {
		add("tcp-fin-no-ack", "FIN without ACK (nmap -sF)", "-p tcp --tcp-flags FIN,ACK FIN", "DROP")
	}
	if pr.Fragments && !v6 {
		add("fragments", "IPv4 fragment (only matches where conntrack does not reassemble first; nftables drops them before reassembly)", "-f", "DROP")
	}
	add("ct-invalid", "conntrack cannot place the packet in any connection", "-m conntrack --ctstate INVALID", "DROP")
	if s := cfg.Services.SIP; s.Enabled {
		for _, p := range cfg.Trusted.SIPPrefixes() {
			if p.Addr().Is4() == v6 {
				continue
			}
			if len(s.UDP) > 0 {
				add("sip-trusted-udp", "SIP from the allowlist and the Asterisk trunks: exempt from the SIP rate limit and scanner guard",
					"-s "+p.String()+" -p udp "+iptPorts(s.UDP), "ACCEPT")
			}
			if len(s.TCP) > 0 {
				add("sip-trusted-tcp", "SIP TCP/TLS from the allowlist and the Asterisk trunks: exempt from the SIP rate limit",
					"-s "+p.String()+" -p tcp "+iptPorts(s.TCP), "ACCEPT")
			}
		}
	}
	if cfg.PortScan.Enabled {
		add("portscan-ban", "source caught port scanning: dropped for "+nftDuration(cfg.PortScan.Ban),
			fmt.Sprintf("-m recent --name pbxguard-portscan --rcheck --seconds %d", secs(cfg.PortScan.Ban)), "DROP")
	}
	sip := cfg.Services.SIP
	scanner := cfg.SIPScanner.Enabled && sip.Enabled && len(sip.UDP) > 0 && len(cfg.SIPScanner.UserAgents) > 0
	if scanner {
		add("sipscan-ban", "source sent a SIP scanner User-Agent: dropped for "+nftDuration(cfg.SIPScanner.Ban),
			fmt.Sprintf("-m recent --name pbxguard-sipscan --rcheck --seconds %d", secs(cfg.SIPScanner.Ban)), "DROP")
	}
	if sip.Enabled && sip.RateLimit.Enabled && sip.From.Kind != FromTrusted && sip.From.Kind != FromLoopback {
		l := sip.RateLimit
		if len(sip.UDP) > 0 {
			add("sip-rate-udp", fmt.Sprintf("over %s burst %d SIP datagrams from one source", l.Rate, l.Burst),
				"-p udp "+iptPorts(sip.UDP)+" "+hl("pbxg-sip-udp"+family, l), "DROP")
		}
		if len(sip.TCP) > 0 {
			add("sip-rate-tcp", fmt.Sprintf("over %s burst %d new SIP TCP/TLS connections from one source", l.Rate, l.Burst),
				"-p tcp "+iptPorts(sip.TCP)+" -m conntrack --ctstate NEW "+hl("pbxg-sip-tcp"+family, l), "DROP")
		}
	}
	if scanner {
		for _, ua := range cfg.SIPScanner.UserAgents {
			add("sip-scanner", "known SIP scanner User-Agent "+ua,
				fmt.Sprintf("-p udp %s -m string --algo bm --string %q -m recent --name pbxguard-sipscan --set", iptPorts(sip.UDP), "User-Agent: "+ua), "DROP")
		}
	}
	add("established", "replies and packets of connections already accepted", "-m conntrack --ctstate ESTABLISHED,RELATED", "ACCEPT")
	if pr.NewNotSyn {
		add("tcp-new-not-syn", "a new TCP connection must start with SYN", "-p tcp ! --syn -m conntrack --ctstate NEW", "DROP")
	}
	if pr.SynFlood.Enabled {
		add("syn-flood", fmt.Sprintf("over %s burst %d new TCP connections from one source", pr.SynFlood.Rate, pr.SynFlood.Burst),
			"-p tcp --syn -m conntrack --ctstate NEW "+hl("pbxg-synflood"+family, pr.SynFlood), "DROP")
	}
	if !v6 {
		for _, t := range []string{"destination-unreachable", "time-exceeded", "parameter-problem"} {
			add("icmp-errors", "ICMP errors for our own traffic", "-p icmp --icmp-type "+t, "ACCEPT")
		}
	}
	echo := fmt.Sprintf("-p %s --%s-type echo-request", icmp, map[bool]string{false: "icmp", true: "icmpv6"}[v6])
	if pr.ICMPEcho.Enabled {
		e := pr.ICMPEcho
		add("icmp-echo", fmt.Sprintf("ping answered up to %s burst %d", e.Rate, e.Burst), fmt.Sprintf("%s -m limit --limit %d/%s --limit-burst %d", echo, e.Rate.Count, secShort(e.Rate.Unit), e.Burst), "ACCEPT")
		add("icmp-echo-excess", "ping above the rate limit", echo, "DROP")
	} else {
		add("icmp-echo", "ping answered", echo, "ACCEPT")
	}
	ssh := cfg.Services.SSH
	if pr.SSHConnLimit > 0 && ssh.Enabled {
		mask := 32
		if v6 {
			mask = 128
		}
		add("ssh-conn-limit", fmt.Sprintf("more than %d concurrent SSH connections from one source", pr.SSHConnLimit),
			fmt.Sprintf("-p tcp --dport %d --syn -m connlimit --connlimit-above %d --connlimit-mask %d", ssh.Port, pr.SSHConnLimit, mask), "DROP")
	}
	for _, s := range cfg.ServiceList() {
		for _, proto := range []string{"tcp", "udp"} {
			ports := s.TCP
			if proto == "udp" {
				ports = s.UDP
			}
			if len(ports) == 0 {
				continue
			}
			m := "-p " + proto + " " + iptPorts(ports)
			what := s.Why + ", " + proto + " " + portsText(ports) + ","
			switch s.From.Kind {
			case FromAny:
				add(s.Name, what+" open to everybody", m, "ACCEPT")
			case FromTrusted:
				add(s.Name+"-closed", what+" only for trusted sources (accepted above)", m, "DROP")
			case FromLoopback:
				add(s.Name+"-closed", what+" only from this host (loopback accepted above)", m, "DROP")
			case FromList:
				for _, p := range s.From.Prefixes {
					if p.Addr().Is4() == v6 {
						continue
					}
					add(s.Name, what+" for the sources listed in its from:", "-s "+p.String()+" "+m, "ACCEPT")
				}
				add(s.Name+"-closed", what+" closed to sources not in its from: list", m, "DROP")
			}
		}
	}
	if cfg.PortScan.Enabled {
		ps := cfg.PortScan
		for _, proto := range []string{"tcp", "udp"} {
			add("portscan-count", "count new connections to closed ports per source",
				"-p "+proto+" -m conntrack --ctstate NEW -m recent --name pbxguard-portscan-hits --set", "")
		}
		add("portscan", fmt.Sprintf("%d new connections to closed ports within %s: source banned for %s", ps.Ports, nftDuration(ps.Within), nftDuration(ps.Ban)),
			fmt.Sprintf("-m conntrack --ctstate NEW -m recent --name pbxguard-portscan-hits --rcheck --seconds %d --hitcount %d -m recent --name pbxguard-portscan --set", secs(ps.Within), ps.Ports), "DROP")
	}
	final := "DROP"
	if cfg.Input == "accept" {
		final = "ACCEPT"
	}
	add("default", "default input policy: nothing above accepted this packet", "", final)

	var sb strings.Builder
	fmt.Fprintf(&sb, "# pbxguard firewall policy for %s-restore --noflush (IPv%s).\n", cmd, family)
	fmt.Fprintf(&sb, "# Add the jump once: %s -C INPUT -j %s 2>/dev/null || %s -I INPUT 1 -j %s\n", cmd, ch, cmd, ch)
	sb.WriteString("*filter\n")
	fmt.Fprintf(&sb, ":%s - [0:0]\n", ch)
	for _, l := range lines {
		sb.WriteString(l + "\n")
	}
	sb.WriteString("COMMIT\n")
	return sb.String(), nil
}

func secs(d time.Duration) int { return int(d / time.Second) }

func secShort(unit string) string {
	switch unit {
	case "second":
		return "sec"
	case "minute":
		return "min"
	}
	return unit
}

func iptPorts(rs []PortRange) string {
	if len(rs) == 1 {
		if rs[0].Lo == rs[0].Hi {
			return fmt.Sprintf("--dport %d", rs[0].Lo)
		}
		return fmt.Sprintf("--dport %d:%d", rs[0].Lo, rs[0].Hi)
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		if r.Lo == r.Hi {
			parts[i] = fmt.Sprint(r.Lo)
		} else {
			parts[i] = fmt.Sprintf("%d:%d", r.Lo, r.Hi)
		}
	}
	return "-m multiport --dports " + strings.Join(parts, ",")
}
