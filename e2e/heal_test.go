package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/firewall"
)

// kernelHolds returns the prefixes the kernel holds for backend, read with
// the kernel's own tools; a missing table, set or chain reads as empty
// (never fatal: the test flushes them on purpose).
func kernelHolds(ns *Netns, backend string) map[string]bool {
	got := map[string]bool{}
	switch backend {
	case "nftables":
		for _, set := range []string{firewall.NftSet4, firewall.NftSet6, firewall.NftSet4Net, firewall.NftSet6Net} {
			out, err := ns.Try("nft", "-j", "list", "set", "inet", firewall.NftTable, set)
			if err != nil {
				continue
			}
			var doc struct {
				Nftables []struct {
					Set *struct {
						Elem []struct {
							Elem struct {
								Val json.RawMessage `json:"val"`
							} `json:"elem"`
						} `json:"elem"`
					} `json:"set"`
				} `json:"nftables"`
			}
			if json.Unmarshal([]byte(out), &doc) != nil {
				continue
			}
			for _, it := range doc.Nftables {
				if it.Set == nil {
					continue
				}
				for _, e := range it.Set.Elem {
					var s string
					if json.Unmarshal(e.Elem.Val, &s) == nil {
						got[canon(s)] = true
						continue
					}
					var p struct {
						Prefix struct {
							Addr string `json:"addr"`
							Len  int    `json:"len"`
						} `json:"prefix"`
					}
					if json.Unmarshal(e.Elem.Val, &p) == nil && p.Prefix.Addr != "" {
						got[canon(fmt.Sprintf("%s/%d", p.Prefix.Addr, p.Prefix.Len))] = true
					}
				}
			}
		}
	case "ipset":
		for _, set := range []string{firewall.IPSet4, firewall.IPSet6} {
			out, err := ns.Try("ipset", "list", set)
			if err != nil {
				continue
			}
			_, members, _ := strings.Cut(out, "Members:\n")
			for _, line := range strings.Split(members, "\n") {
				if f := strings.Fields(line); len(f) > 0 {
					got[canon(f[0])] = true
				}
			}
		}
	case "iptables":
		re := regexp.MustCompile(`^-A ` + firewall.IPTChain + ` -s (\S+) .*-j DROP`)
		for _, cmd := range []string{"iptables-save", "ip6tables-save"} {
			out, _ := ns.Try(cmd, "-t", "filter")
			for _, line := range strings.Split(out, "\n") {
				if m := re.FindStringSubmatch(line); m != nil {
					got[canon(m[1])] = true
				}
			}
		}
	}
	return got
}

// jumpsPresent reports whether INPUT jumps to PBXGUARD in both families.
func jumpsPresent(ns *Netns) bool {
	for _, cmd := range []string{"iptables", "ip6tables"} {
		if _, err := ns.Try(cmd, "-w", "-C", "INPUT", "-j", firewall.IPTChain); err != nil {
			return false
		}
	}
	return true
}

// TestHealAfterFlush (issue 9 point 1, issue 16): a daemon with active bans
// on each backend; somebody flushes the kernel state (nft flush ruleset;
// ipset flush, then ipset destroy with the chain; iptables -F PBXGUARD and
// the jump deleted). Every ban comes back into the kernel by itself, and
// status says it was lost and is in sync again. The time to heal is
// measured and logged (target: 2 s; asserted only within 10 s).
func TestHealAfterFlush(t *testing.T) {
	for _, b := range fwBackends {
		t.Run(b.name, func(t *testing.T) {
			requireE2E(t, b.tools...)
			testHealAfterFlush(t, b.name)
		})
	}
}

