package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"golang.org/x/sys/unix"
)

// Addresses used as set contents. No packet is ever sent to them: the bulk
// entries only fill sets inside a test namespace. Bulk IPv4 comes from
// 100.64.0.0/10 (shared address space, enough distinct addresses), IPv6 from
// 2001:db8::/32; packets only flow between 192.0.2.0/24 / 2001:db8:ff::/64
// addresses on a veth between two test namespaces.
func bulkBans(n4, n6 int, timeout time.Duration) []firewall.Ban {
	var out []firewall.Ban
	base4 := netip.MustParseAddr("100.64.0.1")
	a := base4
	for i := 0; i < n4; i++ {
		out = append(out, firewall.Ban{Prefix: netip.PrefixFrom(a, 32), Timeout: timeout})
		a = a.Next()
	}
	b := netip.MustParseAddr("2001:db8:1::1")
	for i := 0; i < n6; i++ {
		out = append(out, firewall.Ban{Prefix: netip.PrefixFrom(b, 128), Timeout: timeout})
		b = b.Next()
	}
	return out
}

var prefix64 = netip.MustParsePrefix("2001:db8:64:1::/64")

// remainingOK: a ban of want added at addedAt shows got remaining, within
// ±2 s, less the time since the Add started (a loaded machine can take
// seconds to read 100k entries back; the kernel's clock runs meanwhile).
func remainingOK(got, want time.Duration, addedAt time.Time) bool {
	return got <= want+2*time.Second && got >= want-time.Since(addedAt)-2*time.Second
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func fwBackend(t testing.TB, name string, opts firewall.Options) firewall.Backend {
	t.Helper()
	b, err := firewall.New(name, opts)
	if err != nil {
		t.Fatalf("firewall.New(%s): %v", name, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// kernelCount reads back what the kernel holds, with the tool's own eyes,
// and returns the number of entries and each entry's remaining seconds.
func kernelCount(t *testing.T, ns *Netns, backend string) (n int, remaining map[string]float64) {
	t.Helper()
	remaining = map[string]float64{}
	switch backend {
	case "nftables":
		for _, set := range []string{firewall.NftSet4, firewall.NftSet6, firewall.NftSet4Net, firewall.NftSet6Net} {
			out, err := ns.Try("nft", "-j", "list", "set", "inet", firewall.NftTable, set)
			if err != nil {
				if set == firewall.NftSet4 || set == firewall.NftSet6 {
					t.Fatalf("nft list set %s: %v\n%s", set, err, out)
				}
				continue // prefix sets exist only with Options.Prefixes
			}
			var doc struct {
				Nftables []struct {
					Set *struct {
						Elem []json.RawMessage `json:"elem"`
					} `json:"set"`
				} `json:"nftables"`
			}
			if err := json.Unmarshal([]byte(out), &doc); err != nil {
				t.Fatalf("nft -j: %v", err)
			}
			for _, it := range doc.Nftables {
				if it.Set == nil {
					continue
				}
				for _, raw := range it.Set.Elem {
					var e struct {
						Elem struct {
							Val     json.RawMessage `json:"val"`
							Expires float64         `json:"expires"`
						} `json:"elem"`
					}
					if err := json.Unmarshal(raw, &e); err != nil {
						t.Fatalf("nft elem %s: %v", raw, err)
					}
					key := nftVal(t, e.Elem.Val)
					remaining[key] = e.Elem.Expires
					n++
				}
			}
		}
	case "ipset":
		re := regexp.MustCompile(`^(\S+) timeout (\d+)`)
		for _, set := range []string{firewall.IPSet4, firewall.IPSet6} {
			out := ns.Run(t, "ipset", "list", set)
			inMembers := false
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "Members:") {
					inMembers = true
					continue
				}
				if !inMembers || line == "" {
					continue
				}
				m := re.FindStringSubmatch(line)
				if m == nil {
					t.Fatalf("ipset member line %q", line)
				}
				s, _ := strconv.ParseFloat(m[2], 64)
				remaining[canon(m[1])] = s
				n++
			}
		}
	case "iptables":
		re := regexp.MustCompile(`^-A ` + firewall.IPTChain + ` -s (\S+) .*-j DROP`)
		for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
			out := ns.Run(t, cmd, "-t", "filter")
			for _, line := range strings.Split(out, "\n") {
				if m := re.FindStringSubmatch(line); m != nil {
					remaining[canon(m[1])] = -1
					n++
				}
			}
		}
	default:
		t.Fatalf("no readback for %s", backend)
	}
	return n, remaining
}

func nftVal(t *testing.T, raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return canon(s)
	}
	var p struct {
		Prefix struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
	}
	if json.Unmarshal(raw, &p) == nil && p.Prefix.Addr != "" {
		return canon(fmt.Sprintf("%s/%d", p.Prefix.Addr, p.Prefix.Len))
	}
	t.Fatalf("unexpected nft element value %s", raw)
	return ""
}

