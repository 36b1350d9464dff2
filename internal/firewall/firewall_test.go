package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

func TestNewRegistry(t *testing.T) {
	_, err := New("pf", Options{})
	if err == nil {
		t.Fatal("unknown backend accepted")
	}
	for _, n := range []string{"nftables", "ipset", "iptables", "dry-run", "auto"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not list %s", err, n)
		}
	}
	b, err := New("dry-run", Options{})
	if err != nil || b.Name() != "dry-run" {
		t.Fatalf("dry-run: %v %v", b, err)
	}
}

func TestNormalize(t *testing.T) {
	cases := []struct {
		in       string
		prefixes bool
		want     string
		err      bool
	}{
		{"192.0.2.1/32", false, "192.0.2.1/32", false},
		{"::ffff:192.0.2.1/128", false, "192.0.2.1/32", false},
		{"2001:db8::1/128", false, "2001:db8::1/128", false},
		{"2001:db8::1/64", false, "", true},
		{"2001:db8::1/64", true, "2001:db8::/64", false},
		{"::ffff:192.0.2.0/120", true, "192.0.2.0/24", false},
		{"::ffff:0.0.0.0/90", true, "", true},
	}
	for _, c := range cases {
		got, err := normalize(netip.MustParsePrefix(c.in), c.prefixes)
		if (err != nil) != c.err {
			t.Errorf("%s: err %v", c.in, err)
			continue
		}
		if !c.err && got.String() != c.want {
			t.Errorf("%s: got %s want %s", c.in, got, c.want)
		}
		if c.err && !c.prefixes && !errors.Is(err, ErrUnsupportedPrefix) && strings.Contains(c.in, "2001") {
			t.Errorf("%s: error %v does not wrap ErrUnsupportedPrefix", c.in, err)
		}
	}
}

// TestPlanChunks: no element list may pass 65,535 bytes (the 16-bit
// netlink attribute length wraps and the kernel silently takes a part).
func TestPlanChunks(t *testing.T) {
	n := &Nftables{opts: Options{Prefixes: true}}
	n.defineSets()
	var ps []netip.Prefix
	var tos []time.Duration
	a4 := netip.MustParseAddr("100.64.0.0")
	a6 := netip.MustParseAddr("2001:db8::")
	for i := 0; i < 10000; i++ {
		a4, a6 = a4.Next(), a6.Next()
		ps = append(ps, netip.PrefixFrom(a4, 32), netip.PrefixFrom(a6, 128))
		tos = append(tos, time.Hour, time.Hour)
	}
	n6 := netip.MustParseAddr("2001:db8:1::")
	for i := 0; i < 3000; i++ {
		ps = append(ps, netip.PrefixFrom(n6, 64))
		tos = append(tos, time.Hour)
		n6 = lastAddr(netip.PrefixFrom(n6, 64)).Next()
	}
	ops := n.plan(ps, tos)
	total := 0
	perSet := map[string]int{}
	for _, op := range ops {
		if len(op.elems) > nftMaxElems {
			t.Errorf("message with %d elements", len(op.elems))
		}
		enc, err := nftListBytes(op)
		if err != nil {
			t.Fatal(err)
		}
		if enc > 65535 {
			t.Errorf("set %s: element list of %d bytes (%d elements) overflows", op.set.Name, enc, len(op.elems))
		}
		if enc > nftMaxListBytes+100 {
			t.Errorf("estimate off: encoded %d > budget %d", enc, nftMaxListBytes)
		}
		total += len(op.bans)
		perSet[op.set.Name] += len(op.bans)
	}
	if total != len(ps) {
		t.Fatalf("planned %d bans of %d", total, len(ps))
	}
	if perSet[NftSet4] != 10000 || perSet[NftSet6] != 10000 || perSet[NftSet6Net] != 3000 {
		t.Fatalf("per set: %v", perSet)
	}
}

// nftListBytes encodes op's elements the way google/nftables does and
// measures the nested list.
func nftListBytes(op elemOp) (int, error) {
	size := 0
	for _, e := range op.elems {
		s := 4 + 4 + 4 + (len(e.Key)+3)&^3
		if e.IntervalEnd {
			s += 8
		}
		if e.Timeout != 0 {
			s += 12
		}
		size += s
	}
	return size, nil
}