func testHealAfterFlush(t *testing.T, backend string) {
	ns := newNetns(t, "heal")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: backend, metrics: "127.0.0.1:9469"})
	d := startDaemon(t, ns, dir, cfg)
	c := daemon.NewClient(d.sock)
	want := map[string]bool{}
	for i := 1; i <= 30; i++ {
		want[fmt.Sprintf("203.0.113.%d/32", i)] = true
	}
	for i := 1; i <= 10; i++ {
		want[fmt.Sprintf("2001:db8:99::%x/128", i)] = true
	}
	for p := range want {
		if _, err := c.Ban(context.Background(), netip.MustParsePrefix(p), time.Hour, "", "heal test"); err != nil {
			t.Fatalf("ban %s: %v", p, err)
		}
	}
	if got := kernelHolds(ns, backend); len(got) != len(want) {
		t.Fatalf("kernel holds %d of %d before the flush", len(got), len(want))
	}
	if st := d.status(); !st.Kernel.Checked || !st.Kernel.InSync {
		t.Fatalf("status before the flush: %+v", st.Kernel)
	}

	flushes := map[string][][][]string{
		"nftables": {{{"nft", "flush", "ruleset"}}},
		"ipset": {
			{{"ipset", "flush", firewall.IPSet4}, {"ipset", "flush", firewall.IPSet6}},
			{
				{"iptables", "-w", "-D", "INPUT", "-j", firewall.IPTChain}, {"iptables", "-w", "-F", firewall.IPTChain}, {"iptables", "-w", "-X", firewall.IPTChain},
				{"ip6tables", "-w", "-D", "INPUT", "-j", firewall.IPTChain}, {"ip6tables", "-w", "-F", firewall.IPTChain}, {"ip6tables", "-w", "-X", firewall.IPTChain},
				{"ipset", "destroy", firewall.IPSet4}, {"ipset", "destroy", firewall.IPSet6},
			},
		},
		"iptables": {{
			{"iptables", "-w", "-F", firewall.IPTChain}, {"iptables", "-w", "-D", "INPUT", "-j", firewall.IPTChain},
			{"ip6tables", "-w", "-F", firewall.IPTChain}, {"ip6tables", "-w", "-D", "INPUT", "-j", firewall.IPTChain},
		}},
	}[backend]
	for round, cmds := range flushes {
		heals := d.status().Kernel.Heals
		start := time.Now()
		for _, cmd := range cmds {
			ns.Run(t, cmd[0], cmd[1:]...)
		}
		// No look at the kernel here: the daemon may have healed it
		// already. Its status below says the loss was seen.
		sawOut := false
		var took time.Duration
		for {
			if st := d.status(); !st.Kernel.InSync {
				sawOut = true
			}
			got := kernelHolds(ns, backend)
			if len(got) == len(want) && (backend == "nftables" || jumpsPresent(ns)) {
				took = time.Since(start)
				for p := range want {
					if !got[p] {
						t.Fatalf("round %d: %s not back", round, p)
					}
				}
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("round %d: after 10 s the kernel holds %d of %d bans (jumps %v)\n%s",
					round, len(got), len(want), jumpsPresent(ns), tail(d.out.String(), 30))
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s round %d (%s): every ban (%d) back in the kernel %v after the flush (target 2 s)",
			backend, round, cmds[0][0]+" "+strings.Join(cmds[0][1:], " "), len(want), took.Round(time.Millisecond))
		var st daemon.Status
		deadline := time.Now().Add(5 * time.Second)
		for st = d.status(); (!st.Kernel.InSync || st.Kernel.Heals <= heals) && time.Now().Before(deadline); st = d.status() {
			time.Sleep(20 * time.Millisecond)
		}
		k := st.Kernel
		// A heal can come between two of a round's commands: at least one.
		if !k.InSync || k.Heals < heals+1 || k.LastLoss.Before(start) || len(k.LastMissing) == 0 || k.LastHeal.Before(k.LastLoss) {
			t.Fatalf("round %d: status after the heal: %+v", round, k)
		}
		t.Logf("status: lost at +%v (%s), healed at +%v, out-of-sync seen by polling: %v",
			k.LastLoss.Sub(start).Round(time.Millisecond), strings.Join(k.LastMissing, "; "), k.LastHeal.Sub(start).Round(time.Millisecond), sawOut)
	}
	if bans := d.bans(); len(bans) != len(want) {
		t.Fatalf("bans after healing: %d, want %d", len(bans), len(want))
	}
	m := fetchMetrics(t, ns, "http://127.0.0.1:9469/metrics")
	for _, w := range []string{"pbxguard_kernel_in_sync 1\n", "pbxguard_kernel_out_of_sync_since_seconds 0\n", fmt.Sprintf("pbxguard_kernel_heals_total %d\n", d.status().Kernel.Heals)} {
		if !strings.Contains(m, w) {
			t.Fatalf("/metrics lacks %q:\n%s", w, m)
		}
	}
	if n, heals := strings.Count(d.out.String(), "kernel lost pbxguard's state"), d.status().Kernel.Heals; uint64(n) != heals || n < len(flushes) {
		t.Errorf("'kernel lost' logged %d times for %d heals, %d flushes", n, heals, len(flushes))
	}
}

