package fraud

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func parseFraudYAML(t *testing.T, src string) (*Settings, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	return ParseSettings(&n)
}

func TestAGISettings(t *testing.T) {
	rates := filepath.Join(t.TempDir(), "rates.csv")
	if err := os.WriteFile(rates, []byte("GB,0.02\n+88213,4.50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := parseFraudYAML(t, "country: US\ntrunks: [carrier]\nwindow: 5m\nagi:\n  listen: 127.0.0.1:4573\n  timeout: 1s\n"+
		"  trusted_endpoints: [1001, PJSIP/1002]\n  new_address: false\n  intl_per_window: 3\n  spend_per_window: 20\n  rates: "+rates+"\n")
	if err != nil {
		t.Fatal(err)
	}
	a := s.AGI
	if a == nil || a.Listen != "127.0.0.1:4573" || a.Timeout != time.Second || strings.Join(a.Trusted, ",") != "1001,PJSIP/1002" ||
		a.Decide.NewAddress || a.Decide.IntlPerWindow != 3 || a.Decide.SpendPerWindow != 20 || a.Decide.Rates == nil {
		t.Fatalf("agi = %+v", a)
	}
	d, err := s.Decider([]string{"9999"})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	if c.Window != 5*time.Minute || strings.Join(c.Trusted, ",") != "1001,PJSIP/1002" || c.Trunks[0] != "carrier" || !c.DenySatellite || !c.DenyPremium {
		t.Errorf("decider config = %+v", c)
	}

	if !a.Allowed(netip.MustParseAddr("127.0.0.1")) || !a.Allowed(netip.MustParseAddr("::ffff:127.0.0.1")) || a.Allowed(netip.MustParseAddr("192.0.2.10")) {
		t.Errorf("default allow_from: %v", a.AllowFrom)
	}
	s2, err := parseFraudYAML(t, "country: US\nagi: {listen: \"0.0.0.0:4573\", allow_from: [192.0.2.10, 198.51.100.0/24]}\n")
	if err != nil {
		t.Fatal(err)
	}
	if a := s2.AGI; !a.Allowed(netip.MustParseAddr("192.0.2.10")) || !a.Allowed(netip.MustParseAddr("198.51.100.7")) || a.Allowed(netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("allow_from: %v", a.AllowFrom)
	}
	// Without trusted_endpoints: the audit's list; new_address on by default.
	s, err = parseFraudYAML(t, "country: US\nagi: {listen: \"[::1]:4573\"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if s.AGI.Trusted != nil || !s.AGI.Decide.NewAddress || s.AGI.Timeout != 2*time.Second {
		t.Errorf("defaults: %+v", s.AGI)
	}
	d, _ = s.Decider([]string{"1001"})
	if strings.Join(d.Config().Trusted, ",") != "1001" {
		t.Errorf("trusted = %v, want the audit's", d.Config().Trusted)
	}
	if s, _ := parseFraudYAML(t, "country: US\n"); s.AGI != nil {
		t.Errorf("no agi: key gives %+v", s.AGI)
	}
}

func TestAGISettingsErrors(t *testing.T) {
	for src, want := range map[string]string{
		"country: US\nagi: {listen: 4573}\n":                                         `line 2: fraud.agi.listen: "4573" is not host:port`,
		"country: US\nagi: {timeout: 2s}\n":                                          `line 2: fraud.agi.listen: missing`,
		"country: US\nagi: {listen: \"127.0.0.1:4573\", lisen: x}\n":                 `fraud.agi.lisen: unknown key`,
		"country: US\nagi:\n  listen: 127.0.0.1:4573\n  international: some\n":       `line 4: fraud.agi.international: "some": write trusted`,
		"country: US\nagi:\n  listen: 127.0.0.1:4573\n  intl_per_window: -1\n":       `line 4: fraud.agi.intl_per_window: "-1" is not a number from 1`,
		"country: US\nagi:\n  listen: 127.0.0.1:4573\n  rates: /nonexistent/r.csv\n": `fraud.agi.rates: open /nonexistent/r.csv`,
		"country: US\nagi:\n  listen: 127.0.0.1:4573\n  trusted_endpoints: 1001\n":   `fraud.agi.trusted_endpoints: expected a list`,
		"country: US\nagi: [a]\n":                                                    `fraud.agi: expected a mapping`,
	} {
		_, err := parseFraudYAML(t, src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", src, err, want)
		}
	}
}