func TestIntervalsToBans(t *testing.T) {
	mk := func(s string, end bool, exp time.Duration) nftables.SetElement {
		return nftables.SetElement{Key: netip.MustParseAddr(s).AsSlice(), IntervalEnd: end, Expires: exp}
	}
	els := []nftables.SetElement{ // kernel dump order is not sorted
		mk("2001:db8:2::", true, 0),
		mk("2001:db8:1::", false, time.Minute),
		mk("2001:db8:3::", false, time.Hour),
		mk("2001:db8:3::1", true, 0), // a /128 as interval, adjacent to nothing
		mk("2001:db8:2::", false, 2*time.Minute),
		mk("2001:db8:2:0:8000::", true, 0), // 2001:db8:2::/65, starts where the first ends
	}
	got := intervalsToBans(els)
	want := []Ban{
		{netip.MustParsePrefix("2001:db8:1::/48"), time.Minute},
		{netip.MustParsePrefix("2001:db8:2::/65"), 2 * time.Minute},
		{netip.MustParsePrefix("2001:db8:3::/128"), time.Hour},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] got %v want %v", i, got[i], want[i])
		}
	}
	// Round trip through toElems.
	n := &Nftables{opts: Options{Prefixes: true}}
	n.defineSets()
	for _, p := range []string{"2001:db8:64::/64", "198.51.100.0/24", "ffff:ffff::/32", "203.0.113.128/25"} {
		pp := netip.MustParsePrefix(p)
		arr, k, set, _ := n.toElems(pp, time.Hour)
		els := arr[:k]
		if !set.Interval {
			t.Fatalf("%s went to hash set %s", p, set.Name)
		}
		for i := range els {
			els[i].Expires = els[i].Timeout
		}
		back := intervalsToBans(els)
		if len(back) != 1 || back[0].Prefix != pp || back[0].Timeout != time.Hour {
			t.Errorf("%s: round trip gave %v", p, back)
		}
	}
}

func TestParseIPSetSave(t *testing.T) {
	in := "create pbxguard6 hash:net family inet6 hashsize 1024 maxelem 200000 timeout 3600\n" +
		"add pbxguard6 2001:db8:64:1::/64 timeout 1799\nadd pbxguard6 2001:db8:1::1 timeout 3599\n"
	got, err := parseIPSetSave([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Prefix.String() != "2001:db8:64:1::/64" || got[0].Timeout != 1799*time.Second ||
		got[1].Prefix.String() != "2001:db8:1::1/128" {
		t.Fatalf("got %v", got)
	}
}

func TestIPTablesRuleRoundTrip(t *testing.T) {
	p := netip.MustParsePrefix("2001:db8:64:1::/64")
	line := "-A " + IPTChain + " " + strings.ReplaceAll(iptRule(p, 1764100000), `"`, "")
	m := iptRuleRE.FindStringSubmatch(line)
	if m == nil || m[1] != p.String() || m[2] != "1764100000" {
		t.Fatalf("%q -> %v", line, m)
	}
	// iptables-save quotes comments with spaces.
	line = "-A " + IPTChain + " " + iptRule(netip.MustParsePrefix("192.0.2.7/32"), 5)
	if m := iptRuleRE.FindStringSubmatch(line); m == nil || m[1] != "192.0.2.7/32" {
		t.Fatalf("%q -> %v", line, m)
	}
}

func TestDryRunExpires(t *testing.T) {
	d := NewDryRun(Options{})
	now := time.Unix(1000, 0)
	d.now = func() time.Time { return now }
	ctx := context.Background()
	if err := d.Add(ctx, []Ban{{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Timeout: 10 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(ctx, []Ban{{Prefix: netip.MustParsePrefix("192.0.2.2/32")}}); err == nil {
		t.Fatal("zero timeout accepted")
	}
	now = now.Add(4 * time.Second)
	l, _ := d.List(ctx)
	if len(l) != 1 || l[0].Timeout != 6*time.Second {
		t.Fatalf("List = %v", l)
	}
	now = now.Add(6 * time.Second)
	if l, _ := d.List(ctx); len(l) != 0 {
		t.Fatalf("expired entry listed: %v", l)
	}
}

func TestMissingToolMessage(t *testing.T) {
	_, err := lookTool(Options{}, "pbxguard-no-such-tool", "ipset")
	if err == nil || !strings.Contains(err.Error(), "apt-get install ipset") || !strings.Contains(err.Error(), "firewall.backend: nftables") {
		t.Fatalf("error = %v", err)
	}
}

func TestDryRunPermanent(t *testing.T) {
	d := NewDryRun(Options{})
	ctx := context.Background()
	p := netip.MustParsePrefix("203.0.113.9/32")
	if err := d.Add(ctx, []Ban{{Prefix: p, Timeout: Permanent}}); err != nil {
		t.Fatal(err)
	}
	l, err := d.List(ctx)
	if err != nil || len(l) != 1 || l[0].Timeout != Permanent {
		t.Fatalf("List = %+v, %v; want one entry with Timeout Permanent", l, err)
	}
}

// Permanent entries read back as Permanent: ipset's timeout 0, an nftables
// element without timeout.
func TestPermanentReadBack(t *testing.T) {
	bans, err := parseIPSetSave([]byte("create pbxguard4 hash:ip family inet timeout 3600\nadd pbxguard4 203.0.113.9 timeout 0\nadd pbxguard4 203.0.113.10 timeout 59\n"))
	if err != nil || len(bans) != 2 || bans[0].Timeout != Permanent || bans[1].Timeout != 59*time.Second {
		t.Fatalf("ipset save = %+v, %v", bans, err)
	}
	if got := elemRemaining(nftables.SetElement{Key: []byte{203, 0, 113, 9}}); got != Permanent {
		t.Fatalf("nft element without timeout: %v", got)
	}
	if got := elemRemaining(nftables.SetElement{Key: []byte{203, 0, 113, 9}, Timeout: time.Hour, Expires: time.Minute}); got != time.Minute {
		t.Fatalf("nft element with timeout: %v", got)
	}
}
