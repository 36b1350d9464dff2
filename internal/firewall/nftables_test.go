package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall/nfttest"
	"golang.org/x/sys/unix"
)

// fakeNft is the nftables backend on the fake netlink kernel.
func fakeNft(t *testing.T, opts Options) (*Nftables, *nfttest.Kernel) {
	t.Helper()
	k := nfttest.New()
	opts.NetlinkDial = k.Dial
	n, err := NewNftables(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if err := n.Init(context.Background()); err != nil {
		t.Fatalf("Init: %v", err)
	}
	return n, k
}

func elemKeys(els []nfttest.Elem) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, e := range els {
		if e.End.IsValid() {
			last := e.End.Prev()
			for bits := e.Key.BitLen(); bits >= 0; bits-- {
				p := netip.PrefixFrom(e.Key, bits)
				if p.Masked().Addr() == e.Key && lastAddr(p) == last {
					out[p.String()] = e.Timeout
					break
				}
			}
			continue
		}
		out[netip.PrefixFrom(e.Key, e.Key.BitLen()).String()] = e.Timeout
	}
	return out
}

// TestNftablesFakeKernel: Init makes the table, sets, chain and rules;
// Add puts IPv4/IPv6 addresses and prefixes in the right sets with their
// timeouts; List reads them back; Delete of present and absent entries;
// Remove deletes the table.
func TestNftablesFakeKernel(t *testing.T) {
	ctx := context.Background()
	n, k := fakeNft(t, Options{Prefixes: true, Forward: true})
	if got := k.Tables(); len(got) != 1 || !strings.HasSuffix(got[0], "/"+NftTable) {
		t.Fatalf("tables %v", got)
	}
	if r := k.Rules(NftTable, NftInput); r != 4 {
		t.Fatalf("input chain has %d rules, want 4 (one per set)", r)
	}
	if r := k.Rules(NftTable, NftForward); r != 4 {
		t.Fatalf("forward chain has %d rules, want 4", r)
	}
	bans := []Ban{
		{netip.MustParsePrefix("192.0.2.1/32"), time.Hour},
		{netip.MustParsePrefix("::ffff:192.0.2.2/128"), 2 * time.Hour},
		{netip.MustParsePrefix("2001:db8::1/128"), 3 * time.Hour},
		{netip.MustParsePrefix("2001:db8:1::/64"), 4 * time.Hour},
		{netip.MustParsePrefix("198.51.100.0/24"), 5 * time.Hour},
	}
	if err := n.Add(ctx, bans); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]time.Duration{
		NftSet4:    {"192.0.2.1/32": time.Hour, "192.0.2.2/32": 2 * time.Hour},
		NftSet6:    {"2001:db8::1/128": 3 * time.Hour},
		NftSet6Net: {"2001:db8:1::/64": 4 * time.Hour},
		NftSet4Net: {"198.51.100.0/24": 5 * time.Hour},
	}
	for set, w := range want {
		got := elemKeys(k.Elements(NftTable, set))
		if len(got) != len(w) {
			t.Fatalf("set %s: %v, want %v", set, got, w)
		}
		for p, to := range w {
			if got[p] != to {
				t.Fatalf("set %s: %s timeout %v, want %v", set, p, got[p], to)
			}
		}
	}
	k.Advance(10 * time.Minute)
	list, err := n.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Fatalf("List: %v", list)
	}
	for _, b := range list {
		if b.Prefix.String() == "192.0.2.1/32" && b.Timeout != 50*time.Minute {
			t.Fatalf("List: %s remaining %v, want 50m", b.Prefix, b.Timeout)
		}
	}
	// Refresh: a present element gets the new timeout.
	if err := n.Add(ctx, []Ban{{netip.MustParsePrefix("192.0.2.1/32"), 9 * time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if got := elemKeys(k.Elements(NftTable, NftSet4)); got["192.0.2.1/32"] != 9*time.Hour {
		t.Fatalf("refresh: %v", got)
	}
	// Delete: present and absent in one call.
	if err := n.Delete(ctx, []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("203.0.113.77/32"), netip.MustParsePrefix("2001:db8:1::/64")}); err != nil {
		t.Fatalf("Delete with an absent entry: %v", err)
	}
	if got := elemKeys(k.Elements(NftTable, NftSet4)); len(got) != 1 {
		t.Fatalf("after Delete: %v", got)
	}
	if got := k.Elements(NftTable, NftSet6Net); len(got) != 0 {
		t.Fatalf("after Delete /64: %v", got)
	}
	if err := n.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if got := k.Tables(); len(got) != 0 {
		t.Fatalf("after Remove: %v", got)
	}
	if err := n.Remove(ctx); err != nil {
		t.Fatalf("Remove of an absent table: %v", err)
	}
}

// TestNftablesCheck: Check finds the table, a set, a chain or a rule gone.
func TestNftablesCheck(t *testing.T) {
	ctx := context.Background()
	n, k := fakeNft(t, Options{Prefixes: true})
	h, err := n.Check(ctx)
	if err != nil || !h.Intact() || h.Entries != -1 {
		t.Fatalf("fresh: %+v %v", h, err)
	}
	k.DeleteChain(NftTable, NftInput)
	h, err = n.Check(ctx)
	if err != nil || h.Intact() || h.Missing[0] != "chain input" {
		t.Fatalf("chain gone: %+v %v", h, err)
	}
	if err := n.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := n.Check(ctx); err != nil || !h.Intact() {
		t.Fatalf("after Init: %+v %v", h, err)
	}
	k.FlushRuleset()
	h, err = n.Check(ctx)
	if err != nil || len(h.Missing) != 1 || h.Missing[0] != "table inet "+NftTable {
		t.Fatalf("after flush ruleset: %+v %v", h, err)
	}
	if _, ok := AsChecker(WithAllowlist(n, func(netip.Prefix) bool { return false })); !ok {
		t.Fatal("AsChecker does not see through WithAllowlist")
	}
	if _, ok := AsChecker(NewDryRun(Options{})); ok {
		t.Fatal("dry-run claims to be checkable")
	}
}

// TestNftablesOverlaps (issue 16): a /64 inside a /48 is covered (not an
// error); a /48 over a /64 replaces it; when the wider one goes, a covered
// prefix that outlasts it comes back.
func TestNftablesOverlaps(t *testing.T) {
	ctx := context.Background()
	n, k := fakeNft(t, Options{Prefixes: true})
	p48 := netip.MustParsePrefix("2001:db8:5::/48")
	p64 := netip.MustParsePrefix("2001:db8:5:1::/64")
	if err := n.Add(ctx, []Ban{{p48, time.Hour}}); err != nil {
		t.Fatal(err)
	}
	if err := n.Add(ctx, []Ban{{p64, 3 * time.Hour}}); err != nil {
		t.Fatalf("a /64 inside a /48: %v", err)
	}
	if got := elemKeys(k.Elements(NftTable, NftSet6Net)); len(got) != 1 || got[p48.String()] != time.Hour {
		t.Fatalf("kernel after /64 inside /48: %v", got)
	}
	// Both in one batch (a restart's restore), in either order: no error.
	if err := n.Add(ctx, []Ban{{p64, 3 * time.Hour}, {p48, time.Hour}}); err != nil {
		t.Fatalf("restore of /48 and /64: %v", err)
	}
	// The /48 goes: the /64 (3 h) is back.
	if err := n.Delete(ctx, []netip.Prefix{p48}); err != nil {
		t.Fatal(err)
	}
	if got := elemKeys(k.Elements(NftTable, NftSet6Net)); len(got) != 1 || got[p64.String()] == 0 {
		t.Fatalf("kernel after the /48 went: %v", got)
	}
	// Wider over narrower: the /48 replaces the /64.
	if err := n.Add(ctx, []Ban{{p48, 30 * time.Minute}}); err != nil {
		t.Fatalf("a /48 over a /64: %v", err)
	}
	if got := elemKeys(k.Elements(NftTable, NftSet6Net)); len(got) != 1 || got[p48.String()] != 30*time.Minute {
		t.Fatalf("kernel after /48 over /64: %v", got)
	}
	if err := n.Delete(ctx, []netip.Prefix{p48}); err != nil {
		t.Fatal(err)
	}
	if got := elemKeys(k.Elements(NftTable, NftSet6Net)); got[p64.String()] == 0 {
		t.Fatalf("the /64 that outlasts the /48 is not back: %v", got)
	}
	// IPv4 too.
	if err := n.Add(ctx, []Ban{{netip.MustParsePrefix("198.51.100.0/24"), time.Hour}, {netip.MustParsePrefix("198.51.100.128/25"), time.Minute}}); err != nil {
		t.Fatalf("IPv4 /25 inside /24: %v", err)
	}
}

// TestNftablesRefusedEntry: one entry the kernel refuses does not keep the
// others out, and is named in the error.
func TestNftablesRefusedEntry(t *testing.T) {
	ctx := context.Background()
	n, k := fakeNft(t, Options{})
	bad := netip.MustParseAddr("192.0.2.66")
	var bans []Ban
	for i := 1; i <= 20; i++ {
		bans = append(bans, Ban{netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), time.Hour})
	}
	bans = append(bans, Ban{netip.PrefixFrom(bad, 32), 0}) // no timeout: refused before the kernel
	err := n.Add(ctx, bans)
	if err == nil || !strings.Contains(err.Error(), "192.0.2.66") {
		t.Fatalf("error does not name the refused entry: %v", err)
	}
	if got := k.Elements(NftTable, NftSet4); len(got) != 20 {
		t.Fatalf("%d of 20 good entries in", len(got))
	}
	// The kernel refuses every element: 8 failures in a row stop the retries.
	k.Refuse = func(typ uint16, _ string) syscall.Errno {
		if typ == unix.NFT_MSG_NEWSETELEM {
			return syscall.EPERM
		}
		return 0
	}
	bans = bans[:0]
	for i := 1; i <= 30; i++ {
		bans = append(bans, Ban{netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 32), time.Hour})
	}
	before := k.Batches
	err = n.Add(ctx, bans)
	if err == nil || !strings.Contains(err.Error(), "not tried after 8 failures") {
		t.Fatalf("all refused: %v", err)
	}
	if b := k.Batches - before; b > 10 {
		t.Fatalf("%d transactions for 30 refused entries", b)
	}
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("error does not carry the kernel's errno: %v", err)
	}
}