// TestHealManualBanAfterFlush: `pbxguard ban` right after `nft flush
// ruleset` (before the periodic check) works, and the older bans are back.
func TestHealManualBanAfterFlush(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "healban")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{})
	d := startDaemon(t, ns, dir, cfg)
	if out, code := d.cli("ban", "203.0.113.7"); code != 0 {
		t.Fatalf("ban: %d %s", code, out)
	}
	ns.Run(t, "nft", "flush", "ruleset")
	out, code := d.cli("ban", "203.0.113.8")
	if code != 0 || strings.Contains(out, "no such file") {
		t.Fatalf("ban after the flush: exit %d: %s", code, out)
	}
	got := kernelHolds(ns, "nftables")
	if !got["203.0.113.7/32"] || !got["203.0.113.8/32"] {
		t.Fatalf("kernel after ban: %v", got)
	}
}

// TestOverlappingPrefixesRestart (issue 16): a manual /48, then a jail /64
// inside it: never fatal; the daemon restarts (it exited 3 "restoring N
// bans: file exists"); a /48 over a /64 works too, and when the /48 goes
// the /64 is back in the kernel.
func TestOverlappingPrefixesRestart(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "overlap")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{maxretry: 1, jail: "    ipv6_prefix: 64"})
	d := startDaemon(t, ns, dir, cfg)
	if out, code := d.cli("ban", "2001:db8:5::/48", "--for", "2h"); code != 0 {
		t.Fatalf("ban /48: %d %s", code, out)
	}
	stamp := time.Now().Format("Jan _2 15:04:05")
	appendLines(t, filepath.Join(dir, "messages.log"), fmt.Sprintf("[%s] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"1000\" <sip:1000@192.0.2.1>' failed for '[2001:db8:5:1::66]:5060' (callid: 1) - No matching endpoint found", stamp))
	d.waitBans("the jail's /64", 10*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "2001:db8:5:1::/64") })
	if got := kernelHolds(ns, "nftables"); !got["2001:db8:5::/48"] {
		t.Fatalf("kernel: %v", got)
	}
	d.stop()
	d2 := startDaemon(t, ns, dir, cfg)
	if b := d2.bans(); !hasBan(b, "2001:db8:5::/48") || !hasBan(b, "2001:db8:5:1::/64") {
		t.Fatalf("bans after restart: %+v", b)
	}
	// Wider over narrower: a /64 first, then a shorter /48 holding it.
	if out, code := d2.cli("ban", "2001:db8:7:1::/64", "--for", "1h"); code != 0 {
		t.Fatalf("ban /64: %d %s", code, out)
	}
	if out, code := d2.cli("ban", "2001:db8:7::/48", "--for", "3s"); code != 0 {
		t.Fatalf("ban /48 over a /64: %d %s", code, out)
	}
	got := kernelHolds(ns, "nftables")
	if !got["2001:db8:7::/48"] || got["2001:db8:7:1::/64"] {
		t.Fatalf("kernel after /48 over /64: %v", got)
	}
	// The /64 outlasts the /48: when the /48 ends, the /64 is back.
	deadline := time.Now().Add(15 * time.Second)
	for got = kernelHolds(ns, "nftables"); !got["2001:db8:7:1::/64"] || got["2001:db8:7::/48"]; got = kernelHolds(ns, "nftables") {
		if time.Now().After(deadline) {
			t.Fatalf("15 s after the /48's end the kernel holds %v\n%s", got, tail(d2.out.String(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	d2.stop()
	d3 := startDaemon(t, ns, dir, cfg)
	if st := d3.status(); !st.Kernel.InSync {
		t.Fatalf("third start: %+v", st.Kernel)
	}
}

// TestFirewallRemoveEveryBackend (issue 16): `pbxguard firewall remove`
// removes what each backend made: ipsets, iptables chains and jumps (it
// removed only the nftables table and claimed the bans were gone).
func TestFirewallRemoveEveryBackend(t *testing.T) {
	for _, b := range fwBackends {
		t.Run(b.name, func(t *testing.T) {
			requireE2E(t, b.tools...)
			ns := newNetns(t, "rm")
			dir := t.TempDir()
			cfg := writeDaemonConfig(t, dir, daemonConfig{backend: b.name})
			d := startDaemon(t, ns, dir, cfg)
			if out, code := d.cli("ban", "203.0.113.5"); code != 0 {
				t.Fatalf("ban: %d %s", code, out)
			}
			d.stop()
			out, err := exec.Command(pbxguardBin, "firewall", "remove", "--netns", ns.Name, "--state-dir", filepath.Join(dir, "state"), "--config", cfg).CombinedOutput()
			if err != nil {
				t.Fatalf("firewall remove: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "is gone") {
				t.Fatalf("firewall remove says nothing was removed:\n%s", out)
			}
			if got := kernelHolds(ns, b.name); len(got) != 0 {
				t.Fatalf("after remove the kernel holds %v", got)
			}
			checkRemoved(t, ns, b.name)
			t.Logf("%s: %s", b.name, strings.TrimSpace(string(out)))
		})
	}
}

// TestIPSetSettingsChanged (issue 16): ipsets made with other settings
// (here: prefix bans turned on, ipv6_prefix 128 -> 64: hash:ip ->
// hash:net) do not stop the
// start; the sets are replaced and every ban is back in the new ones.
func TestIPSetSettingsChanged(t *testing.T) {
	requireE2E(t, "ipset", "iptables", "ip6tables")
	ns := newNetns(t, "ipsetcfg")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: "ipset", jail: "    ipv6_prefix: 128"})
	d := startDaemon(t, ns, dir, cfg)
	for _, a := range []string{"203.0.113.5", "2001:db8:9::5"} {
		if out, code := d.cli("ban", a); code != 0 {
			t.Fatalf("ban %s: %d %s", a, code, out)
		}
	}
	d.stop()
	if out := ns.Run(t, "ipset", "list", "-t", firewall.IPSet6); !strings.Contains(out, "hash:ip\n") {
		t.Fatalf("first run's set:\n%s", out)
	}
	cfg = writeDaemonConfig(t, dir, daemonConfig{backend: "ipset", jail: "    ipv6_prefix: 64"})
	d2 := startDaemon(t, ns, dir, cfg)
	if out := ns.Run(t, "ipset", "list", "-t", firewall.IPSet6); !strings.Contains(out, "hash:net") {
		t.Fatalf("set not replaced:\n%s", out)
	}
	got := kernelHolds(ns, "ipset")
	if !got["203.0.113.5/32"] || !got["2001:db8:9::5/128"] {
		t.Fatalf("bans after the sets were replaced: %v", got)
	}
	if out, code := d2.cli("ban", "2001:db8:a::/64"); code != 0 {
		t.Fatalf("prefix ban in the new set: %d %s", code, out)
	}
	if out, _ := ns.Try("ipset", "list", "-n"); strings.Count(out, "pbxguard") != 2 {
		t.Fatalf("sets after the replacement: %s", out)
	}
	if st := d2.status(); !st.Kernel.InSync {
		t.Fatalf("status: %+v", st.Kernel)
	}
}

// BenchmarkKernelCheck: what the daemon's once-a-second check costs, per
// backend, with 0 and 1,000 bans in the kernel (nftables and ipset do
// not list elements; iptables lists its chain).
//
//	sudo go test ./e2e -run '^$' -bench 'KernelCheck' -benchtime 20x
func BenchmarkKernelCheck(b *testing.B) {
	requireRootBench(b)
	for _, be := range fwBackends {
		for _, n := range []int{0, 1000} {
			b.Run(fmt.Sprintf("%s/%d", be.name, n), func(b *testing.B) {
				ns := benchNetns(b)
				fw := fwBackend(b, be.name, firewall.Options{NetNS: ns})
				ctx := context.Background()
				if err := fw.Init(ctx); err != nil {
					b.Fatal(err)
				}
				if n > 0 {
					if err := fw.Add(ctx, bulkBans(n, 0, time.Hour)); err != nil {
						b.Fatal(err)
					}
				}
				chk, ok := firewall.AsChecker(fw)
				if !ok {
					b.Fatal("not a Checker")
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					h, err := chk.Check(ctx)
					if err != nil || !h.Intact() {
						b.Fatalf("%+v %v", h, err)
					}
				}
			})
		}
	}
}
