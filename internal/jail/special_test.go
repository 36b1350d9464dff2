package jail

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Unspecified, broadcast and multicast addresses (a forged or broken line)
// are never tracked, never decided, never marked banned; IPv4-mapped forms
// too.
func TestSpecialAddressesNeverTracked(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	for _, s := range []string{"0.0.0.0", "255.255.255.255", "224.0.0.1", "224.0.0.251", "239.1.2.3", "0.1.2.3",
		"::", "ff02::1", "ff02::fb", "ff05::2", "::ffff:0.0.0.0", "::ffff:255.255.255.255", "::ffff:224.0.0.1"} {
		a := netip.MustParseAddr(s)
		clk := &fakeClock{t: base}
		j, _ := New(Config{Name: "a", IPv6Prefix: 64}, NewAllowlist(nil), nil, clk)
		for i := range 10 {
			ev := event.Event{Time: base.Add(time.Duration(i) * time.Second), Addr: a, Service: event.ServiceSIP, Kind: event.Scan}
			if d, ok := j.Observe(&ev); ok {
				t.Fatalf("%s: decision %+v", s, d)
			}
		}
		j.MarkBanned(a, base.Add(time.Hour), 1)
		if st := j.Stats(); st.Tracked != 0 || st.SpecialSkipped != 10 {
			t.Fatalf("%s: stats %+v, want nothing tracked and 10 skipped", s, st)
		}
		if ds := j.Tick(base.Add(time.Minute)); len(ds) != 0 {
			t.Fatalf("%s: Tick decided %+v", s, ds)
		}
	}
	// Their neighbours are ordinary addresses.
	for _, s := range []string{"1.0.0.0", "223.255.255.255", "255.255.255.254", "fe80::1", "2001:db8::1"} {
		if special(netip.MustParseAddr(s)) {
			t.Errorf("%s taken for special", s)
		}
	}
}