// TestNftablesSetFull: a full set says which setting to raise.
func TestNftablesSetFull(t *testing.T) {
	ctx := context.Background()
	n, _ := fakeNft(t, Options{MaxElem: 5})
	var bans []Ban
	for i := 1; i <= 6; i++ {
		bans = append(bans, Ban{netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), time.Hour})
	}
	err := n.Add(ctx, bans)
	if err == nil || !strings.Contains(err.Error(), "max_elem") {
		t.Fatalf("set full: %v", err)
	}
}

// TestNftablesLegacyRefresh: on kernels before 6.10 a refresh is add,
// delete, add in one transaction; the element ends with the new timeout.
func TestNftablesLegacyRefresh(t *testing.T) {
	ctx := context.Background()
	n, k := fakeNft(t, Options{LegacyRefresh: true})
	p := netip.MustParsePrefix("192.0.2.9/32")
	for _, to := range []time.Duration{time.Hour, 2 * time.Hour} {
		if err := n.Add(ctx, []Ban{{p, to}}); err != nil {
			t.Fatal(err)
		}
		if got := elemKeys(k.Elements(NftTable, NftSet4)); got[p.String()] != to {
			t.Fatalf("legacy refresh to %v: %v", to, got)
		}
	}
}

// TestNftablesInitRepairs: a set of the wrong kind (prefixes turned on)
// rebuilds the table; a set no longer wanted is deleted.
func TestNftablesInitRepairs(t *testing.T) {
	ctx := context.Background()
	k := nfttest.New()
	n1, err := NewNftables(Options{NetlinkDial: k.Dial, Prefixes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Close()
	if err := n1.Init(ctx); err != nil {
		t.Fatal(err)
	}
	n2, err := NewNftables(Options{NetlinkDial: k.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if err := n2.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if got := k.Elements(NftTable, NftSet4Net); got != nil {
		t.Fatalf("interval set left after prefixes were turned off")
	}
	if h, err := n2.Check(ctx); err != nil || !h.Intact() {
		t.Fatalf("after repair: %+v %v", h, err)
	}
}
