package e2e

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// bansDaemon is a daemon (not running: Ban works without Run) on a real
// backend inside ns.
func bansDaemon(t *testing.T, ns *Netns, backend string) (*daemon.Daemon, firewall.Backend) {
	t.Helper()
	b := fwBackend(t, backend, firewall.Options{NetNS: ns.Name, Prefixes: true})
	if err := b.Init(context.Background()); err != nil {
		t.Fatalf("%s Init: %v", backend, err)
	}
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d, err := daemon.New(daemon.Options{Store: st, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	return d, b
}

// listed is what the backend's List says of p (the kernel's own listing
// for nftables and ipset; the rules' stored ends for iptables).
func listed(t *testing.T, b firewall.Backend, p string) (time.Duration, bool) {
	t.Helper()
	l, err := b.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l {
		if e.Prefix == netip.MustParsePrefix(p) {
			return e.Timeout, true
		}
	}
	return 0, false
}

// TestBansKernelNeverShortens: in the kernel, a 1 h ban after a 24 h one
// leaves the 24 h timeout; a longer one extends it; a permanent one
// removes the timeout (a timed element becomes permanent), and a later
// timed ban leaves it permanent. nftables and ipset are read back with
// their own tools; iptables through its rules.
func TestBansKernelNeverShortens(t *testing.T) {
	requireE2E(t, "nft", "ipset", "iptables")
	for _, backend := range []string{"nftables", "ipset", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			ns := newNetns(t, "bans")
			d, b := bansDaemon(t, ns, backend)
			ctx := context.Background()
			ban := func(p string, dur time.Duration, jail string) daemon.BanInfo {
				t.Helper()
				bi, err := d.Ban(ctx, netip.MustParsePrefix(p), dur, jail, "")
				if err != nil {
					t.Fatalf("ban %s for %v: %v", p, dur, err)
				}
				return bi
			}
			const ip = "203.0.113.7/32"
			ban(ip, 24*time.Hour, "fraud")
			ban(ip, time.Hour, "manual")
			_, rem := kernelCount(t, ns, backend)
			switch backend {
			case "nftables", "ipset":
				if got := rem[ip]; got < 23*3600 {
					t.Fatalf("kernel timeout of %s after a 1h ban over a 24h one: %.0fs, want ~86400", ip, got)
				}
			}
			if left, ok := listed(t, b, ip); !ok || left < 23*time.Hour {
				t.Fatalf("List: %s %v (present %v), want ~24h", ip, left, ok)
			}
			ban(ip, 48*time.Hour, "manual")
			if _, rem = kernelCount(t, ns, backend); backend != "iptables" && rem[ip] < 47*3600 {
				t.Fatalf("kernel timeout after a 48h ban: %.0fs", rem[ip])
			}
			// Permanent over a timed element, then a timed ban again.
			if bi := ban(ip, store.Permanent, "manual"); !bi.Permanent {
				t.Fatalf("answer = %+v", bi)
			}
			if bi := ban(ip, time.Hour, "manual"); !bi.Kept || !bi.Permanent {
				t.Fatalf("1h ban over a permanent one: %+v", bi)
			}
			// A permanent IPv6 /64 (interval set on nftables).
			const p6 = "2001:db8:77::/64"
			ban(p6, store.Permanent, "manual")
			checkPermanent(t, ns, backend, b, ip)
			checkPermanent(t, ns, backend, b, p6)
			// Unban is the one way down.
			if _, err := d.Unban(ctx, netip.MustParsePrefix(ip)); err != nil {
				t.Fatal(err)
			}
			if _, ok := listed(t, b, ip); ok {
				t.Fatal("unban left the permanent entry")
			}
		})
	}
}

