package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var testAllow = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/28"),
	netip.MustParsePrefix("2001:db8:ff::1/128"),
	netip.MustParsePrefix("127.0.0.0/8"),
}

func TestWithAllowlist(t *testing.T) {
	cases := []struct {
		prefix  string
		refused bool
	}{
		{"192.0.2.5/32", true},              // inside an allowlisted /28
		{"192.0.2.0/24", true},              // contains the /28: refused whole, not narrowed
		{"192.0.2.16/32", false},            // just outside
		{"198.51.100.7/32", false},          // unrelated
		{"2001:db8:ff::/64", true},          // a /64 containing an allowlisted /128
		{"2001:db8:ff::1/128", true},        // the address itself
		{"2001:db8:ff::2/128", false},       // its neighbour
		{"2001:db8:ee::/64", false},         // another /64
		{"::ffff:192.0.2.5/128", true},      // IPv4-mapped form of an allowlisted address
		{"::ffff:203.0.113.9/128", false},   // mapped, not allowlisted
		{"0.0.0.0/0", true},                 // everything overlaps
		{"127.0.0.1/32", true},              // loopback
		{"2001:db8::/32", true},             // contains 2001:db8:ff::1
		{"203.0.113.0/24", false},           // clean /24
		{"::ffff:192.0.2.0/120", true},      // mapped /24 containing the /28
		{"2001:db8:ff:0:0:0:0:1/128", true}, // another spelling
		{"2001:db8:ff::1:0/112", false},     // does not contain ::1
		{"2001:db8:ff::/112", true},         // contains ::1
		{"192.0.2.15/32", true},             // last address of the /28
		{"192.0.2.14/31", true},             // pair inside
		{"192.0.2.16/28", false},            // next /28
		{"192.0.0.0/16", true},              // wide
		{"198.51.100.0/24", false},          // wide but clean
		{"2001:db8:fe::/48", false},         // different /48
		{"2001:db8:ff::/48", true},          // containing /48
		{"::/0", true},                      // contains everything IPv6
		{"128.0.0.0/1", true},               // half the space, contains 192.0.2.0/28
		{"128.0.0.0/2", false},              // 128-191: no allowlisted address
		{"0.0.0.0/1", true},                 // the other half
		{"2001:db8:ff::1:1/128", false},     // not ::1
		{"2001:db8:ff::0/127", true},        // ::0 and ::1
		{"2001:db8:ff::2/127", false},       // ::2 and ::3
		{"2001:db8:ff:0::8000:0/97", false}, // high half of the /96
		{"2001:db8:ff:0::/97", true},        // low half, contains ::1
		{"100.64.0.0/10", false},            // shared space
		{"127.255.255.255/32", true},        // loopback end
		{"128.0.0.1/32", false},             // just past loopback
		{"126.255.255.255/32", false},       // just before loopback
		{"::ffff:127.0.0.1/128", true},      // mapped loopback
		{"::ffff:0.0.0.0/96", true},         // mapped everything
		{"64:ff9b::c000:205/128", false},    // NAT64 form is a different address
		{"2001:db8:ff::1/64", true},         // host bits set, still the /64
		{"2001:db8:ff::2/128", false},       // duplicate of a clean entry
		{"203.0.113.255/32", false},         // broadcast-like, clean
		{"192.0.2.0/29", true},              // inside
		{"192.0.2.8/29", true},              // inside
		{"192.0.2.0/27", true},              // contains
		{"192.0.2.32/27", false},            // clean
		{"2001:db8:ff::ffff/128", false},    // clean
		{"2001:db8:ff::ffff:1/128", false},  // clean
	}
	inner := NewDryRun(Options{Prefixes: true})
	fw := WithAllowlist(inner, PrefixDenier(testAllow))
	var bans []Ban
	wantRefused := map[string]bool{}
	for _, c := range cases {
		p := netip.MustParsePrefix(c.prefix)
		bans = append(bans, Ban{Prefix: p, Timeout: time.Hour})
		if c.refused {
			wantRefused[p.String()] = true
		}
	}
	err := fw.Add(context.Background(), bans)
	if !errors.Is(err, ErrAllowlisted) {
		t.Fatalf("Add error = %v, want one wrapping ErrAllowlisted", err)
	}
	var ae *AllowlistError
	if !errors.As(err, &ae) {
		t.Fatalf("error %T is not an *AllowlistError", err)
	}
	got := map[string]bool{}
	for _, p := range ae.Refused {
		got[p.String()] = true
	}
	for _, c := range cases {
		p := netip.MustParsePrefix(c.prefix).String()
		if got[p] != c.refused {
			t.Errorf("%s: refused=%v, want %v", c.prefix, got[p], c.refused)
		}
	}
	if !strings.Contains(err.Error(), "192.0.2.5/32") {
		t.Errorf("error does not name a refused entry: %v", err)
	}
	// Nothing that overlaps the allowlist is in the backend; every clean entry is.
	list, _ := inner.List(context.Background())
	in := map[netip.Prefix]bool{}
	for _, b := range list {
		in[b.Prefix] = true
		for _, a := range testAllow {
			if a.Overlaps(b.Prefix) {
				t.Errorf("allowlisted %v reached the backend as %v", a, b.Prefix)
			}
		}
	}
	for _, c := range cases {
		if c.refused {
			continue
		}
		p, _ := normalize(netip.MustParsePrefix(c.prefix), true)
		if !in[p] {
			t.Errorf("clean %s not added", c.prefix)
		}
	}
}

func TestWithAllowlistCleanBatchNoError(t *testing.T) {
	inner := NewDryRun(Options{})
	fw := WithAllowlist(inner, PrefixDenier(testAllow))
	if err := fw.Add(context.Background(), []Ban{{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Timeout: time.Minute}}); err != nil {
		t.Fatalf("clean batch: %v", err)
	}
	if err := fw.Add(context.Background(), []Ban{{Prefix: netip.MustParsePrefix("127.0.0.1/32"), Timeout: time.Minute}}); !errors.Is(err, ErrAllowlisted) {
		t.Fatalf("only-allowlisted batch: %v", err)
	}
	if fw.Name() != "dry-run" {
		t.Fatalf("wrapper hides Name: %q", fw.Name())
	}
	if err := fw.Delete(context.Background(), []netip.Prefix{netip.MustParsePrefix("198.51.100.1/32")}); err != nil {
		t.Fatal(err)
	}
	if l, _ := fw.List(context.Background()); len(l) != 0 {
		t.Fatalf("after Delete: %v", l)
	}
}

// FuzzWithAllowlist: whatever prefix comes in, nothing overlapping the
// allowlist reaches the backend.
func FuzzWithAllowlist(f *testing.F) {
	f.Add([]byte{192, 0, 2, 5}, uint8(32))
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(64))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1}, uint8(100))
	f.Fuzz(func(t *testing.T, raw []byte, bits uint8) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		p := netip.PrefixFrom(a, int(bits)%(a.BitLen()+1))
		inner := NewDryRun(Options{Prefixes: true})
		fw := WithAllowlist(inner, PrefixDenier(testAllow))
		_ = fw.Add(context.Background(), []Ban{{Prefix: p, Timeout: time.Hour}})
		list, _ := inner.List(context.Background())
		for _, b := range list {
			for _, al := range testAllow {
				if al.Overlaps(b.Prefix) {
					t.Fatalf("%v (from %v) overlaps allowlisted %v", b.Prefix, p, al)
				}
			}
		}
	})
}