// canon turns "1.2.3.4", "1.2.3.4/32", "2001:db8::/64" into a prefix string.
func canon(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}

var fwBackends = []struct {
	name  string
	tools []string
}{
	{"nftables", []string{"nft"}},
	{"ipset", []string{"ipset", "iptables", "ip6tables", "iptables-save"}},
	{"iptables", []string{"iptables", "ip6tables", "iptables-restore", "iptables-save"}},
}

// TestFirewallBackends: for every backend, in a fresh namespace: Init
// (twice: idempotent), 10k entries (IPv4, IPv6, a /64) counted back with the
// kernel tool, remaining timeouts, List, Delete, Remove leaving a foreign
// table alone.
func TestFirewallBackends(t *testing.T) {
	requireE2E(t, "nft", "ipset", "iptables")
	for _, bk := range fwBackends {
		t.Run(bk.name, func(t *testing.T) {
			requireE2E(t, bk.tools...)
			ns := newNetns(t, "fw")
			// Someone else's nft table, and an iptables rule of theirs, that must survive.
			ns.Run(t, "nft", "add", "table", "inet", "someoneelse")
			ns.Run(t, "nft", "add", "set", "inet", "someoneelse", "keep", "{ type ipv4_addr; }")
			ns.Run(t, "nft", "add", "element", "inet", "someoneelse", "keep", "{ 192.0.2.99 }")
			ns.Run(t, "iptables", "-w", "-A", "INPUT", "-s", "203.0.113.99/32", "-j", "ACCEPT")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			opts := firewall.Options{NetNS: ns.Name, Prefixes: true, MaxElem: 200000}
			b := fwBackend(t, bk.name, opts)
			if b.Name() != bk.name {
				t.Fatalf("Name() = %q", b.Name())
			}
			if err := b.Init(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Init(ctx); err != nil {
				t.Fatalf("second Init (must be idempotent): %v", err)
			}
			// Idempotent: one drop rule pair / one jump, not two.
			checkSingleHook(t, ns, bk.name)

			const total = 10000
			bans := bulkBans(6000, total-6001, time.Hour)
			bans = append(bans, firewall.Ban{Prefix: prefix64, Timeout: 30 * time.Minute})
			// one address with a short, distinct timeout
			bans[0].Timeout = 90 * time.Second
			if len(bans) != total {
				t.Fatalf("built %d bans", len(bans))
			}
			addedAt := time.Now()
			if err := b.Add(ctx, bans); err != nil {
				t.Fatalf("Add %d: %v", total, err)
			}
			n, rem := kernelCount(t, ns, bk.name)
			if n != total {
				t.Fatalf("kernel holds %d entries after adding %d", n, total)
			}
			for _, c := range []struct {
				key  string
				want float64
			}{{"100.64.0.1/32", 90}, {"100.64.0.2/32", 3600}, {"2001:db8:1::1/128", 3600}, {prefix64.String(), 1800}} {
				got, ok := rem[c.key]
				if !ok {
					t.Fatalf("%s missing from kernel readback", c.key)
				}
				if got >= 0 && !remainingOK(secs(got), secs(c.want), addedAt) {
					t.Errorf("%s: kernel says %.0fs remaining, want %v ±2s (less the %v since Add)", c.key, got, c.want, time.Since(addedAt))
				}
			}
			// List agrees with the kernel.
			list, err := b.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != total {
				t.Fatalf("List returned %d, kernel holds %d", len(list), total)
			}
			byKey := map[string]time.Duration{}
			for _, e := range list {
				byKey[e.Prefix.String()] = e.Timeout
			}
			for key, want := range map[string]time.Duration{"100.64.0.1/32": 90 * time.Second, "100.64.0.2/32": time.Hour, prefix64.String(): 30 * time.Minute} {
				got, ok := byKey[key]
				if !ok {
					t.Fatalf("List lacks %s", key)
				}
				if !remainingOK(got, want, addedAt) {
					t.Errorf("List: %s remaining %v, want %v ±2s (less the %v since Add)", key, got, want, time.Since(addedAt))
				}
			}
			// Refresh: re-adding gives the new timeout.
			refreshedAt := time.Now()
			if err := b.Add(ctx, []firewall.Ban{{Prefix: bans[1].Prefix, Timeout: 2 * time.Hour}}); err != nil {
				t.Fatal(err)
			}
			list, _ = b.List(ctx)
			for _, e := range list {
				if e.Prefix == bans[1].Prefix {
					if !remainingOK(e.Timeout, 2*time.Hour, refreshedAt) {
						t.Errorf("after refresh: %v remaining %v, want 2h", e.Prefix, e.Timeout)
					}
				}
			}
			// Delete half, plus some that are not there (not an error).
			var del []netip.Prefix
			for i := 0; i < total; i += 2 {
				del = append(del, bans[i].Prefix)
			}
			del = append(del, netip.MustParsePrefix("100.127.0.1/32"), netip.MustParsePrefix("2001:db8:dead::1/128"))
			if err := b.Delete(ctx, del); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			n, rem = kernelCount(t, ns, bk.name)
			if n != total/2 {
				t.Fatalf("kernel holds %d after deleting half of %d", n, total)
			}
			if _, ok := rem["100.64.0.1/32"]; ok {
				t.Fatal("deleted 100.64.0.1 still in the kernel")
			}
			if _, ok := rem[prefix64.String()]; !ok {
				t.Fatal("the /64 (odd index) was deleted")
			}
			if err := b.Remove(ctx); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			checkRemoved(t, ns, bk.name)
			out := ns.Run(t, "nft", "list", "table", "inet", "someoneelse")
			if !strings.Contains(out, "192.0.2.99") {
				t.Fatalf("foreign table damaged by Remove:\n%s", out)
			}
			if out := ns.Run(t, "iptables", "-w", "-S", "INPUT"); !strings.Contains(out, "-A INPUT -s 203.0.113.99/32 -j ACCEPT") {
				t.Fatalf("foreign iptables rule damaged by Remove:\n%s", out)
			}
			if err := b.Remove(ctx); err != nil {
				t.Fatalf("second Remove: %v", err)
			}
		})
	}
}

func checkSingleHook(t *testing.T, ns *Netns, backend string) {
	t.Helper()
	switch backend {
	case "nftables":
		out := ns.Run(t, "nft", "list", "chain", "inet", firewall.NftTable, firewall.NftInput)
		if c := strings.Count(out, "@"+firewall.NftSet4+" "); c != 1 {
			t.Fatalf("input chain has %d rules for banned4, want 1:\n%s", c, out)
		}
		if c := strings.Count(out, "@"+firewall.NftSet6+" "); c != 1 {
			t.Fatalf("input chain has %d rules for banned6, want 1:\n%s", c, out)
		}
		if !strings.Contains(out, "priority filter - 10") && !strings.Contains(out, "priority -10") {
			t.Fatalf("input chain not at priority -10:\n%s", out)
		}
	default:
		for _, cmd := range []string{"iptables", "ip6tables"} {
			out := ns.Run(t, cmd, "-S", "INPUT")
			if c := strings.Count(out, "-j "+firewall.IPTChain); c != 1 {
				t.Fatalf("%s INPUT has %d jumps to %s, want 1:\n%s", cmd, c, firewall.IPTChain, out)
			}
		}
	}
}

func checkRemoved(t *testing.T, ns *Netns, backend string) {
	t.Helper()
	switch backend {
	case "nftables":
		if out, err := ns.Try("nft", "list", "table", "inet", firewall.NftTable); err == nil {
			t.Fatalf("table inet pbxguard still there after Remove:\n%s", out)
		}
	default:
		for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
			if out := ns.Run(t, cmd, "-t", "filter"); strings.Contains(out, firewall.IPTChain) {
				t.Fatalf("%s still shows %s after Remove:\n%s", cmd, firewall.IPTChain, out)
			}
		}
		if backend == "ipset" {
			if out, _ := ns.Try("ipset", "list", "-n"); strings.Contains(out, "pbxguard") {
				t.Fatalf("ipset sets left after Remove: %s", out)
			}
		}
	}
}

