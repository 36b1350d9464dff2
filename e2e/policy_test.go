package e2e

// End-to-end tests of the hardened firewall policy (issue 4): real nft,
// nmap, hping3 and sipvicious between network namespaces. Every attack is
// bounded in packets and time; everything runs inside namespaces that the
// tests create and delete.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/policy"
)

// policySetnsTrap is setns(2) per architecture (package syscall has no wrapper).
var policySetnsTrap = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// policyInNetns runs fn on an OS thread switched into the namespace, so
// that sockets fn creates live there. The thread is restored afterwards
// (or, if that fails, left locked so that it dies with the goroutine).
func policyInNetns(ns *Netns, fn func() error) error {
	trap, ok := policySetnsTrap[runtime.GOARCH]
	if !ok {
		return fmt.Errorf("setns: unknown syscall number on %s", runtime.GOARCH)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/var/run/netns/" + ns.Name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if _, _, e := syscall.RawSyscall(trap, target.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %v", ns.Name, e)
			return
		}
		ferr := fn()
		if _, _, e := syscall.RawSyscall(trap, orig.Fd(), syscall.CLONE_NEWNET, 0); e == 0 {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// policyLab is a PBX namespace with an attacker, a legitimate client and an
// admin, each on its own veth link.
type policyLab struct {
	pbx, attacker, legit, admin *Netns
	state                       string
	mu                          sync.Mutex
	udpFrom                     map[string]int // datagrams the SIP listener received, by source address
	waiters                     []int
}

const (
	policyLabPBXAttacker  = "203.0.113.1"
	policyLabAttacker     = "203.0.113.66"
	policyLabPBXLegit     = "198.51.100.1"
	policyLabLegit        = "198.51.100.20"
	policyLabPBXAdmin     = "192.0.2.1"
	policyLabAdmin        = "192.0.2.10"
	policyLabPBXLegit6    = "2001:db8:1::1"
	policyLabLegit6       = "2001:db8:1::20"
	policyLabPBXAttacker6 = "2001:db8:66::1"
	policyLabAttacker6    = "2001:db8:66::66"
)

func newPolicyLab(t *testing.T) *policyLab {
	t.Helper()
	l := &policyLab{
		pbx: newNetns(t, "pbx"), attacker: newNetns(t, "atk"), legit: newNetns(t, "legit"), admin: newNetns(t, "admin"),
		state: t.TempDir(), udpFrom: map[string]int{},
	}
	link(t, l.pbx, []string{policyLabPBXAttacker + "/24", policyLabPBXAttacker6 + "/64"}, l.attacker, []string{policyLabAttacker + "/24", policyLabAttacker6 + "/64"})
	link(t, l.pbx, []string{policyLabPBXLegit + "/24", policyLabPBXLegit6 + "/64"}, l.legit, []string{policyLabLegit + "/24", policyLabLegit6 + "/64"})
	link(t, l.pbx, []string{policyLabPBXAdmin + "/24"}, l.admin, []string{policyLabAdmin + "/24"})
	// the services of the PBX: sshd (22), SIP over TCP (5060), AMI (5038), HTTP (80), SIP over UDP
	for _, port := range []int{22, 5060, 5038, 80} {
		var ln net.Listener
		if err := policyInNetns(l.pbx, func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { // hold the connection until the peer closes it
					buf := make([]byte, 512)
					for {
						if _, err := c.Read(buf); err != nil {
							c.Close()
							return
						}
					}
				}()
			}
		}()
	}
	var pc net.PacketConn
	if err := policyInNetns(l.pbx, func() (err error) {
		pc, err = net.ListenPacket("udp", ":5060")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ua := from.(*net.UDPAddr)
			l.mu.Lock()
			l.udpFrom[ua.IP.String()]++
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		// the detached rollback waiters started by apply: end the ones this test started
		for _, pid := range l.waiters {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	})
	return l
}

func (l *policyLab) received(addr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.udpFrom[addr]
}

// config writes a pbxguard.yaml with the given firewall.policy body.
func (l *policyLab) config(t *testing.T, policyYAML string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pbxguard.yaml")
	body := "allowlist: [127.0.0.0/8, \"::1\"]\nfirewall:\n  backend: nftables\n  policy:\n"
	for _, line := range strings.Split(strings.Trim(policyYAML, "\n"), "\n") {
		body += "    " + line + "\n"
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pbxguard runs the binary; env is added to a clean environment (no
// SSH_CONNECTION from whoever runs the tests).
func (l *policyLab) pbxguard(args ...string) (string, int) {
	cmd := exec.Command(pbxguardBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return string(out), code
}

func (l *policyLab) fw(sub string, args ...string) []string {
	return append([]string{"firewall", sub, "--netns", l.pbx.Name, "--state-dir", l.state}, args...)
}

// apply applies the config, remembers the rollback waiter, and confirms
// unless told not to.
func (l *policyLab) apply(t *testing.T, cfg string, confirm bool, extra ...string) {
	t.Helper()
	out, code := l.pbxguard(append(l.fw("apply", "--config", cfg), extra...)...)
	if code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	l.rememberWaiter(t)
	if confirm {
		if out, code := l.pbxguard(l.fw("confirm")...); code != 0 {
			t.Fatalf("confirm: exit %d\n%s", code, out)
		}
		// confirm ends the waiter it disarmed
		pid := l.waiters[len(l.waiters)-1]
		gone := false
		for i := 0; i < 50 && !gone; i++ {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			gone = err != nil || strings.Contains(string(data), ") Z ")
			time.Sleep(20 * time.Millisecond)
		}
		if !gone {
			t.Errorf("rollback waiter %d still running after confirm", pid)
		}
	}
}

func (l *policyLab) rememberWaiter(t *testing.T) {
	t.Helper()
	p, err := policy.State{Dir: l.state}.PendingRollback()
	if err != nil || p == nil {
		t.Fatalf("no pending rollback after apply: %v", err)
	}
	if p.PID > 0 {
		l.waiters = append(l.waiters, p.PID)
	}
}

func (l *policyLab) show(t *testing.T) *policy.Live {
	t.Helper()
	out, code := l.pbxguard(l.fw("show", "--json", "--all")...)
	if code != 0 {
		t.Fatalf("show: exit %d\n%s", code, out)
	}
	var live policy.Live
	if err := json.Unmarshal([]byte(out), &live); err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	return &live
}

func (l *policyLab) packets(t *testing.T, live *policy.Live, rule string) uint64 {
	t.Helper()
	r, ok := live.Rule(rule)
	if !ok {
		t.Fatalf("no rule %q in the live table", rule)
	}
	return r.Packets
}

// policyDial opens a TCP connection from a namespace; it returns the error.
func policyDial(ns *Netns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := policyInNetns(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

func policyCanDial(ns *Netns, addr string) bool {
	c, err := policyDial(ns, addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// policySendUDP sends n datagrams from ns to addr, one every gap (0: as fast as possible).
func policySendUDP(ns *Netns, addr string, n int, gap time.Duration, payload []byte) error {
	var c net.Conn
	if err := policyInNetns(ns, func() (err error) {
		c, err = net.Dial("udp", addr)
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		if _, err := c.Write(payload); err != nil {
			// ICMP errors may surface as ECONNREFUSED: keep sending
			continue
		}
		if gap > 0 {
			time.Sleep(gap)
		}
	}
	return nil
}

const policyLabPolicy = `
trusted:
  hosts: [192.0.2.10]
services:
  ssh: {port: 22, from: any}
  sip: {udp: 5060, tcp: 5060, tls: 5061, from: any, rate_limit: {rate: 20/second, burst: 40}}
  ami: {port: 5038, from: loopback}
  http: {port: 80, from: trusted}
protections: {fragments: true, syn_flood: {rate: 25/second, burst: 50}}
port_scan: {ports: 10, within: 1m, ban: 10m}
sip_scanner: {ban: 10m}
`

// TestPolicyTCPAttacks: nmap NULL/XMAS/FIN scans, hping3 flag floods,
// fragments and a SYN flood from the attacker are counted and dropped by
// their named rules; the services stay open to a legitimate client; an
// nmap SYN sweep lands the attacker in the port-scan set, after which even
// open ports stop answering it.
func TestPolicyTCPAttacks(t *testing.T) {
	requireE2E(t, "nft", "nmap", "hping3")
	l := newPolicyLab(t)
	l.apply(t, l.config(t, policyLabPolicy), true)

	if !policyCanDial(l.legit, policyLabPBXLegit+":22") || !policyCanDial(l.legit, policyLabPBXLegit+":5060") {
		t.Fatal("ssh/sip not reachable from the legitimate client after apply")
	}
	if policyCanDial(l.legit, policyLabPBXLegit+":5038") || policyCanDial(l.legit, policyLabPBXLegit+":80") {
		t.Fatal("AMI or HTTP reachable from an untrusted client")
	}
	if !policyCanDial(l.admin, policyLabPBXAdmin+":80") {
		t.Fatal("HTTP provisioning not reachable from the trusted admin host")
	}

	nmap := func(kind, ports string) string {
		out, _ := l.attacker.Try("timeout", "60", "nmap", kind, "-Pn", "-n", "-T4", "--max-retries", "0",
			"--host-timeout", "45s", "-p", ports, policyLabPBXAttacker)
		return out
	}
	hping := func(args ...string) {
		a := append([]string{"20", "hping3", "-q"}, args...)
		l.attacker.Try("timeout", append(a, policyLabPBXAttacker)...)
	}
	const few = "20-25,80,5038,5060" // 9 ports
	out := nmap("-sN", few)
	out += nmap("-sX", few)
	out += nmap("-sF", few)
	hping("-c", "20", "-i", "u2000", "-p", "22", "-F", "-P", "-U") // XMAS by hand
	hping("-c", "20", "-i", "u2000", "-p", "22", "-X", "-Y")       // only the two reserved bits: no real flag at all
	hping("-c", "20", "-i", "u2000", "-p", "22", "-S", "-F")       // SYN+FIN
	hping("-c", "20", "-i", "u2000", "-p", "22", "-S", "-R")       // SYN+RST
	hping("-c", "10", "-i", "u2000", "-p", "22", "-S", "-f", "-d", "120")
	live := l.show(t)
	for rule, min := range map[string]uint64{
		"tcp-null":       9 + 20, // nmap -sN probes + hping3 -X -Y
		"tcp-xmas":       9 + 20, // nmap -sX + hping3 -F -P -U
		"tcp-fin-no-ack": 9,
		"tcp-syn-fin":    20,
		"tcp-syn-rst":    20,
		"fragments":      10,
	} {
		if got := l.packets(t, live, rule); got < min {
			t.Errorf("rule %s dropped %d packets, want >= %d\nnmap:\n%s", rule, got, min, out)
		}
	}
	if strings.Contains(out, "/tcp open ") {
		t.Errorf("a flag scan got an answer from an open port:\n%s", out)
	}

	// SYN flood, bounded: 400 SYNs at ~2000/s to the open ssh port
	hping("-c", "400", "-i", "u500", "-p", "22", "-S")
	live = l.show(t)
	if got := l.packets(t, live, "syn-flood4"); got < 200 {
		t.Errorf("syn-flood4 dropped %d of 400 SYNs, want >= 200 (limit 25/s burst 50)", got)
	}
	if !policyCanDial(l.legit, policyLabPBXLegit+":22") {
		t.Fatal("ssh unreachable for the legitimate client during the attacker's SYN flood")
	}

	// a SYN sweep: the port-scan guard catches it
	time.Sleep(2 * time.Second) // let the attacker's SYN meter refill a little
	swept := nmap("-sS", "1-200")
	live = l.show(t)
	if got := l.packets(t, live, "portscan4"); got == 0 {
		t.Errorf("portscan4 never fired\n%s", swept)
	}
	ban, _ := live.Set("portscan_ban4")
	if len(ban.Members) != 1 || ban.Members[0] != policyLabAttacker {
		t.Fatalf("portscan_ban4 = %v, want [%s]", ban.Members, policyLabAttacker)
	}
	before := l.packets(t, live, "portscan-ban4")
	if policyCanDial(l.attacker, policyLabPBXAttacker+":22") {
		t.Error("the caught scanner still reaches the open ssh port")
	}
	if after := l.packets(t, l.show(t), "portscan-ban4"); after <= before {
		t.Errorf("portscan-ban4 counter %d -> %d: the scanner's next packets were not dropped by the guard", before, after)
	}
	if !policyCanDial(l.legit, policyLabPBXLegit+":22") {
		t.Error("the legitimate client lost ssh")
	}
	t.Logf("drops: null=%d xmas=%d fin=%d synfin=%d synrst=%d frag=%d synflood=%d portscan=%d",
		l.packets(t, live, "tcp-null"), l.packets(t, live, "tcp-xmas"), l.packets(t, live, "tcp-fin-no-ack"),
		l.packets(t, live, "tcp-syn-fin"), l.packets(t, live, "tcp-syn-rst"), l.packets(t, live, "fragments"),
		l.packets(t, live, "syn-flood4"), l.packets(t, live, "portscan4"))
}

// TestPolicySIPRateLimit: a bounded UDP flood from one source is cut to the
// configured rate while a second source, sending at a normal pace at the
// same time, loses nothing.
func TestPolicySIPRateLimit(t *testing.T) {
	requireE2E(t, "nft")
	l := newPolicyLab(t)
	l.apply(t, l.config(t, policyLabPolicy), true)
	options := []byte("OPTIONS sip:100@" + policyLabPBXLegit + " SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-1\r\nUser-Agent: Yealink SIP-T46S\r\nContent-Length: 0\r\n\r\n")
	const flood, normal = 2000, 20
	start := time.Now()
	var wg sync.WaitGroup
	wg.Add(2)
	var ferr, nerr error
	go func() {
		defer wg.Done()
		ferr = policySendUDP(l.attacker, policyLabPBXAttacker+":5060", flood, 200*time.Microsecond, options)
	}()
	go func() {
		defer wg.Done()
		nerr = policySendUDP(l.legit, policyLabPBXLegit+":5060", normal, 100*time.Millisecond, options)
	}()
	wg.Wait()
	if ferr != nil || nerr != nil {
		t.Fatal(ferr, nerr)
	}
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	gotFlood, gotNormal := l.received(policyLabAttacker), l.received(policyLabLegit)
	// burst 40 + 20/s over the flood's duration, with slack for timing
	allowed := 40 + int(20*elapsed.Seconds()) + 20
	if gotFlood > allowed || gotFlood < 40 {
		t.Errorf("flooder got %d of %d datagrams through in %v; want 40..%d", gotFlood, flood, elapsed, allowed)
	}
	if gotNormal != normal {
		t.Errorf("second source got %d of %d datagrams through", gotNormal, normal)
	}
	live := l.show(t)
	if d := l.packets(t, live, "sip-rate-udp4"); int(d) < flood-allowed {
		t.Errorf("sip-rate-udp4 dropped %d, want >= %d", d, flood-allowed)
	}
	t.Logf("flood: %d sent in %v, %d delivered; second source: %d/%d delivered", flood, elapsed.Round(time.Millisecond), gotFlood, gotNormal, normal)
}

// TestPolicySIPScanner: sipvicious svmap's OPTIONS probe (User-Agent
// friendly-scanner) never reaches the SIP port; the scanner lands in the
// timed set and its later, innocent-looking datagrams are dropped too.
func TestPolicySIPScanner(t *testing.T) {
	requireE2E(t, "nft", "svmap")
	l := newPolicyLab(t)
	l.apply(t, l.config(t, policyLabPolicy), true)
	out, _ := l.attacker.Try("timeout", "30", "svmap", "-p", "5060", "-t", "0.5", "--first", "5", policyLabPBXAttacker)
	if got := l.received(policyLabAttacker); got != 0 {
		t.Fatalf("the SIP port received %d datagrams from svmap\n%s", got, out)
	}
	live := l.show(t)
	if got := l.packets(t, live, "sipscan4"); got == 0 {
		t.Fatalf("sipscan4 did not fire\n%s", out)
	}
	ban, _ := live.Set("sipscan_ban4")
	if len(ban.Members) != 1 || ban.Members[0] != policyLabAttacker {
		t.Fatalf("sipscan_ban4 = %v", ban.Members)
	}
	if !strings.Contains(out, "found nothing") && strings.Contains(out, policyLabPBXAttacker+":5060") {
		t.Errorf("svmap found the PBX:\n%s", out)
	}
	// a benign datagram from the same source afterwards is dropped too
	if err := policySendUDP(l.attacker, policyLabPBXAttacker+":5060", 3, 10*time.Millisecond, []byte("OPTIONS sip:x SIP/2.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := l.received(policyLabAttacker); got != 0 {
		t.Errorf("banned scanner still delivered %d datagrams", got)
	}
	// a legitimate phone is not affected
	if err := policySendUDP(l.legit, policyLabPBXLegit+":5060", 3, 10*time.Millisecond, []byte("REGISTER sip:pbx SIP/2.0\r\nUser-Agent: Grandstream GXP2170\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := l.received(policyLabLegit); got != 3 {
		t.Errorf("legit phone delivered %d of 3", got)
	}
	t.Logf("svmap: sipscan4=%d, sipscan-ban4=%d", l.packets(t, live, "sipscan4"), l.packets(t, l.show(t), "sipscan-ban4"))
}

// TestPolicyIPv6 checks that IPv6 keeps working between allowed
// namespaces: neighbour discovery passes the policy (the caches are
// flushed after apply so ND has to happen), and that the port-scan guard
// catches an IPv6 sweep.
func TestPolicyIPv6(t *testing.T) {
	requireE2E(t, "nft", "nmap")
	l := newPolicyLab(t)
	l.apply(t, l.config(t, policyLabPolicy), true)
	l.pbx.Run(t, "ip", "-6", "neigh", "flush", "all")
	l.legit.Run(t, "ip", "-6", "neigh", "flush", "all")
	if !policyCanDial(l.legit, "["+policyLabPBXLegit6+"]:22") {
		t.Fatal("IPv6 ssh from the legitimate namespace failed")
	}
	if err := policySendUDP(l.legit, "["+policyLabPBXLegit6+"]:5060", 3, 10*time.Millisecond, []byte("OPTIONS sip:x SIP/2.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := l.received(policyLabLegit6); got != 3 {
		t.Errorf("IPv6 SIP datagrams delivered: %d of 3", got)
	}
	if policyCanDial(l.legit, "["+policyLabPBXLegit6+"]:5038") {
		t.Error("AMI reachable over IPv6")
	}
	if nd := l.packets(t, l.show(t), "icmpv6-nd"); nd == 0 {
		t.Error("no neighbour discovery packet counted")
	}
	// the guards work over IPv6 too: an nmap -6 SYN sweep lands the scanner in portscan_ban6
	out, _ := l.attacker.Try("timeout", "60", "nmap", "-6", "-sS", "-Pn", "-n", "-T4", "--max-retries", "0",
		"--host-timeout", "45s", "-p", "1-200", policyLabPBXAttacker6)
	live := l.show(t)
	ban, _ := live.Set("portscan_ban6")
	if len(ban.Members) != 1 || ban.Members[0] != policyLabAttacker6 {
		t.Fatalf("portscan_ban6 = %v, want [%s]\n%s", ban.Members, policyLabAttacker6, out)
	}
	if policyCanDial(l.attacker, "["+policyLabPBXAttacker6+"]:22") {
		t.Error("the IPv6 scanner still reaches ssh")
	}
	if !policyCanDial(l.legit, "["+policyLabPBXLegit6+"]:22") {
		t.Error("the legitimate IPv6 client lost ssh")
	}
}

// TestPolicyLockout: a policy that leaves out the admin's address is
// refused while the admin holds an SSH (port 22) connection; with --force
// and no confirm, the rollback restores the admin's access in time.
func TestPolicyLockout(t *testing.T) {
	requireE2E(t, "nft")
	l := newPolicyLab(t)
	// the confirmed, safe policy: the admin is trusted
	l.apply(t, l.config(t, policyLabPolicy), true)
	conn, err := policyDial(l.admin, policyLabPBXAdmin+":22", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(100 * time.Millisecond)

	bad := l.config(t, `
trusted:
  hosts: [192.0.2.99]
services:
  ssh: {port: 22, from: [198.51.100.0/24]}
`)
	out, code := l.pbxguard(l.fw("apply", "--config", bad)...)
	if code != 1 || !strings.Contains(out, policyLabAdmin) || !strings.Contains(out, "add 192.0.2.10 to the list firewall.policy.trusted.hosts (line 6 of "+bad+")") {
		t.Fatalf("apply of a lock-out policy: exit %d, want 1 with the admin's address and the line to add\n%s", code, out)
	}
	if !policyCanDial(l.admin, policyLabPBXAdmin+":22") {
		t.Fatal("refused apply changed the kernel anyway")
	}

	const within = 5 * time.Second
	out, code = l.pbxguard(l.fw("apply", "--config", bad, "--force", "--confirm-within", within.String())...)
	if code != 0 || !strings.Contains(out, "rollback armed") {
		t.Fatalf("apply --force: exit %d\n%s", code, out)
	}
	l.rememberWaiter(t)
	applied := time.Now()
	if policyCanDial(l.admin, policyLabPBXAdmin+":22") {
		t.Fatal("the forced policy did not cut new ssh connections from the admin")
	}
	restored := false
	for time.Since(applied) < within+5*time.Second {
		if policyCanDial(l.admin, policyLabPBXAdmin+":22") {
			restored = true
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !restored {
		t.Fatalf("no rollback within %v", within+5*time.Second)
	}
	t.Logf("admin access back %v after apply (confirm window %v)", time.Since(applied).Round(10*time.Millisecond), within)
	// the previous (safe) policy is back, not merely an open host
	live := l.show(t)
	if _, ok := live.Rule("trusted4"); !ok {
		t.Error("rollback did not restore the previous policy")
	}
	if p, _ := (policy.State{Dir: l.state}).PendingRollback(); p != nil {
		t.Error("pending rollback left behind")
	}
	if policyCanDial(l.legit, policyLabPBXLegit+":5038") {
		t.Error("after rollback AMI is open: the previous policy is not in force")
	}
}

// TestPolicyCoexistence: other programs' tables are untouched by apply,
// rollback and remove; the daemon's ban table (inet pbxguard) is untouched
// by apply, rollback and `remove --keep-bans`, and deleted by `remove`
// (through the firewall package's Remove).
func TestPolicyCoexistence(t *testing.T) {
	requireE2E(t, "nft")
	l := newPolicyLab(t)
	foreign := `table inet foreign {
	set blocked { type ipv4_addr; elements = { 203.0.113.200 } }
	chain input { type filter hook input priority 5; policy accept; ip saddr @blocked counter drop comment "someone else's rule"; }
}
table ip6 other6 { chain c { type filter hook forward priority 0; policy accept; counter; }; }
table inet pbxguard {
	set banned4 { type ipv4_addr; flags timeout; elements = { 203.0.113.201 timeout 1h } }
	chain input { type filter hook input priority -10; policy accept; ip saddr @banned4 drop; }
}
`
	f := filepath.Join(t.TempDir(), "foreign.nft")
	if err := os.WriteFile(f, []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	l.pbx.Run(t, "nft", "-f", f)
	foreignTables := [][2]string{{"inet", "foreign"}, {"ip6", "other6"}}
	banTable := [2]string{"inet", "pbxguard"}
	snapshot := func(tables ...[2]string) string {
		var sb strings.Builder
		for _, tb := range tables {
			out, err := l.pbx.Try("nft", "-s", "list", "table", tb[0], tb[1])
			if err != nil {
				return "missing " + tb[1] + ": " + out
			}
			sb.WriteString(out)
		}
		return sb.String()
	}
	all := append(foreignTables, banTable)
	orig := snapshot(all...)
	origForeign := snapshot(foreignTables...)
	same := func(step string, tables ...[2]string) {
		t.Helper()
		before := origForeign
		if len(tables) == len(all) {
			before = orig
		}
		if got := snapshot(tables...); got != before {
			t.Errorf("after %s another table changed:\n%s", step, policy.Diff("before", "after", before, got))
		}
	}
	l.apply(t, l.config(t, policyLabPolicy), false, "--confirm-within", "1h")
	same("apply", all...)
	if out, code := l.pbxguard(l.fw("rollback")...); code != 0 {
		t.Fatalf("rollback: exit %d\n%s", code, out)
	}
	if _, err := l.pbx.Try("nft", "list", "table", "inet", "pbxguard_policy"); err == nil {
		t.Error("rollback to 'no policy' left the policy table")
	}
	same("rollback", all...)
	l.apply(t, l.config(t, policyLabPolicy), true)
	if out, code := l.pbxguard(l.fw("remove", "--keep-bans")...); code != 0 {
		t.Fatalf("remove --keep-bans: exit %d\n%s", code, out)
	}
	same("remove --keep-bans", all...)
	l.apply(t, l.config(t, policyLabPolicy), true)
	if out, code := l.pbxguard(l.fw("remove")...); code != 0 || !strings.Contains(out, "table inet pbxguard (the daemon's bans) is gone") {
		t.Fatalf("remove: exit %d\n%s", code, out)
	}
	for _, tb := range [][2]string{{"inet", "pbxguard_policy"}, banTable} {
		if _, err := l.pbx.Try("nft", "list", "table", tb[0], tb[1]); err == nil {
			t.Errorf("remove left table %s %s", tb[0], tb[1])
		}
	}
	same("remove", foreignTables...)
}

// TestPolicyPlanDiff: plan shows the rules with their comments and a diff
// against the live table; after apply the live table equals the plan.
func TestPolicyPlanDiff(t *testing.T) {
	requireE2E(t, "nft", "unshare")
	l := newPolicyLab(t)
	cfg := l.config(t, policyLabPolicy)
	out, code := l.pbxguard(l.fw("plan", "--config", cfg)...)
	if code != 0 || !strings.Contains(out, `comment "tcp-xmas: `) || !strings.Contains(out, "no table inet pbxguard_policy yet") {
		t.Fatalf("plan before apply: exit %d\n%.2000s", code, out)
	}
	l.apply(t, cfg, true)
	out, _ = l.pbxguard(l.fw("plan", "--config", cfg)...)
	if !strings.Contains(out, "# live: identical to this plan") {
		t.Errorf("plan after apply is not identical to the live table:\n%s", out[strings.LastIndex(out, "\n}\n"):])
	}
	cfg2 := l.config(t, strings.Replace(policyLabPolicy, "hosts: [192.0.2.10]", "hosts: [192.0.2.10, 192.0.2.77]", 1))
	out, _ = l.pbxguard(l.fw("plan", "--config", cfg2)...)
	diff := out[strings.Index(out, "# diff"):]
	if !strings.Contains(diff, "192.0.2.77") || !strings.Contains(diff, "\n-") || !strings.Contains(diff, "\n+") {
		t.Errorf("diff does not show the added trusted host:\n%s", diff)
	}
	// the iptables flavour is accepted by iptables-restore --test in the namespace
	for _, fam := range []string{"iptables", "ip6tables"} {
		text, code := l.pbxguard("firewall", "plan", "--config", cfg, "--format", fam)
		if code != 0 {
			t.Fatalf("plan --format %s: %s", fam, text)
		}
		f := filepath.Join(t.TempDir(), fam+".rules")
		os.WriteFile(f, []byte(text), 0o644)
		if out, err := l.pbx.Try(fam+"-restore", "--noflush", "--test", f); err != nil {
			t.Errorf("%s-restore --test rejects the compiled text: %v\n%s", fam, err, out)
		}
	}
}

// policyLoadBans fills the daemon's ban table in namespace ns through the
// firewall package's nftables backend with 100,000 IPv4 bans plus the
// extra addresses, and reads the count back.
func policyLoadBans(b *testing.B, ns string, extra ...string) {
	b.Helper()
	fw, err := firewall.New("nftables", firewall.Options{NetNS: ns, MaxElem: 200000})
	if err != nil {
		b.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Init(b.Context()); err != nil {
		b.Fatal(err)
	}
	bans := make([]firewall.Ban, 0, 100000+len(extra))
	for i := 0; i < 100000; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		bans = append(bans, firewall.Ban{Prefix: netip.PrefixFrom(a, 32), Timeout: time.Hour})
	}
	for _, e := range extra {
		a := netip.MustParseAddr(e)
		bans = append(bans, firewall.Ban{Prefix: netip.PrefixFrom(a, a.BitLen()), Timeout: time.Hour})
	}
	if err := fw.Add(b.Context(), bans); err != nil {
		b.Fatal(err)
	}
	got, err := fw.List(b.Context())
	if err != nil || len(got) != len(bans) {
		b.Fatalf("ban table holds %d of %d bans (%v)", len(got), len(bans), err)
	}
}

// BenchmarkPolicyApply measures loading the full default policy (with the
// 497-rule SIP scanner chain) in one nft transaction, alone and next to the
// daemon's ban table (firewall package, nftables backend) holding 100,000
// addresses.
func BenchmarkPolicyApply(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	text, err := policy.PlanText(policy.Default())
	if err != nil {
		b.Fatal(err)
	}
	for _, withBans := range []bool{false, true} {
		name := "policy-only"
		if withBans {
			name = "with-100k-bans"
		}
		b.Run(name, func(b *testing.B) {
			ns := fmt.Sprintf("pbxg-pbench-%d", os.Getpid())
			if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
				b.Fatalf("%v %s", err, out)
			}
			defer exec.Command("ip", "netns", "del", ns).Run()
			k := policy.Kernel{Netns: ns}
			if withBans {
				policyLoadBans(b, ns)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := k.Load(b.Context(), text); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPolicyDropWith100kBans sends UDP datagrams to the SIP port from
// a banned source, with the full policy and 100k bans (firewall package)
// loaded: ns/op is the cost of one datagram sent and dropped; the ban
// table's counter must see them all.
func BenchmarkPolicyDropWith100kBans(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	pbx := fmt.Sprintf("pbxg-pbench-pbx-%d", os.Getpid())
	atk := fmt.Sprintf("pbxg-pbench-atk-%d", os.Getpid())
	for _, ns := range []string{pbx, atk} {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
		defer exec.Command("ip", "netns", "del", ns).Run()
	}
	for _, c := range [][]string{
		{"ip", "link", "add", "pgbp0", "netns", pbx, "type", "veth", "peer", "name", "pgbp1", "netns", atk},
		{"ip", "-n", pbx, "addr", "add", policyLabPBXAttacker + "/24", "dev", "pgbp0"},
		{"ip", "-n", atk, "addr", "add", policyLabAttacker + "/24", "dev", "pgbp1"},
		{"ip", "-n", pbx, "link", "set", "pgbp0", "up"},
		{"ip", "-n", atk, "link", "set", "pgbp1", "up"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v %s", c, err, out)
		}
	}
	k := policy.Kernel{Netns: pbx}
	text, _ := policy.PlanText(policy.Default())
	policyLoadBans(b, pbx, policyLabAttacker)
	if err := k.Load(b.Context(), text); err != nil {
		b.Fatal(err)
	}
	// resolve the neighbour first (ARP is not filtered), so every datagram leaves
	exec.Command("ip", "netns", "exec", atk, "ping", "-c", "1", "-W", "1", policyLabPBXAttacker).Run()
	var c net.Conn
	if err := policyInNetns(&Netns{Name: atk}, func() (err error) {
		c, err = net.Dial("udp", policyLabPBXAttacker+":5060")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := []byte("OPTIONS sip:100@pbx SIP/2.0\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = c.Write(payload)
	}
	b.StopTimer()
	out, err := exec.Command("ip", "netns", "exec", pbx, "nft", "list", "chain", "inet", firewall.NftTable, firewall.NftInput).CombinedOutput()
	if err != nil {
		b.Fatalf("%v %s", err, out)
	}
	var dropped int
	if i := strings.Index(string(out), "packets "); i >= 0 {
		fmt.Sscanf(string(out[i:]), "packets %d", &dropped)
	}
	if dropped < b.N*99/100 {
		b.Fatalf("ban table dropped %d of %d datagrams", dropped, b.N)
	}
}

// TestPolicyRollbackSurvivesReboot plays a reboot during the confirm
// window: the waiter dies (killed here), the kernel loses the policy
// table; the boot unit's `rollback --if-pending` then restores the last
// confirmed policy, and `rollback --boot` reloads it on a normal boot.
func TestPolicyRollbackSurvivesReboot(t *testing.T) {
	requireE2E(t, "nft")
	l := newPolicyLab(t)
	l.apply(t, l.config(t, policyLabPolicy), true) // confirmed: admin trusted, AMI closed
	open := l.config(t, "input: accept\nport_scan: false\n")
	l.apply(t, open, false, "--confirm-within", "1h")
	// "reboot": the waiter dies, the kernel forgets every table
	for _, pid := range l.waiters[1:] {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
	l.pbx.Run(t, "nft", "delete", "table", "inet", policy.TableName)
	out, code := l.pbxguard(l.fw("rollback", "--if-pending")...)
	if code != 0 {
		t.Fatalf("rollback --if-pending: exit %d\n%s", code, out)
	}
	live := l.show(t)
	if _, ok := live.Rule("ami-closed"); !ok {
		t.Fatalf("after the boot rollback the confirmed policy is not back:\n%s", out)
	}
	if _, ok := live.Rule("portscan4"); !ok {
		t.Fatal("the unconfirmed policy (no port-scan guard) is live after the boot rollback")
	}
	if p, _ := (policy.State{Dir: l.state}).PendingRollback(); p != nil {
		t.Fatal("pending rollback still armed after the boot rollback")
	}
	// nothing pending: --if-pending is a no-op, --boot reloads the confirmed policy
	l.pbx.Run(t, "nft", "delete", "table", "inet", policy.TableName)
	if out, code := l.pbxguard(l.fw("rollback", "--if-pending")...); code != 0 {
		t.Fatalf("rollback --if-pending with nothing pending: exit %d\n%s", code, out)
	}
	if _, err := l.pbx.Try("nft", "list", "table", "inet", policy.TableName); err == nil {
		t.Fatal("--if-pending loaded something although nothing was pending")
	}
	if out, code := l.pbxguard(l.fw("rollback", "--boot")...); code != 0 || !strings.Contains(out, "loaded the last confirmed policy") {
		t.Fatalf("rollback --boot: exit %d\n%s", code, out)
	}
	if _, ok := l.show(t).Rule("ami-closed"); !ok {
		t.Fatal("--boot did not load the confirmed policy")
	}
	if policyCanDial(l.legit, policyLabPBXLegit+":5038") || !policyCanDial(l.legit, policyLabPBXLegit+":22") {
		t.Error("the reloaded policy does not behave like the confirmed one")
	}
}

// TestPolicyIPTablesLegacy loads the iptables-restore flavour into the
// namespace the way docs/policy.md says (restore --noflush, one jump from
// INPUT) and checks the same things with real traffic: flag scans counted,
// svmap dropped by the string match, services open, AMI closed.
func TestPolicyIPTablesLegacy(t *testing.T) {
	requireE2E(t, "iptables-restore", "iptables", "nmap", "hping3", "svmap")
	l := newPolicyLab(t)
	text, code := l.pbxguard("firewall", "plan", "--format", "iptables", "--config", l.config(t, policyLabPolicy))
	if code != 0 {
		t.Fatalf("plan --format iptables: %s", text)
	}
	f := filepath.Join(t.TempDir(), "v4.rules")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	l.pbx.Run(t, "iptables-restore", "--noflush", f)
	l.pbx.Run(t, "iptables", "-I", "INPUT", "1", "-j", policy.IPTablesChain)
	l.pbx.Run(t, "iptables", "-P", "INPUT", "ACCEPT") // the chain ends in its own DROP

	if !policyCanDial(l.legit, policyLabPBXLegit+":22") || policyCanDial(l.legit, policyLabPBXLegit+":5038") {
		t.Fatal("ssh closed or AMI open under the iptables policy")
	}
	l.attacker.Try("timeout", "60", "nmap", "-sX", "-Pn", "-n", "-T4", "--max-retries", "0", "--host-timeout", "45s", "-p", "20-25", policyLabPBXAttacker)
	l.attacker.Try("timeout", "20", "hping3", "-q", "-c", "10", "-i", "u2000", "-p", "22", "-X", "-Y", policyLabPBXAttacker)
	out, _ := l.attacker.Try("timeout", "30", "svmap", "-p", "5060", "-t", "0.5", "--first", "5", policyLabPBXAttacker)
	if got := l.received(policyLabAttacker); got != 0 {
		t.Errorf("svmap delivered %d datagrams through the string match\n%s", got, out)
	}
	// counters per rule, by comment
	listing := l.pbx.Run(t, "iptables", "-L", policy.IPTablesChain, "-v", "-n", "-x")
	count := func(name string) int {
		total := 0
		for _, line := range strings.Split(listing, "\n") {
			if strings.Contains(line, "/* "+name+": ") {
				var pk int
				fmt.Sscanf(strings.TrimSpace(line), "%d", &pk)
				total += pk
			}
		}
		return total
	}
	for name, min := range map[string]int{"tcp-xmas": 6, "tcp-null": 10, "sip-scanner": 1} {
		if got := count(name); got < min {
			t.Errorf("iptables rule %s counted %d, want >= %d\n%s", name, got, min, listing)
		}
	}
	if err := policySendUDP(l.legit, policyLabPBXLegit+":5060", 3, 10*time.Millisecond, []byte("REGISTER sip:pbx SIP/2.0\r\nUser-Agent: Yealink\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if got := l.received(policyLabLegit); got != 3 {
		t.Errorf("legit SIP delivered %d of 3 under iptables", got)
	}
}
