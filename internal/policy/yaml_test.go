package policy

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/confyaml"
)

func parseDoc(t *testing.T, src string) (*Config, error) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return FromDocument(&doc)
}

func TestFromYAMLNilGivesDefaults(t *testing.T) {
	cfg, err := FromYAML(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Input != "drop" || cfg.Services.SSH.Port != 22 || cfg.Services.AMI.From.Kind != FromLoopback ||
		cfg.Services.HTTP.From.Kind != FromTrusted || cfg.Services.RTP.UDP[0] != (PortRange{10000, 20000}) ||
		cfg.Services.SIP.RateLimit.Rate != (Rate{20, "second"}) || cfg.Services.SIP.RateLimit.Burst != 40 ||
		cfg.Protections.Fragments || !cfg.Protections.Null || !cfg.PortScan.Enabled || !cfg.SIPScanner.Enabled {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestFromDocumentTestdata(t *testing.T) {
	data, err := os.ReadFile("testdata/pbxguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseDoc(t, string(data))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Trusted.Hosts; len(got) != 2 || got[0] != netip.MustParseAddr("192.0.2.11") || got[1] != netip.MustParseAddr("2001:db8:a::11") {
		t.Errorf("trusted hosts = %v", got)
	}
	if len(cfg.Trusted.Allowlist) != 3 || cfg.Trusted.Allowlist[2] != netip.MustParsePrefix("192.0.2.10/32") {
		t.Errorf("allowlist = %v", cfg.Trusted.Allowlist)
	}
	if cfg.Trusted.Interfaces[0] != "wg0" {
		t.Errorf("interfaces = %v", cfg.Trusted.Interfaces)
	}
	h := cfg.Services.HTTPS
	if h.From.Kind != FromList || len(h.From.Prefixes) != 2 || h.From.Prefixes[1] != netip.MustParsePrefix("2001:db8:b::/48") {
		t.Errorf("https from = %+v", h.From)
	}
	sip := cfg.Services.SIP
	if len(sip.TCP) != 2 || sip.TCP[1] != (PortRange{5061, 5061}) || len(sip.UDP) != 1 {
		t.Errorf("sip ports tcp=%v udp=%v", sip.TCP, sip.UDP)
	}
	if !cfg.Protections.Fragments || cfg.SIPScanner.SearchBytes != 96 || cfg.SIPScanner.Ban != 24*time.Hour {
		t.Errorf("protections/scanner = %+v %+v", cfg.Protections, cfg.SIPScanner)
	}
	if c := cfg.Services.Custom; len(c) != 1 || c[0].Name != "tftp" || c[0].UDP[0] != (PortRange{69, 69}) || c[0].From.Kind != FromTrusted {
		t.Errorf("custom = %+v", c)
	}
	if cfg.Lines["trusted.hosts"] != 11 || cfg.Lines["policy"] != 7 {
		t.Errorf("lines: trusted.hosts=%d policy=%d", cfg.Lines["trusted.hosts"], cfg.Lines["policy"])
	}
}

func TestFromYAMLErrors(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string // substrings of the error
	}{
		{"unknown key", "firewall:\n  policy:\n    sshh: {}\n", []string{"line 3", "firewall.policy.sshh", "unknown key", "services"}},
		{"bad duration", "firewall:\n  policy:\n    port_scan:\n      ban: 1hr\n", []string{"line 4", "port_scan.ban", `"1hr" is not a duration`, "try 30s"}},
		{"bad port", "firewall:\n  policy:\n    services:\n      rtp: {ports: 20000-10000}\n", []string{"line 4", "services.rtp.ports", "low end first"}},
		{"bad address", "firewall:\n  policy:\n    trusted:\n      hosts: [192.0.2.300]\n", []string{"line 4", "trusted.hosts", "not an address"}},
		{"network as host", "firewall:\n  policy:\n    trusted:\n      hosts: [192.0.2.0/24]\n", []string{"is a network", "trusted.networks"}},
		{"host bits", "firewall:\n  policy:\n    trusted:\n      networks: [192.0.2.1/24]\n", []string{"host bits", "192.0.2.0/24"}},
		{"bad rate", "firewall:\n  policy:\n    services:\n      sip:\n        rate_limit: {rate: 20/sec0}\n", []string{"line 5", "not a rate", "20/second"}},
		{"bad input", "firewall:\n  policy:\n    input: reject\n", []string{"line 3", "input", "write drop"}},
		{"bad from", "firewall:\n  policy:\n    services:\n      ssh: {from: everyone}\n", []string{"line 4", "services.ssh.from", "any, trusted, loopback"}},
		{"custom without ports", "firewall:\n  policy:\n    services:\n      custom:\n        - {name: x}\n", []string{"line 5", "needs tcp: or udp:"}},
		{"custom dup", "firewall:\n  policy:\n    services:\n      custom:\n        - {name: ssh, tcp: 1}\n", []string{"already used"}},
		{"short ua", "firewall:\n  policy:\n    sip_scanner:\n      user_agents: [abc]\n", []string{"line 4", "4 to 64"}},
		{"bool", "firewall:\n  policy:\n    protections:\n      xmas: maybe\n", []string{"line 4", "protections.xmas", "true or false"}},
		{"allowlist", "allowlist: [nope]\n", []string{"line 1", "allowlist"}},
		{"dup key", "firewall:\n  policy:\n    input: drop\n    input: drop\n", []string{"appears twice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parseDoc(t, c.src)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestSwitches(t *testing.T) {
	cfg, err := parseDoc(t, `firewall:
  policy:
    protections: {syn_flood: false, icmp_echo: false, ssh_conn_limit: false, null: false}
    port_scan: false
    sip_scanner: false
    services:
      sip: {rate_limit: false, tls: 0}
      http: {enabled: false}
`)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Protections
	if p.SynFlood.Enabled || p.ICMPEcho.Enabled || p.SSHConnLimit != 0 || p.Null || cfg.PortScan.Enabled || cfg.SIPScanner.Enabled ||
		cfg.Services.SIP.RateLimit.Enabled || len(cfg.Services.SIP.TLS) != 0 || cfg.Services.HTTP.Enabled {
		t.Fatalf("switches not applied: %+v", cfg)
	}
	if len(cfg.Services.SIP.TCP) != 1 || cfg.Services.SIP.TCP[0].Lo != 5060 {
		t.Fatalf("sip tcp = %v (tls off should leave 5060 only)", cfg.Services.SIP.TCP)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"30s": 30 * time.Second, "1h30m": 90 * time.Minute, "1d": 24 * time.Hour, "1w": 168 * time.Hour} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1hr", "h", "10", "-1s"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

func FuzzFromYAML(f *testing.F) {
	data, _ := os.ReadFile("testdata/pbxguard.yaml")
	f.Add(string(data))
	f.Add("firewall: {policy: {services: {custom: [{name: a, tcp: 1-2}]}}}")
	f.Fuzz(func(t *testing.T, src string) {
		var doc yaml.Node
		if yaml.Unmarshal([]byte(src), &doc) != nil {
			return
		}
		cfg, err := FromDocument(&doc)
		if err != nil {
			return
		}
		if _, err := Compile(cfg); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("compile error without ErrInvalid: %v", err)
		}
	})
}

// Every mistake of the section in one pass (issue 10 point 3): the old
// walker stopped at the first.
func TestFromYAMLReportsEveryError(t *testing.T) {
	_, err := parseDoc(t, `firewall:
  policy:
    input: reject
    services:
      ssh: {port: 22, from: everyone}
      custom:
        - {name: x}
        - {name: y, tcp: 70000}
    protections:
      xmas: maybe
    port_scan: {ban: 18446744074s}
    sip_scaner: {}
`)
	var es confyaml.Errors
	if !errors.As(err, &es) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v (want confyaml.Errors matching ErrInvalid)", err)
	}
	want := []string{
		`config: line 3: firewall.policy.input: "reject" is not a policy`,
		`config: line 5: firewall.policy.services.ssh.from: expected any, trusted, loopback`,
		`config: line 7: firewall.policy.services.custom[0]: a custom service needs tcp: or udp: ports`,
		`config: line 8: firewall.policy.services.custom[1].tcp: "70000" is not a port`,
		`config: line 10: firewall.policy.protections.xmas: "maybe" is not true or false`,
		`config: line 11: firewall.policy.port_scan.ban: "18446744074s" is out of range`,
		`config: line 12: firewall.policy.sip_scaner: unknown key (did you mean "sip_scanner"?)`,
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(es[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, es[i].Error(), w)
		}
	}
}