// TestFirewallDropsPackets: pbx and attacker namespaces joined by a veth;
// with 100k entries in the set, UDP from a banned source (IPv4 and IPv6)
// is dropped, from an unbanned source it arrives; after Delete it arrives.
func TestFirewallDropsPackets(t *testing.T) {
	requireE2E(t, "nft", "ipset", "iptables")
	for _, bk := range fwBackends {
		t.Run(bk.name, func(t *testing.T) {
			requireE2E(t, bk.tools...)
			pbx := newNetns(t, "pbx")
			att := newNetns(t, "att")
			link(t, pbx, []string{"192.0.2.1/24", "2001:db8:ff::1/64"}, att,
				[]string{"192.0.2.10/24", "192.0.2.20/24", "2001:db8:ff::10/64", "2001:db8:ff::20/64"})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			b := fwBackend(t, bk.name, firewall.Options{NetNS: pbx.Name, Prefixes: true, MaxElem: 200000})
			if err := b.Init(ctx); err != nil {
				t.Fatal(err)
			}
			defer b.Remove(context.Background())
			n := 100000
			if bk.name == "iptables" {
				n = 2000 // one rule per address: 100k linear rules is what this backend is not for
			}
			bans := bulkBans(n/2, n/2-2, time.Hour)
			bans = append(bans,
				firewall.Ban{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Timeout: time.Hour},
				firewall.Ban{Prefix: netip.MustParsePrefix("2001:db8:ff::10/128"), Timeout: time.Hour})
			if err := b.Add(ctx, bans); err != nil {
				t.Fatal(err)
			}
			if got, _ := kernelCount(t, pbx, bk.name); got != n {
				t.Fatalf("kernel holds %d, want %d", got, n)
			}
			l4 := listenUDP(t, pbx, "udp4", "192.0.2.1:5060")
			l6 := listenUDP(t, pbx, "udp6", "[2001:db8:ff::1]:5060")
			cases := []struct {
				ln       *udpListener
				from, to string
				banned   bool
			}{
				{l4, "192.0.2.10", "192.0.2.1", true},
				{l4, "192.0.2.20", "192.0.2.1", false},
				{l6, "2001:db8:ff::10", "2001:db8:ff::1", true},
				{l6, "2001:db8:ff::20", "2001:db8:ff::1", false},
			}
			for _, c := range cases {
				got := probeUDP(t, att, c.ln, c.from, c.to)
				if got == c.banned {
					t.Errorf("from %s (banned=%v): arrived=%v", c.from, c.banned, got)
				}
			}
			if bk.name == "nftables" {
				// The drops were ours: the rules' counters saw them (3 sends each).
				out := pbx.Run(t, "nft", "list", "chain", "inet", firewall.NftTable, firewall.NftInput)
				re := regexp.MustCompile(`saddr @(banned[46]) counter packets (\d+)`)
				seen := map[string]int{}
				for _, m := range re.FindAllStringSubmatch(out, -1) {
					seen[m[1]], _ = strconv.Atoi(m[2])
				}
				if seen[firewall.NftSet4] < 3 || seen[firewall.NftSet6] < 3 {
					t.Errorf("drop counters %v, want >= 3 each:\n%s", seen, out)
				}
			}
			if err := b.Delete(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.10/32"), netip.MustParsePrefix("2001:db8:ff::10/128")}); err != nil {
				t.Fatal(err)
			}
			for _, c := range cases {
				if !probeUDP(t, att, c.ln, c.from, c.to) {
					t.Errorf("after Delete, from %s: packet did not arrive", c.from)
				}
			}
		})
	}
}

