package firewall

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall/nfttest"
	"syscall"
)

func mustIPSet(t *testing.T, f *fakeCmds, o Options) *IPSet {
	t.Helper()
	s, err := NewIPSet(f.opts(o))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(context.Background()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return s
}

// TestIPSetFake: Init, Add, List, Delete, Check after `ipset flush` and
// after `ipset destroy`, Init again, Remove.
func TestIPSetFake(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	s := mustIPSet(t, f, Options{Prefixes: true, MaxElem: 100})
	if err := s.Init(ctx); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	for _, fam := range []string{"iptables", "ip6tables"} {
		in, _ := f.rules(fam, "INPUT")
		if len(in) != 1 || in[0] != "-j PBXGUARD" {
			t.Fatalf("%s INPUT: %v", fam, in)
		}
	}
	bans := []Ban{
		{netip.MustParsePrefix("192.0.2.1/32"), 90 * time.Second},
		{netip.MustParsePrefix("2001:db8::/64"), time.Hour},
		{netip.MustParsePrefix("2001:db8:1::1/128"), 1500 * time.Millisecond},
	}
	if err := s.Add(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if got := f.set(IPSet4); got["192.0.2.1"] != 90 {
		t.Fatalf("pbxguard4: %v", got)
	}
	if got := f.set(IPSet6); got["2001:db8::/64"] != 3600 || got["2001:db8:1::1"] != 2 {
		t.Fatalf("pbxguard6 (timeouts rounded up): %v", got)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("List: %v %v", list, err)
	}
	h, err := s.Check(ctx)
	if err != nil || !h.Intact() || h.Entries != 3 {
		t.Fatalf("Check: %+v %v", h, err)
	}
	if err := s.Delete(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("203.0.113.9/32")}); err != nil {
		t.Fatal(err)
	}
	if got := f.set(IPSet4); len(got) != 0 {
		t.Fatalf("after Delete: %v", got)
	}
	// ipset flush: still intact, but the count gives it away.
	if err := f.run("ipset", "flush", IPSet6); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Check(ctx); err != nil || !h.Intact() || h.Entries != 0 {
		t.Fatalf("after flush: %+v %v", h, err)
	}
	// Chain and sets destroyed.
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, c := range [][]string{{"-D", "INPUT", "-j", IPTChain}, {"-F", IPTChain}, {"-X", IPTChain}} {
			if err := f.run(fam, c...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := f.run("ipset", "destroy", IPSet4); err != nil {
		t.Fatal(err)
	}
	h, err = s.Check(ctx)
	if err != nil || h.Intact() || !strings.Contains(strings.Join(h.Missing, ";"), "ipset pbxguard4") || !strings.Contains(strings.Join(h.Missing, ";"), "chain PBXGUARD (ip6tables)") {
		t.Fatalf("after destroy: %+v %v", h, err)
	}
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Check(ctx); err != nil || !h.Intact() {
		t.Fatalf("after Init: %+v %v", h, err)
	}
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if f.set(IPSet4) != nil || f.set(IPSet6) != nil {
		t.Fatal("sets left after Remove")
	}
	if _, ok := f.rules("iptables", IPTChain); ok {
		t.Fatal("chain left after Remove")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestIPSetOtherSettings (issue 16): sets made with other settings
// (prefixes or max_elem changed) no longer stop the start: they are
// replaced, and the rule points at the new ones.
func TestIPSetOtherSettings(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	old := mustIPSet(t, f, Options{MaxElem: 65536})
	if err := old.Add(ctx, []Ban{{netip.MustParsePrefix("192.0.2.1/32"), time.Hour}}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s, err := NewIPSet(f.opts(Options{Prefixes: true, MaxElem: 200000, Logger: slog.New(slog.NewTextHandler(&logs, nil))}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Init(ctx); err != nil {
		t.Fatalf("Init over sets made with other settings: %v", err)
	}
	if !strings.Contains(logs.String(), "other settings") {
		t.Fatalf("replacement not logged: %s", logs.String())
	}
	f.mu.Lock()
	set4 := *f.sets[IPSet4]
	nsets := len(f.sets)
	f.mu.Unlock()
	if set4.typ != "hash:net" || set4.maxelem != 200000 || nsets != 2 {
		t.Fatalf("set after Init: %+v, %d sets", set4, nsets)
	}
	rules, _ := f.rules("iptables", IPTChain)
	if len(rules) != 1 || !strings.Contains(rules[0], "--match-set "+IPSet4+" ") {
		t.Fatalf("chain after replacement: %v", rules)
	}
	if h, err := s.Check(ctx); err != nil || !h.Intact() {
		t.Fatalf("Check after replacement: %+v %v", h, err)
	}
	// The old settings are now "other settings" for Check.
	if h, err := old.Check(ctx); err != nil || h.Intact() || !strings.Contains(h.Missing[0], "maxelem") {
		t.Fatalf("Check with the old settings: %+v %v", h, err)
	}
}

// TestIPSetErrors: a full set says what to raise; missing tools say what
// to install; a failing ipset is an error of Check, not "missing".
func TestIPSetErrors(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	s := mustIPSet(t, f, Options{MaxElem: 2})
	var bans []Ban
	for i := 1; i <= 3; i++ {
		bans = append(bans, Ban{netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), time.Hour})
	}
	if err := s.Add(ctx, bans); err == nil || !strings.Contains(err.Error(), "max_elem") {
		t.Fatalf("full: %v", err)
	}
	if err := s.Add(ctx, []Ban{{netip.MustParsePrefix("2001:db8::/64"), time.Hour}}); !errors.Is(err, ErrUnsupportedPrefix) {
		t.Fatalf("prefix without Prefixes: %v", err)
	}
	f.fail["ipset"] = errors.New("exit status 1: Kernel error received: Operation not permitted")
	if _, err := s.Check(ctx); err == nil {
		t.Fatal("Check hides a failing ipset")
	}
	if _, err := s.List(ctx); err == nil {
		t.Fatal("List hides a failing ipset")
	}
	if err := s.Delete(ctx, []netip.Prefix{bans[0].Prefix}); err == nil {
		t.Fatal("Delete hides a failing ipset")
	}
}

func mustIPTables(t *testing.T, f *fakeCmds, o Options) *IPTables {
	t.Helper()
	ipt, err := NewIPTables(f.opts(o))
	if err != nil {
		t.Fatal(err)
	}
	if err := ipt.Init(context.Background()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	t.Cleanup(func() { ipt.Close() })
	return ipt
}

// TestIPTablesFake: Init, Add, Check after `iptables -F PBXGUARD` and after
// the jump was deleted, Init and Add again, Remove.
func TestIPTablesFake(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	ipt := mustIPTables(t, f, Options{Forward: true})
	bans := []Ban{{netip.MustParsePrefix("192.0.2.1/32"), time.Hour}, {netip.MustParsePrefix("2001:db8::1/128"), time.Hour}}
	if err := ipt.Add(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if h, err := ipt.Check(ctx); err != nil || !h.Intact() || h.Entries != 2 {
		t.Fatalf("Check: %+v %v", h, err)
	}
	if err := f.run("iptables", "-w", "-F", IPTChain); err != nil {
		t.Fatal(err)
	}
	h, err := ipt.Check(ctx)
	if err != nil || h.Intact() || !strings.Contains(h.Missing[0], "1 of 1 ban rules") {
		t.Fatalf("after -F: %+v %v", h, err)
	}
	if err := f.run("ip6tables", "-w", "-D", "FORWARD", "-j", IPTChain); err != nil {
		t.Fatal(err)
	}
	h, _ = ipt.Check(ctx)
	if !strings.Contains(strings.Join(h.Missing, ";"), "jump FORWARD -> PBXGUARD (ip6tables)") {
		t.Fatalf("jump gone: %+v", h)
	}
	if err := ipt.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Add(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if h, err := ipt.Check(ctx); err != nil || !h.Intact() || h.Entries != 2 {
		t.Fatalf("healed: %+v %v", h, err)
	}
	list, err := ipt.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List: %v %v", list, err)
	}
	if err := ipt.Delete(ctx, []netip.Prefix{bans[0].Prefix}); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.rules("iptables", IPTChain); ok {
		t.Fatal("chain left after Remove")
	}
}

// TestIPTablesEndStable (issue 16): the same end of a ban gives the same
// rule whenever it is written (it moved 1 s later per restart).
func TestIPTablesEndStable(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	ipt := mustIPTables(t, f, Options{})
	end := time.Unix(1_800_000_000, 400_000_000)
	p := netip.MustParsePrefix("192.0.2.1/32")
	var first []string
	for i, now := range []time.Time{end.Add(-time.Hour - 300*time.Millisecond), end.Add(-30*time.Minute - 800*time.Millisecond), end.Add(-10*time.Second + 100*time.Millisecond)} {
		ipt.now = func() time.Time { return now }
		if err := ipt.Add(ctx, []Ban{{p, end.Sub(now)}}); err != nil {
			t.Fatal(err)
		}
		rules, _ := f.rules("iptables", IPTChain)
		if len(rules) != 1 || !strings.Contains(rules[0], "until=1800000001") {
			t.Fatalf("restart %d: rules %v, want the end rounded up to 1800000001", i, rules)
		}
		if i == 0 {
			first = rules
		} else if rules[0] != first[0] {
			t.Fatalf("restart %d moved the end: %v -> %v", i, first, rules)
		}
	}
}

// TestIPTablesCap (issue 16): past the cap new bans are refused with
// ErrTooManyRules, with one warning about the per-packet cost.
func TestIPTablesCap(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	var logs bytes.Buffer
	ipt := mustIPTables(t, f, Options{MaxElem: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	var bans []Ban
	for i := 1; i <= 5; i++ {
		bans = append(bans, Ban{netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), time.Hour})
	}
	err := ipt.Add(ctx, bans)
	if !errors.Is(err, ErrTooManyRules) || !strings.Contains(err.Error(), "2 bans refused") {
		t.Fatalf("past the cap: %v", err)
	}
	if rules, _ := f.rules("iptables", IPTChain); len(rules) != 3 {
		t.Fatalf("%d rules, want the cap 3", len(rules))
	}
	// A refresh of a present ban is not a new rule.
	present, err := ipt.List(ctx)
	if err != nil || len(present) != 3 {
		t.Fatalf("List: %v %v", present, err)
	}
	if err := ipt.Add(ctx, present); err != nil {
		t.Fatalf("refresh at the cap: %v", err)
	}
	if IPTablesMaxRules != 10000 {
		t.Fatalf("documented cap is 10,000, got %d", IPTablesMaxRules)
	}
}

// TestRemoveAll: firewall remove's helper removes every backend's objects.
func TestRemoveAll(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	k := nfttest.New()
	o := f.opts(Options{NetlinkDial: k.Dial})
	n, err := NewNftables(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	n.Close()
	mustIPSet(t, f, Options{})
	removed, err := RemoveAll(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(removed, "; ")
	for _, w := range []string{"table inet pbxguard", "ipset pbxguard4", "ipset pbxguard6", "iptables chain PBXGUARD", "ip6tables chain PBXGUARD"} {
		if !strings.Contains(got, w) {
			t.Fatalf("RemoveAll removed %q, missing %q", got, w)
		}
	}
	if len(k.Tables()) != 0 || f.set(IPSet4) != nil {
		t.Fatalf("left: tables %v", k.Tables())
	}
	if removed, err := RemoveAll(ctx, o); err != nil || len(removed) != 0 {
		t.Fatalf("second RemoveAll: %v %v", removed, err)
	}
}

// TestDetectOrder: auto prefers nftables, then ipset, then iptables.
func TestDetectOrder(t *testing.T) {
	ctx := context.Background()
	f := newFakeCmds()
	k := nfttest.New()
	b, err := Detect(ctx, f.opts(Options{NetlinkDial: k.Dial}))
	if err != nil || b.Name() != "nftables" {
		t.Fatalf("nftables works: %v %v", b, err)
	}
	b.Close()
	k.Refuse = func(uint16, string) syscall.Errno { return syscall.EPERM }
	if b, err = Detect(ctx, f.opts(Options{NetlinkDial: k.Dial})); err != nil || b.Name() != "ipset" {
		t.Fatalf("nftables refused: %v %v", b, err)
	}
	f.fail["ipset"] = errors.New("ipset: kernel module missing")
	if b, err = Detect(ctx, f.opts(Options{NetlinkDial: k.Dial})); err != nil || b.Name() != "iptables" {
		t.Fatalf("nftables and ipset fail: %v %v", b, err)
	}
	f.fail["iptables"] = errors.New("iptables: no")
	if b, err = Detect(ctx, f.opts(Options{NetlinkDial: k.Dial})); err != nil || b.Name() != "dry-run" {
		t.Fatalf("nothing works: %v %v", b, err)
	}
}
