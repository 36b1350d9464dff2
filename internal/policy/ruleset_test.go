package policy

import (
	"flag"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func mustCompile(t *testing.T, cfg *Config) *Ruleset {
	t.Helper()
	rs, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func ruleNames(rs *Ruleset) map[string]Rule {
	m := map[string]Rule{}
	for _, r := range rs.Rules() {
		m[r.Name] = r
	}
	return m
}

func TestEveryRuleIsNamedAndExplained(t *testing.T) {
	cfg := Default()
	cfg.Protections.Fragments = true
	cfg.Trusted.Hosts = []netip.Addr{netip.MustParseAddr("192.0.2.5")}
	cfg.Trusted.Interfaces = []string{"wg0"}
	rs := mustCompile(t, cfg)
	seen := map[string]bool{}
	for _, r := range rs.Rules() {
		if r.Name == "" || r.Why == "" {
			t.Errorf("rule without name or reason: %+v", r)
		}
		if seen[r.Name] {
			t.Errorf("duplicate rule name %q", r.Name)
		}
		seen[r.Name] = true
		if c := r.Comment(); len(c) > 128 || strings.ContainsAny(c, "\"\\\n") {
			t.Errorf("comment of %s too long (%d) or with quotes: %q", r.Name, len(c), c)
		}
		if r.Verdict == "" {
			t.Errorf("rule %s without verdict", r.Name)
		}
	}
	text := rs.NFT("h")
	if !strings.HasPrefix(text, "# h\ntable inet pbxguard_policy\ndelete table inet pbxguard_policy\ntable inet pbxguard_policy {\n") {
		t.Errorf("script does not start with the atomic create/delete/define: %q", text[:120])
	}
	if strings.Count(text, "hook input priority 0; policy drop;") != 1 {
		t.Error("input base chain missing or doubled")
	}
	if strings.Contains(text, "table inet pbxguard {") || strings.Contains(text, "table inet pbxguard\n") {
		t.Error("the policy must never name the daemon's ban table")
	}
}

func TestProtectionSwitches(t *testing.T) {
	type sw struct {
		name  string
		off   func(*Config)
		rules []string
	}
	cases := []sw{
		{"null", func(c *Config) { c.Protections.Null = false }, []string{"tcp-null"}},
		{"xmas", func(c *Config) { c.Protections.Xmas = false }, []string{"tcp-xmas"}},
		{"syn_fin", func(c *Config) { c.Protections.SynFin = false }, []string{"tcp-syn-fin"}},
		{"syn_rst", func(c *Config) { c.Protections.SynRst = false }, []string{"tcp-syn-rst"}},
		{"fin_no_ack", func(c *Config) { c.Protections.FinNoAck = false }, []string{"tcp-fin-no-ack"}},
		{"new_not_syn", func(c *Config) { c.Protections.NewNotSyn = false }, []string{"tcp-new-not-syn"}},
		{"syn_flood", func(c *Config) { c.Protections.SynFlood.Enabled = false }, []string{"syn-flood4", "syn-flood6"}},
		{"ssh_conn_limit", func(c *Config) { c.Protections.SSHConnLimit = 0 }, []string{"ssh-conn-limit4", "ssh-conn-limit6"}},
		{"icmp_echo", func(c *Config) { c.Protections.ICMPEcho.Enabled = false }, []string{"icmp-echo-excess", "icmpv6-echo-excess"}},
		{"port_scan", func(c *Config) { c.PortScan.Enabled = false }, []string{"portscan4", "portscan6", "portscan-ban4", "portscan-ban6"}},
		{"sip_scanner", func(c *Config) { c.SIPScanner.Enabled = false }, []string{"sip-scanner", "sipscan-ban4", "sipscan-ban6", "sipscan4"}},
		{"sip rate", func(c *Config) { c.Services.SIP.RateLimit.Enabled = false }, []string{"sip-rate-udp4", "sip-rate-tcp6"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			on := ruleNames(mustCompile(t, Default()))
			cfg := Default()
			c.off(cfg)
			off := ruleNames(mustCompile(t, cfg))
			for _, r := range c.rules {
				if _, ok := on[r]; !ok {
					t.Errorf("default policy lacks %s", r)
				}
				if _, ok := off[r]; ok {
					t.Errorf("%s still present with %s off", r, c.name)
				}
			}
			if len(on)-len(off) < len(c.rules) {
				t.Errorf("switching %s off removed %d rules, want >= %d", c.name, len(on)-len(off), len(c.rules))
			}
		})
	}
	// fragments are off by default and get their own pre-defrag chain
	if _, ok := ruleNames(mustCompile(t, Default()))["fragments"]; ok {
		t.Error("fragments on by default")
	}
	cfg := Default()
	cfg.Protections.Fragments = true
	text := mustCompile(t, cfg).NFT("")
	if !strings.Contains(text, "hook prerouting priority -450") || !strings.Contains(text, "ip frag-off & 0x3fff != 0") {
		t.Error("fragment chain not before defragmentation")
	}
}

func TestRuleOrder(t *testing.T) {
	cfg := Default()
	cfg.Trusted.Networks = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	rs := mustCompile(t, cfg)
	pos := map[string]int{}
	for i, r := range rs.Rules() {
		pos[r.Name] = i
	}
	before := [][2]string{
		{"loopback", "tcp-null"},
		{"trusted4", "tcp-null"},           // trusted sources bypass every check
		{"icmpv6-nd", "ct-invalid"},        // ND always passes
		{"tcp-xmas", "ct-invalid"},         // named counters see scans first
		{"portscan-ban4", "established"},   // a caught scanner loses its flows too
		{"sip-rate-udp4", "established"},   // UDP floods ride established flows
		{"sip-scanner", "established"},     // first datagram searched
		{"established", "tcp-new-not-syn"}, //
		{"ssh-conn-limit4", "ssh"},         // the cap precedes the accept
		{"ssh", "portscan4"},               // only closed ports count as scanning
		{"ami-closed", "portscan4"},        //
		{"portscan6", "default"},           // last
	}
	for _, b := range before {
		if pos[b[0]] >= pos[b[1]] {
			t.Errorf("%s (at %d) must come before %s (at %d)", b[0], pos[b[0]], b[1], pos[b[1]])
		}
	}
	if last := rs.Chains[0].Rules[len(rs.Chains[0].Rules)-1]; last.Name != "default" || last.Verdict != "drop" {
		t.Errorf("last input rule = %+v", last)
	}
}

func TestServices(t *testing.T) {
	cfg := Default()
	cfg.Services.SSH.From = Sources{Kind: FromList, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}}
	cfg.Services.Custom = []Service{{Name: "tftp", Enabled: true, UDP: []PortRange{{69, 69}}, From: Sources{Kind: FromAny}, Why: "firmware"}}
	m := ruleNames(mustCompile(t, cfg))
	want := map[string]string{
		"ssh4":        "ip saddr 192.0.2.0/24 tcp dport 22|accept",
		"ssh6":        "ip6 saddr 2001:db8::/32 tcp dport 22|accept",
		"ssh-closed":  "tcp dport 22|drop",
		"sip-udp":     "udp dport 5060|accept",
		"sip-tcp":     "tcp dport { 5060, 5061 }|accept",
		"rtp":         "udp dport 10000-20000|accept",
		"ami-closed":  "tcp dport 5038|drop",
		"http-closed": "tcp dport 80|drop",
		"tftp":        "udp dport 69|accept",
	}
	for name, w := range want {
		r, ok := m[name]
		if !ok {
			t.Errorf("no rule %s", name)
			continue
		}
		if got := r.NFT + "|" + r.Verdict; got != w {
			t.Errorf("%s = %q, want %q", name, got, w)
		}
	}
	if _, ok := m["ssh"]; ok {
		t.Error("ssh open to everybody although from is a list")
	}
}

func TestAllowsTCP(t *testing.T) {
	cfg := Default()
	cfg.Services.SSH.From = Sources{Kind: FromList, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	cfg.Trusted.Hosts = []netip.Addr{netip.MustParseAddr("2001:db8::10")}
	for _, c := range []struct {
		addr string
		port uint16
		want bool
	}{
		{"192.0.2.7", 22, true},
		{"198.51.100.7", 22, false},
		{"2001:db8::10", 22, true},     // trusted
		{"::ffff:192.0.2.7", 22, true}, // mapped
		{"198.51.100.7", 5060, true},   // sip tcp open to any
		{"198.51.100.7", 5038, false},
		{"127.0.0.1", 5038, true},
	} {
		if got := cfg.AllowsTCP(netip.MustParseAddr(c.addr), c.port); got != c.want {
			t.Errorf("AllowsTCP(%s, %d) = %v, want %v", c.addr, c.port, got, c.want)
		}
	}
}

func TestUASignatures(t *testing.T) {
	sigs := UASignatures([]string{"friendly-scanner", "iWar", "sipcli", "iWar"})
	want := []string{"friendly-scanner", "User-Agent: iWar", "er-Agent: sipcli"}
	if len(sigs) != len(want) {
		t.Fatalf("sigs = %q", sigs)
	}
	for i, w := range want {
		if string(sigs[i]) != w || len(sigs[i]) != 16 {
			t.Errorf("sig %d = %q, want %q", i, sigs[i], w)
		}
	}
	// the svmap probe carries its User-Agent at byte 215: the chain must
	// have a rule at every offset up to search_bytes-16
	cfg := Default()
	rs := mustCompile(t, cfg)
	var scanner *Chain
	for i := range rs.Chains {
		if rs.Chains[i].Name == "sip_scanner" {
			scanner = &rs.Chains[i]
		}
	}
	if scanner == nil || len(scanner.Rules) != cfg.SIPScanner.SearchBytes-15 {
		t.Fatalf("sip_scanner chain has %d rules", len(scanner.Rules))
	}
	if r := scanner.Rules[215]; r.NFT != "@th,1784,128 @sip_scanner_ua" {
		t.Errorf("rule at offset 215 = %s", r.NFT)
	}
}

func TestHelpers(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Hour: "1h", 25 * time.Hour: "1d1h", 90 * time.Second: "1m30s", 0: "0s"} {
		if got := nftDuration(d); got != want {
			t.Errorf("nftDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for _, c := range []struct {
		ps   PortScan
		want Rate
	}{
		{PortScan{Ports: 10, Within: time.Minute}, Rate{10, "minute"}},
		{PortScan{Ports: 10, Within: 5 * time.Second}, Rate{2, "second"}},
		{PortScan{Ports: 20, Within: time.Hour}, Rate{20, "hour"}},
		{PortScan{Ports: 7, Within: 30 * time.Second}, Rate{14, "minute"}},
	} {
		if got := portScanRate(c.ps); got != c.want {
			t.Errorf("portScanRate(%+v) = %v, want %v", c.ps, got, c.want)
		}
	}
}

func TestGoldenPlan(t *testing.T) {
	data, err := os.ReadFile("testdata/pbxguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseDoc(t, string(data))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Source = "testdata/pbxguard.yaml"
	got, err := PlanText(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/plan.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update)", err)
	}
	if got != string(want) {
		t.Errorf("plan differs from %s:\n%s", golden, Diff("golden", "got", string(want), got))
	}
}

func TestIPTables(t *testing.T) {
	cfg := Default()
	cfg.Protections.Fragments = true
	v4, err := IPTables(cfg, "4")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"*filter\n:PBXGUARD-POLICY - [0:0]\n",
		`-p udp --dport 5060 -m string --algo bm --string "User-Agent: friendly-scanner" -m recent --name pbxguard-sipscan --set`,
		"-p tcp --tcp-flags ALL NONE",
		"-p tcp --tcp-flags FIN,PSH,URG FIN,PSH,URG",
		"-f -m comment",
		"--hashlimit-above 20/sec --hashlimit-burst 40 --hashlimit-mode srcip",
		"-m connlimit --connlimit-above 5 --connlimit-mask 32",
		"--rcheck --seconds 60 --hitcount 10",
		"-p udp --dport 10000:20000",
		"COMMIT\n",
	} {
		if !strings.Contains(v4, w) {
			t.Errorf("iptables text lacks %q", w)
		}
	}
	for _, l := range strings.Split(v4, "\n") {
		if strings.HasPrefix(l, "-A") && !strings.Contains(l, "-m comment --comment") {
			t.Errorf("rule without comment: %s", l)
		}
	}
	v6, err := IPTables(cfg, "6")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(v6, "--icmpv6-type neighbour-solicitation -m hl --hl-eq 255") || strings.Contains(v6, " -f ") || !strings.Contains(v6, "--connlimit-mask 128") {
		t.Error("ip6tables text wrong for IPv6")
	}
	cfg.PortScan.Ports = 30
	if _, err := IPTables(cfg, "4"); err == nil || !strings.Contains(err.Error(), "recent") {
		t.Errorf("ports above recent's memory accepted: %v", err)
	}
}

// TestDeployConfigPlanGolden keeps the example configuration that ships in
// deploy/ readable by the policy, and its plan is a golden file that a
// person has read (testdata/deploy-plan.golden; go test -run Deploy -update).
func TestDeployConfigPlanGolden(t *testing.T) {
	data, err := os.ReadFile("../../deploy/pbxguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseDoc(t, string(data))
	if err != nil {
		t.Fatalf("deploy/pbxguard.yaml: %v", err)
	}
	cfg.Source = "deploy/pbxguard.yaml"
	got, err := PlanText(cfg)
	if err != nil {
		t.Fatalf("deploy/pbxguard.yaml: %v", err)
	}
	const golden = "testdata/deploy-plan.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run Deploy -update)", err)
	}
	if got != string(want) {
		t.Errorf("plan differs from %s:\n%s", golden, Diff("golden", "got", string(want), got))
	}
}