// inNetns runs f on a thread switched into the named namespace.
func inNetns(t testing.TB, name string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		target, err := os.Open("/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

type udpListener struct {
	conn *net.UDPConn
	got  chan string
}

// listenUDP opens a UDP socket inside ns (the socket stays in the namespace
// it was made in) and collects payloads.
func listenUDP(t *testing.T, ns *Netns, network, addr string) *udpListener {
	t.Helper()
	l := &udpListener{got: make(chan string, 64)}
	err := inNetns(t, ns.Name, func() error {
		ua, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return err
		}
		l.conn, err = net.ListenUDP(network, ua)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { l.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := l.conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			select {
			case l.got <- string(buf[:n]):
			default:
			}
		}
	}()
	return l
}

var probeSeq int

// probeUDP sends a few datagrams from src to dst:5060 inside ns and reports
// whether one arrived (bounded: 3 sends, 1.5 s).
func probeUDP(t *testing.T, ns *Netns, l *udpListener, src, dst string) bool {
	t.Helper()
	probeSeq++
	token := fmt.Sprintf("probe-%d-%s", probeSeq, src)
	err := inNetns(t, ns.Name, func() error {
		la := &net.UDPAddr{IP: net.ParseIP(src)}
		ra := &net.UDPAddr{IP: net.ParseIP(dst), Port: 5060}
		c, err := net.DialUDP("udp", la, ra)
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < 3; i++ {
			if _, err := c.Write([]byte(token)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s: %v", src, err)
	}
	deadline := time.After(1500 * time.Millisecond)
	for {
		select {
		case s := <-l.got:
			if s == token {
				// drain the duplicates
				time.Sleep(50 * time.Millisecond)
				for len(l.got) > 0 {
					<-l.got
				}
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// requireRootBench skips a benchmark without root and nft.
func requireRootBench(b *testing.B) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
}

// benchNetns makes a namespace for a benchmark (newNetns takes *testing.T).
func benchNetns(b *testing.B) string {
	b.Helper()
	name := fmt.Sprintf("pbxg-bench-%d-%d", os.Getpid()%100000, nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v %s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// BenchmarkNftablesAdd100k: 100k bans in one Add (the backend chunks the
// netlink messages), the sets emptied between runs outside the timing.
// ipv4 = 100k IPv4 addresses; mixed = 50k IPv4 + 50k IPv6.
//
//	sudo go test ./e2e -run '^$' -bench 'NftablesAdd100k' -benchtime 5x
func BenchmarkNftablesAdd100k(b *testing.B) {
	requireRootBench(b)
	for _, mix := range []struct {
		name   string
		n4, n6 int
	}{{"ipv4", 100000, 0}, {"mixed", 50000, 50000}} {
		b.Run(mix.name, func(b *testing.B) {
			ns := benchNetns(b)
			be, err := firewall.NewNftables(firewall.Options{NetNS: ns, MaxElem: 200000})
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			ctx := context.Background()
			if err := be.Init(ctx); err != nil {
				b.Fatal(err)
			}
			bans := bulkBans(mix.n4, mix.n6, time.Hour)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				flushSets(b, ns)
				b.StartTimer()
				if err := be.Add(ctx, bans); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := countSets(b, ns); got != len(bans) {
				b.Fatalf("kernel holds %d of %d", got, len(bans))
			}
		})
	}
}

func flushSets(b *testing.B, ns string) {
	b.Helper()
	for _, set := range []string{firewall.NftSet4, firewall.NftSet6} {
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "flush", "set", "inet", firewall.NftTable, set).CombinedOutput(); err != nil {
			b.Fatalf("flush: %v %s", err, out)
		}
	}
}

// countSets counts the elements with nft itself (never trust a silent success).
func countSets(b *testing.B, ns string) int {
	b.Helper()
	n := 0
	for _, set := range []string{firewall.NftSet4, firewall.NftSet6} {
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "list", "set", "inet", firewall.NftTable, set).Output()
		if err != nil {
			b.Fatalf("nft list set: %v", err)
		}
		var doc struct {
			Nftables []struct {
				Set *struct {
					Elem []json.RawMessage `json:"elem"`
				} `json:"set"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			b.Fatal(err)
		}
		for _, it := range doc.Nftables {
			if it.Set != nil {
				n += len(it.Set.Elem)
			}
		}
	}
	return n
}

// BenchmarkNftablesAdd100kVsNftF: the same 100k IPv4 bans loaded by Add and
// by one `nft -f` file (enforce-bench.py's nft-1stmt), alternating in the
// same namespace, so that machine load hits both alike. Reports both
// medians and their ratio (add/nft-f; < 1 means netlink is faster).
//
//	sudo go test ./e2e -run '^$' -bench 'NftablesAdd100kVsNftF' -benchtime 5x
func BenchmarkNftablesAdd100kVsNftF(b *testing.B) {
	requireRootBench(b)
	ns := benchNetns(b)
	be, err := firewall.NewNftables(firewall.Options{NetNS: ns, MaxElem: 200000})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	if err := be.Init(ctx); err != nil {
		b.Fatal(err)
	}
	bans := bulkBans(100000, 0, time.Hour)
	f, err := os.CreateTemp("", "pbxguard-bench-*.nft")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	fmt.Fprintf(f, "add element inet %s %s { ", firewall.NftTable, firewall.NftSet4)
	for i, ban := range bans {
		if i > 0 {
			f.WriteString(", ")
		}
		fmt.Fprintf(f, "%s timeout 3600s", ban.Prefix.Addr())
	}
	f.WriteString(" }\n")
	f.Close()
	var tAdd, tNft []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		flushSets(b, ns)
		t0 := time.Now()
		if err := be.Add(ctx, bans); err != nil {
			b.Fatal(err)
		}
		tAdd = append(tAdd, time.Since(t0))
		if got := countSets(b, ns); got != len(bans) {
			b.Fatalf("Add: kernel holds %d of %d", got, len(bans))
		}
		flushSets(b, ns)
		t0 = time.Now()
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", f.Name()).CombinedOutput(); err != nil {
			b.Fatalf("nft -f: %v %s", err, out)
		}
		tNft = append(tNft, time.Since(t0))
	}
	b.StopTimer()
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	ratios := make([]time.Duration, len(tAdd)) // ratio*1000 as a Duration, to reuse med
	for i := range tAdd {
		ratios[i] = time.Duration(1000 * float64(tAdd[i]) / float64(tNft[i]))
	}
	b.ReportMetric(med(tAdd).Seconds(), "add-s")
	b.ReportMetric(med(tNft).Seconds(), "nft-f-s")
	b.ReportMetric(float64(med(ratios))/1000, "add/nft-f")
}

// BenchmarkFirewallSingleBan: latency of one Add with one ban (what the
// daemon does per decision), over 1000 distinct bans (500 IPv4, 500 IPv6)
// per backend; reports p50 and p99.
//
//	sudo go test ./e2e -run '^$' -bench 'FirewallSingleBan' -benchtime 1x
func BenchmarkFirewallSingleBan(b *testing.B) {
	requireRootBench(b)
	for _, name := range []string{"nftables", "ipset", "iptables"} {
		b.Run(name, func(b *testing.B) {
			ns := benchNetns(b)
			be, err := firewall.New(name, firewall.Options{NetNS: ns})
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			ctx := context.Background()
			if err := be.Init(ctx); err != nil {
				b.Fatal(err)
			}
			defer be.Remove(ctx)
			bans := bulkBans(500, 500, time.Hour)
			var lat []time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, ban := range bans {
					t0 := time.Now()
					if err := be.Add(ctx, []firewall.Ban{ban}); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			if list, err := be.List(ctx); err != nil || len(list) != len(bans) {
				b.Fatalf("backend holds %d of %d (%v)", len(list), len(bans), err)
			}
		})
	}
}

// TestFirewallExpiryAndRestart: a second backend instance (a restarted
// daemon) sees the same entries with the same remaining times, and an entry
// with a short timeout leaves the kernel by itself.
func TestFirewallExpiryAndRestart(t *testing.T) {
	requireE2E(t, "nft", "ipset", "iptables")
	for _, bk := range fwBackends {
		t.Run(bk.name, func(t *testing.T) {
			requireE2E(t, bk.tools...)
			ns := newNetns(t, "fwx")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			opts := firewall.Options{NetNS: ns.Name, Prefixes: true}
			b1 := fwBackend(t, bk.name, opts)
			if err := b1.Init(ctx); err != nil {
				t.Fatal(err)
			}
			short := netip.MustParsePrefix("198.51.100.77/32")
			bans := []firewall.Ban{
				{Prefix: short, Timeout: 2 * time.Second},
				{Prefix: netip.MustParsePrefix("198.51.100.78/32"), Timeout: 10 * time.Minute},
				{Prefix: netip.MustParsePrefix("2001:db8:77::/64"), Timeout: 20 * time.Minute},
			}
			addedAt := time.Now()
			if err := b1.Add(ctx, bans); err != nil {
				t.Fatal(err)
			}
			b1.Close()
			b2 := fwBackend(t, bk.name, opts)
			if err := b2.Init(ctx); err != nil {
				t.Fatal(err)
			}
			defer b2.Remove(context.Background())
			list, err := b2.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := map[netip.Prefix]time.Duration{}
			for _, e := range list {
				got[e.Prefix] = e.Timeout
			}
			for _, want := range bans[1:] {
				d, ok := got[want.Prefix]
				if !ok {
					t.Fatalf("after restart, %v missing from List %v", want.Prefix, list)
				}
				if !remainingOK(d, want.Timeout, addedAt) {
					t.Errorf("after restart, %v remaining %v, want %v ±2s", want.Prefix, d, want.Timeout)
				}
			}
			// The short one leaves the kernel by itself (bounded wait).
			deadline := time.Now().Add(8 * time.Second)
			for {
				_, rem := kernelCount(t, ns, bk.name)
				if _, ok := rem[short.String()]; !ok {
					if len(rem) != 2 {
						t.Fatalf("after expiry the kernel holds %v, want the 2 long entries", rem)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%v still in the kernel 8 s after a 2 s ban", short)
				}
				time.Sleep(250 * time.Millisecond)
			}
		})
	}
}

// TestNftablesReconcile: Init repairs a damaged ruleset, follows the
// Prefixes and Forward options both ways, refuses prefixes when they are
// off, and auto-detection picks nftables.
func TestNftablesReconcile(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "fwr")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rules := func() string { return ns.Run(t, "nft", "list", "table", "inet", firewall.NftTable) }

	b := fwBackend(t, "nftables", firewall.Options{NetNS: ns.Name})
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	err := b.Add(ctx, []firewall.Ban{
		{Prefix: netip.MustParsePrefix("2001:db8:5::/64"), Timeout: time.Hour},
		{Prefix: netip.MustParsePrefix("198.51.100.5/32"), Timeout: time.Hour},
	})
	if !errors.Is(err, firewall.ErrUnsupportedPrefix) {
		t.Fatalf("a /64 without Prefixes: err = %v, want ErrUnsupportedPrefix", err)
	}
	if n, _ := kernelCount(t, ns, "nftables"); n != 1 {
		t.Fatalf("the valid entry of the batch: kernel holds %d, want 1", n)
	}
	// Someone flushes our chain: Init puts the rules back, keeps the set.
	ns.Run(t, "nft", "flush", "chain", "inet", firewall.NftTable, firewall.NftInput)
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	checkSingleHook(t, ns, "nftables")
	if n, _ := kernelCount(t, ns, "nftables"); n != 1 {
		t.Fatalf("Init lost entries: %d", n)
	}
	// Someone deletes a set (and the rule using it): Init recreates it.
	ns.Run(t, "nft", "flush", "chain", "inet", firewall.NftTable, firewall.NftInput)
	ns.Run(t, "nft", "delete", "set", "inet", firewall.NftTable, firewall.NftSet6)
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	checkSingleHook(t, ns, "nftables")

	b2 := fwBackend(t, "nftables", firewall.Options{NetNS: ns.Name, Prefixes: true, Forward: true})
	if err := b2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	out := rules()
	for _, want := range []string{"set " + firewall.NftSet6Net, "flags interval,timeout", "hook forward priority filter - 10", "@" + firewall.NftSet6Net} {
		if !strings.Contains(out, want) {
			t.Fatalf("with Prefixes+Forward, ruleset lacks %q:\n%s", want, out)
		}
	}
	if c := strings.Count(out, "@"+firewall.NftSet6Net); c != 2 {
		t.Fatalf("want the prefix rule in input and forward, found %d:\n%s", c, out)
	}
	if err := b2.Add(ctx, []firewall.Ban{{Prefix: netip.MustParsePrefix("2001:db8:5::/64"), Timeout: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if err := b2.Delete(ctx, []netip.Prefix{netip.MustParsePrefix("2001:db8:5::/64")}); err != nil {
		t.Fatal(err)
	}
	// The address added before (same hash set, kept across the switch) stays.
	if n, rem := kernelCount(t, ns, "nftables"); n != 1 || rem["198.51.100.5/32"] == 0 {
		t.Fatalf("after deleting the /64 the kernel holds %v, want only 198.51.100.5", rem)
	}
	b3 := fwBackend(t, "nftables", firewall.Options{NetNS: ns.Name})
	if err := b3.Init(ctx); err != nil {
		t.Fatal(err)
	}
	out = rules()
	if strings.Contains(out, firewall.NftSet6Net) || strings.Contains(out, "hook forward") {
		t.Fatalf("Prefixes/Forward off, yet:\n%s", out)
	}
	// Turning prefixes off kept the address sets and their entries.
	if n, rem := kernelCount(t, ns, "nftables"); n != 1 || rem["198.51.100.5/32"] == 0 {
		t.Fatalf("turning prefixes off lost entries: %v", rem)
	}
	// A new cap resizes the set in place, entries kept.
	b5 := fwBackend(t, "nftables", firewall.Options{NetNS: ns.Name, MaxElem: 2 << 20})
	if err := b5.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if out := ns.Run(t, "nft", "list", "set", "inet", firewall.NftTable, firewall.NftSet4); !strings.Contains(out, "size 2097152") || !strings.Contains(out, "198.51.100.5") {
		t.Fatalf("larger cap: set not resized in place:\n%s", out)
	}
	checkSingleHook(t, ns, "nftables")
	d, err := firewall.Detect(ctx, firewall.Options{NetNS: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() != "nftables" {
		t.Fatalf("Detect picked %s on a kernel with nftables", d.Name())
	}
	if out := ns.Run(t, "nft", "list", "tables"); strings.Contains(out, "probe") {
		t.Fatalf("Detect left its probe table:\n%s", out)
	}
}

// TestNftablesLegacyRefresh: the delete-and-add refresh used on kernels
// before 6.10 keeps every element (new and present) with the new timeout.
func TestNftablesLegacyRefresh(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "fwl")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := fwBackend(t, "nftables", firewall.Options{NetNS: ns.Name, Prefixes: true, LegacyRefresh: true})
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	first := bulkBans(1500, 1499, time.Hour)
	first = append(first, firewall.Ban{Prefix: prefix64, Timeout: time.Hour})
	firstAt := time.Now()
	if err := b.Add(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Half of the old ones again plus 1000 new, all for 2h.
	again := append([]firewall.Ban(nil), first[1500:]...)
	for i := range again {
		again[i].Timeout = 2 * time.Hour
	}
	fresh := bulkBans(2500, 0, 2*time.Hour)[1500:]
	again = append(again, fresh...)
	againAt := time.Now()
	if err := b.Add(ctx, again); err != nil {
		t.Fatal(err)
	}
	n, rem := kernelCount(t, ns, "nftables")
	if n != 4000 {
		t.Fatalf("kernel holds %d, want 4000", n)
	}
	for _, c := range []struct {
		key  string
		want float64
		at   time.Time
	}{{"100.64.0.1/32", 3600, firstAt}, {"2001:db8:1::1/128", 7200, againAt}, {prefix64.String(), 7200, againAt}, {"100.64.9.196/32", 7200, againAt}} {
		if got := rem[c.key]; !remainingOK(secs(got), secs(c.want), c.at) {
			t.Errorf("%s: %.0fs remaining, want %v ±2s", c.key, got, c.want)
		}
	}
}

// TestNftablesPartialBatch: one entry the kernel refuses (a prefix that
// overlaps a present one in the interval set) does not keep the rest of
// its batch out, and the error names it.
func TestNftablesPartialBatch(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "fwp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := fwBackend(t, "nftables", firewall.Options{NetNS: ns.Name, Prefixes: true})
	if err := b.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(ctx, []firewall.Ban{{Prefix: netip.MustParsePrefix("2001:db8:5:1::/64"), Timeout: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	batch := bulkBans(100, 100, time.Hour)
	batch = append(batch, firewall.Ban{Prefix: netip.MustParsePrefix("2001:db8:5::/48"), Timeout: time.Hour})
	err := b.Add(ctx, batch)
	n, rem := kernelCount(t, ns, "nftables")
	if err == nil {
		// This kernel merged or accepted the overlap: then all must be there.
		if n != 202 && n != 201 {
			t.Fatalf("no error, kernel holds %d", n)
		}
		t.Logf("kernel accepted an overlapping interval (holds %d)", n)
		return
	}
	if !strings.Contains(err.Error(), "2001:db8:5::/48") {
		t.Fatalf("error does not name the refused entry: %v", err)
	}
	if n != 201 || rem["100.64.0.100/32"] == 0 || rem["2001:db8:5:1::/64"] == 0 {
		t.Fatalf("after a partly refused batch the kernel holds %d (want 200 + the /64): err %v", n, err)
	}
}

// TestFirewallSetFull: more bans than the configured cap give an error that
// says what to change, and the kernel holds no more than the cap.
func TestFirewallSetFull(t *testing.T) {
	requireE2E(t, "nft", "ipset", "iptables", "ip6tables")
	for _, name := range []string{"nftables", "ipset"} {
		t.Run(name, func(t *testing.T) {
			ns := newNetns(t, "fwf")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			b := fwBackend(t, name, firewall.Options{NetNS: ns.Name, MaxElem: 100})
			if err := b.Init(ctx); err != nil {
				t.Fatal(err)
			}
			defer b.Remove(context.Background())
			err := b.Add(ctx, bulkBans(150, 0, time.Hour))
			if err == nil || !strings.Contains(err.Error(), "max_elem") {
				t.Fatalf("150 bans into a set of 100: err = %v, want one naming max_elem", err)
			}
			if n, _ := kernelCount(t, ns, name); n > 100 {
				t.Fatalf("kernel holds %d in a set capped at 100", n)
			}
		})
	}
}

// BenchmarkNftablesList: reading the sets back (what a restart reconciles
// against), 10k and 100k entries.
//
//	sudo go test ./e2e -run '^$' -bench 'NftablesList' -benchtime 3x
func BenchmarkNftablesList(b *testing.B) {
	requireRootBench(b)
	for _, n := range []int{10000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ns := benchNetns(b)
			be, err := firewall.NewNftables(firewall.Options{NetNS: ns, MaxElem: 200000})
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			ctx := context.Background()
			if err := be.Init(ctx); err != nil {
				b.Fatal(err)
			}
			if err := be.Add(ctx, bulkBans(n/2, n/2, time.Hour)); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				list, err := be.List(ctx)
				if err != nil || len(list) != n {
					b.Fatalf("List: %d of %d (%v)", len(list), n, err)
				}
			}
		})
	}
}

// TestFirewallForward: with Options.Forward the ban also holds for traffic
// the host routes on (containers, VMs): attacker -> router (pbxguard) ->
// inner service. Without Forward the banned source still gets through the
// router, which shows the forward hook is what drops it.
func TestFirewallForward(t *testing.T) {
	requireE2E(t, "nft", "ipset", "iptables")
	for _, bk := range fwBackends {
		t.Run(bk.name, func(t *testing.T) {
			requireE2E(t, bk.tools...)
			att := newNetns(t, "fatt")
			rtr := newNetns(t, "frtr")
			inner := newNetns(t, "finn")
			link(t, att, []string{"192.0.2.10/24", "192.0.2.20/24"}, rtr, []string{"192.0.2.1/24"})
			link(t, rtr, []string{"198.51.100.1/24"}, inner, []string{"198.51.100.2/24"})
			att.Run(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
			inner.Run(t, "ip", "route", "add", "192.0.2.0/24", "via", "198.51.100.1")
			rtr.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			ln := listenUDP(t, inner, "udp4", "198.51.100.2:5060")
			ban := []firewall.Ban{{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Timeout: time.Hour}}

			noFwd := fwBackend(t, bk.name, firewall.Options{NetNS: rtr.Name})
			if err := noFwd.Init(ctx); err != nil {
				t.Fatal(err)
			}
			if err := noFwd.Add(ctx, ban); err != nil {
				t.Fatal(err)
			}
			if !probeUDP(t, att, ln, "192.0.2.10", "198.51.100.2") {
				t.Fatal("without Forward, routed traffic from a banned source should pass the router (input hook only)")
			}
			noFwd.Close()

			fwd := fwBackend(t, bk.name, firewall.Options{NetNS: rtr.Name, Forward: true})
			if err := fwd.Init(ctx); err != nil {
				t.Fatal(err)
			}
			defer fwd.Remove(context.Background())
			if err := fwd.Add(ctx, ban); err != nil {
				t.Fatal(err)
			}
			if probeUDP(t, att, ln, "192.0.2.10", "198.51.100.2") {
				t.Error("with Forward, routed traffic from a banned source arrived")
			}
			if !probeUDP(t, att, ln, "192.0.2.20", "198.51.100.2") {
				t.Error("with Forward, routed traffic from an unbanned source did not arrive")
			}
			if err := fwd.Remove(ctx); err != nil {
				t.Fatal(err)
			}
			checkRemoved(t, rtr, bk.name)
			if !probeUDP(t, att, ln, "192.0.2.10", "198.51.100.2") {
				t.Error("after Remove, routed traffic from the once banned source did not arrive")
			}
		})
	}
}
