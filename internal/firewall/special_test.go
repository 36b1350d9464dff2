package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var specialCases = []struct {
	prefix  string
	special bool
}{
	{"0.0.0.0/32", true},
	{"255.255.255.255/32", true},
	{"224.0.0.1/32", true},
	{"224.0.0.251/32", true}, // link-local multicast (mDNS)
	{"239.255.255.250/32", true},
	{"::/128", true},
	{"ff02::1/128", true},
	{"ff02::fb/128", true},
	{"ff05::1:3/128", true},
	{"::ffff:0.0.0.0/128", true},
	{"::ffff:255.255.255.255/128", true},
	{"::ffff:224.0.0.1/128", true},
	{"0.1.2.3/32", true},      // "this network"
	{"0.0.0.0/0", true},       // covers them all
	{"::/0", true},            // idem
	{"224.0.0.0/24", true},    // a multicast prefix
	{"ff02::/64", true},       // idem
	{"192.0.0.0/2", true},     // wide enough to cover multicast and broadcast
	{"203.0.113.7/32", false}, // a real source
	{"198.51.100.255/32", false},
	{"2001:db8::1/128", false},
	{"2001:db8::/64", false},
	{"::ffff:203.0.113.7/128", false},
	{"223.255.255.255/32", false},
	{"240.0.0.1/32", false},
	{"1.0.0.0/8", false},
	{"fe80::1/128", false}, // link-local unicast: a neighbour can attack
}

func TestSpecial(t *testing.T) {
	for _, c := range specialCases {
		if got := Special(netip.MustParsePrefix(c.prefix)); got != c.special {
			t.Errorf("Special(%s) = %v, want %v", c.prefix, got, c.special)
		}
	}
	if !Special(netip.Prefix{}) {
		t.Error("an invalid prefix is not refused")
	}
}

// The gate before the kernel refuses special addresses whatever asks
// (jail, manual ban, fraud containment, restore all go through Add), with
// an error that names them, and adds the rest.
func TestGateRefusesSpecial(t *testing.T) {
	inner := NewDryRun(Options{Prefixes: true})
	fw := WithAllowlist(inner, PrefixDenier(testAllow))
	ctx := context.Background()
	for _, c := range specialCases {
		p := netip.MustParsePrefix(c.prefix)
		err := fw.Add(ctx, []Ban{{Prefix: p, Timeout: time.Hour}})
		if c.special != errors.Is(err, ErrSpecial) {
			t.Errorf("Add(%s): %v; special %v", c.prefix, err, c.special)
			continue
		}
		if !c.special {
			continue
		}
		var ae *AllowlistError
		if !errors.Is(err, ErrAllowlisted) || !errors.As(err, &ae) || len(ae.Refused) != 1 || ae.Refused[0] != p {
			t.Errorf("Add(%s): %v is not a refusal naming it", c.prefix, err)
		}
		if !strings.Contains(err.Error(), p.String()) || !strings.Contains(err.Error(), "special") {
			t.Errorf("Add(%s): unclear error %q", c.prefix, err)
		}
	}
	// A mixed batch: special, allowlisted and clean entries.
	mixed := []Ban{
		{Prefix: netip.MustParsePrefix("0.0.0.0/32"), Timeout: time.Hour},
		{Prefix: netip.MustParsePrefix("192.0.2.5/32"), Timeout: time.Hour},
		{Prefix: netip.MustParsePrefix("203.0.113.8/32"), Timeout: time.Hour},
		{Prefix: netip.MustParsePrefix("ff02::1/128"), Timeout: time.Hour},
	}
	err := fw.Add(ctx, mixed)
	var ae *AllowlistError
	if !errors.Is(err, ErrSpecial) || !errors.As(err, &ae) || len(ae.Refused) != 3 {
		t.Fatalf("mixed batch: %v (refused %v), want 3 refusals", err, ae)
	}
	list, _ := inner.List(ctx)
	for _, b := range list {
		if Special(b.Prefix) {
			t.Errorf("special %v reached the backend", b.Prefix)
		}
	}
	found := false
	for _, b := range list {
		found = found || b.Prefix == netip.MustParsePrefix("203.0.113.8/32")
	}
	if !found {
		t.Error("the clean entry of the mixed batch was not added")
	}
}