// checkPermanent: the kernel entry of p has no timeout, and List says
// Permanent.
func checkPermanent(t *testing.T, ns *Netns, backend string, b firewall.Backend, p string) {
	t.Helper()
	switch backend {
	case "nftables":
		set := firewall.NftSet4
		if strings.Contains(p, ":") {
			set = firewall.NftSet6Net
		}
		out := ns.Run(t, "nft", "list", "set", "inet", firewall.NftTable, set)
		addr := strings.TrimSuffix(p, "/32")
		i := strings.Index(out, addr)
		if i < 0 {
			t.Fatalf("nft set %s lacks %s:\n%s", set, addr, out)
		}
		elem := out[i:]
		if j := strings.IndexAny(elem, ",}"); j >= 0 {
			elem = elem[:j]
		}
		if strings.Contains(elem, "expires") || strings.Contains(elem, "timeout") {
			t.Fatalf("nft element %q has a timeout; want none (permanent)", elem)
		}
	case "ipset":
		set, entry := firewall.IPSet4, strings.TrimSuffix(p, "/32")
		if strings.Contains(p, ":") {
			set, entry = firewall.IPSet6, p
		}
		out := ns.Run(t, "ipset", "list", set)
		if !strings.Contains(out, entry+" timeout 0") {
			t.Fatalf("ipset %s: want %q (timeout 0 = permanent):\n%s", set, entry+" timeout 0", out)
		}
	case "iptables":
		cmd := "iptables-save"
		if strings.Contains(p, ":") {
			cmd = "ip6tables-save"
		}
		if out := ns.Run(t, cmd, "-t", "filter"); !strings.Contains(out, "until=253402300799") {
			t.Fatalf("%s: no rule with the permanent end:\n%s", cmd, out)
		}
	}
	if left, ok := listed(t, b, p); !ok || left != firewall.Permanent {
		t.Fatalf("List: %s %v (present %v), want firewall.Permanent", p, left, ok)
	}
}

// TestBansTrunkNotRateLimited: a trunk that pjsip.conf identifies (and the
// daemon allowlists) is in the applied policy's SIP trusted set: 600
// datagrams at 1 ms reach Asterisk's port, where an unlisted source is cut
// at the 20/s burst 40 limit.
func TestBansTrunkNotRateLimited(t *testing.T) {
	requireE2E(t, "nft")
	l := newPolicyLab(t)
	dir := t.TempDir()
	etc := filepath.Join(dir, "asterisk")
	os.MkdirAll(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "pjsip.conf"), []byte("[carrier]\ntype = identify\nendpoint = carrier\nmatch = "+policyLabLegit+"\n"), 0o644)
	cfg := filepath.Join(dir, "pbxguard.yaml")
	body := "allowlist: [127.0.0.0/8, \"::1\"]\nstate_dir: " + dir + "/state\naudit: {asterisk_dir: " + etc + "}\n" +
		"jails:\n  asterisk:\n    files: [" + dir + "/messages]\nfirewall:\n  backend: nftables\n  policy:\n"
	for _, line := range strings.Split(strings.Trim(policyLabPolicy, "\n"), "\n") {
		body += "    " + line + "\n"
	}
	os.WriteFile(cfg, []byte(body), 0o644)
	out, code := l.pbxguard("firewall", "plan", "--config", cfg, "--no-diff")
	if code != 0 || !strings.Contains(out, policyLabLegit+"/32: "+etc+"/pjsip.conf:4 [carrier] pjsip identify") {
		t.Fatalf("plan (exit %d) does not show the trunk's origin:\n%s", code, out)
	}
	l.apply(t, cfg, true)
	options := []byte("OPTIONS sip:100@" + policyLabPBXLegit + " SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-1\r\nContent-Length: 0\r\n\r\n")
	const n = 600
	var wg sync.WaitGroup
	var terr, aerr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		terr = policySendUDP(l.legit, policyLabPBXLegit+":5060", n, time.Millisecond, options)
	}()
	go func() {
		defer wg.Done()
		aerr = policySendUDP(l.attacker, policyLabPBXAttacker+":5060", n, time.Millisecond, options)
	}()
	wg.Wait()
	if terr != nil || aerr != nil {
		t.Fatal(terr, aerr)
	}
	time.Sleep(200 * time.Millisecond)
	trunk, other := l.received(policyLabLegit), l.received(policyLabAttacker)
	if trunk != n {
		t.Errorf("trunk: %d of %d datagrams delivered, want all", trunk, n)
	}
	if other >= n/2 {
		t.Errorf("unlisted source: %d of %d delivered, want it rate-limited", other, n)
	}
	live := l.show(t)
	if got := l.packets(t, live, "sip-trusted-udp4"); got < n {
		t.Errorf("sip-trusted-udp4 accepted %d packets, want >= %d", got, n)
	}
	t.Logf("trunk: %d/%d delivered; unlisted source: %d/%d", trunk, n, other, n)
}
