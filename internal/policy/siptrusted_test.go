package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// The daemon's allowlist (with the Asterisk trunks) is in the compiled
// policy's SIP trusted set, accepted before the SIP rate meters and the
// scanner guard, in the nft and the iptables renderings; the plan says
// where each entry comes from.
func TestTrunksTrustedForSIP(t *testing.T) {
	c := Default()
	c.Trusted.SIP = []Origin{
		{netip.MustParsePrefix("203.0.113.50/32"), "/etc/asterisk/pjsip.conf:7 [carrier] pjsip identify"},
		{netip.MustParsePrefix("203.0.113.0/24"), "allowlist (pbxguard.yaml:3)"},
		{netip.MustParsePrefix("198.51.100.9/32"), "/etc/asterisk/sip.conf:12 [\nold] sip peer"},
		{netip.MustParsePrefix("2001:db8:5::/48"), "/etc/asterisk/pjsip.conf:9 [carrier6] pjsip identify"},
	}
	nft, err := PlanText(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"set sip_trusted4 {",
		"#   203.0.113.50/32: /etc/asterisk/pjsip.conf:7 [carrier] pjsip identify",
		"#   198.51.100.9/32: /etc/asterisk/sip.conf:12 [ old] sip peer",
		"#   2001:db8:5::/48: /etc/asterisk/pjsip.conf:9 [carrier6] pjsip identify",
		"ip saddr @sip_trusted4 udp dport 5060 counter accept",
		"ip6 saddr @sip_trusted6 tcp dport { 5060, 5061 } counter accept",
	} {
		if !strings.Contains(nft, want) {
			t.Errorf("nft plan lacks %q", want)
		}
	}
	// The set's elements: the /32 inside the /24 is left out (an interval
	// set refuses overlaps), the others are there.
	if !strings.Contains(nft, "elements = { 203.0.113.0/24, 198.51.100.9 }") {
		t.Errorf("sip_trusted4 set lacks its elements:\n%s", nft)
	}
	if i, j := strings.Index(nft, "@sip_trusted4 udp"), strings.Index(nft, "sip-rate-udp4"); i < 0 || j < 0 || i > j {
		t.Errorf("the trusted SIP accept is not before the rate limit (%d, %d)", i, j)
	}
	if i, j := strings.Index(nft, "@sip_trusted4 udp"), strings.Index(nft, "jump sip_scanner"); i < 0 || j < 0 || i > j {
		t.Errorf("the trusted SIP accept is not before the scanner guard (%d, %d)", i, j)
	}

	ipt, err := IPTables(c, "4")
	if err != nil {
		t.Fatal(err)
	}
	acc := "-s 203.0.113.0/24 -p udp --dport 5060 -m comment --comment \"sip-trusted-udp: "
	i, j := strings.Index(ipt, acc), strings.Index(ipt, "pbxg-sip-udp")
	if i < 0 || j < 0 || i > j {
		t.Errorf("iptables: %q missing or after the SIP rate limit (%d, %d):\n%s", acc, i, j, ipt)
	}
	if !strings.Contains(ipt, "-s 198.51.100.9/32 -p udp --dport 5060 -m comment --comment \"sip-trusted-udp: ") {
		t.Errorf("iptables lacks the sip.conf trunk:\n%s", ipt)
	}
	ip6, err := IPTables(c, "6")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ip6, "-s 2001:db8:5::/48 -p udp --dport 5060 -m comment --comment \"sip-trusted-udp: ") || strings.Contains(ip6, "203.0.113") {
		t.Errorf("ip6tables:\n%s", ip6)
	}
}
