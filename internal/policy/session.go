package policy

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Session is an administrator's connection that a policy must not cut.
type Session struct {
	Client netip.Addr
	Port   uint16 // the server's port (sshd)
	Via    string // where it was found: SSH_CONNECTION, /proc/net/tcp, /proc/net/tcp6
}

func (s Session) String() string {
	return fmt.Sprintf("%s -> port %d (%s)", s.Client, s.Port, s.Via)
}

// ParseSSHConnection reads the SSH_CONNECTION variable sshd sets:
// "client_ip client_port server_ip server_port".
func ParseSSHConnection(v string) (Session, bool) {
	f := strings.Fields(v)
	if len(f) != 4 {
		return Session{}, false
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return Session{}, false
	}
	p, err := strconv.ParseUint(f[3], 10, 16)
	if err != nil {
		return Session{}, false
	}
	return Session{Client: a.Unmap().WithZone(""), Port: uint16(p), Via: "SSH_CONNECTION"}, true
}

// ParseProcNetTCP returns the established connections in a /proc/net/tcp
// or /proc/net/tcp6 table whose local port is one of ports.
func ParseProcNetTCP(data []byte, via string, ports ...uint16) []Session {
	want := map[uint16]bool{}
	for _, p := range ports {
		want[p] = true
	}
	var out []Session
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "01" { // 01 = TCP_ESTABLISHED
			continue
		}
		local, ok1 := parseHexAddrPort(f[1])
		remote, ok2 := parseHexAddrPort(f[2])
		if !ok1 || !ok2 || !want[local.Port()] {
			continue
		}
		out = append(out, Session{Client: remote.Addr().Unmap(), Port: local.Port(), Via: via})
	}
	return out
}

// parseHexAddrPort reads "0100007F:0016" (IPv4) or the 32-digit IPv6 form;
// the address is stored as host-order 32-bit words.
func parseHexAddrPort(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	// each 32-bit word is little-endian
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a, uint16(port)), true
}

// Lockout is a session the policy would cut.
type Lockout struct {
	Session Session
	Fix     string // what to add to the config, with the line
}

// CheckLockout returns the sessions that the policy would not let in again
// (new TCP connection from the client to the server port), each with the
// configuration line that fixes it. Sessions are deduplicated by client.
func CheckLockout(cfg *Config, sessions []Session) []Lockout {
	seen := map[netip.Addr]bool{}
	var out []Lockout
	sort.SliceStable(sessions, func(i, j int) bool { return sessions[i].Via < sessions[j].Via })
	for _, s := range sessions {
		if seen[s.Client] || !s.Client.IsValid() {
			continue
		}
		seen[s.Client] = true
		if cfg.AllowsTCP(s.Client, s.Port) {
			continue
		}
		out = append(out, Lockout{Session: s, Fix: cfg.trustFix(s.Client)})
	}
	return out
}

func (c *Config) trustFix(a netip.Addr) string {
	file := c.Source
	if file == "" {
		file = "the configuration"
	}
	item := a.String()
	if a.Is6() {
		item = fmt.Sprintf("%q", item)
	}
	if l := c.Lines["trusted.hosts"]; l > 0 {
		if c.trustedHostsFlow {
			return fmt.Sprintf("add %s to the list firewall.policy.trusted.hosts (line %d of %s)", item, l, file)
		}
		return fmt.Sprintf("add a line `- %s` to firewall.policy.trusted.hosts (line %d of %s)", item, l, file)
	}
	if l := c.Lines["trusted"]; l > 0 {
		return fmt.Sprintf("add `hosts: [%s]` under firewall.policy.trusted (line %d of %s)", item, l, file)
	}
	if l := c.Lines["policy"]; l > 0 {
		return fmt.Sprintf("add `trusted: {hosts: [%s]}` under firewall.policy (line %d of %s)", item, l, file)
	}
	return fmt.Sprintf("add to %s:\n  firewall:\n    policy:\n      trusted:\n        hosts: [%s]", file, item)
}
