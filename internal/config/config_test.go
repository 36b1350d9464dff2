package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/event"
)

func testOpts(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	return Options{
		LoggerConf:   filepath.Join(dir, "logger.conf"), // absent
		AsteriskConf: filepath.Join(dir, "asterisk.conf"),
		AsteriskLogs: filepath.Join(dir, "log"),
		AuthLog:      filepath.Join(dir, "auth.log"),
		HostPrefixes: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32")} },
		HaveJournal:  func() bool { return true },
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"1h", time.Hour, false},
		{"30m", 30 * time.Minute, false},
		{"1w", 7 * 24 * time.Hour, false},
		{"1d", 24 * time.Hour, false},
		{"1w2d3h", 9*24*time.Hour + 3*time.Hour, false},
		{"3600", time.Hour, false},
		{"90s", 90 * time.Second, false},
		{"1hr", 0, true},
		{"", 0, true},
		{"-5m", 0, true},
		{"w", 0, true},
	} {
		got, err := ParseDuration(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
	}
	for d, want := range map[time.Duration]string{time.Hour: "1h", 90 * time.Second: "1m30s", 8 * 24 * time.Hour: "1w1d", 30 * time.Second: "30s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestIssueExampleParses(t *testing.T) {
	src := `state_dir: /var/lib/pbxguard          # SQLite store and offsets
allowlist: [127.0.0.0/8, "::1"]
firewall: {backend: auto}             # nftables | ipset | iptables | dry-run | auto
control: {socket: /run/pbxguard/pbxguard.sock}
metrics: {listen: "127.0.0.1:9469"}
jails:
  asterisk:
    detector: asterisk
    files: [/var/log/asterisk/messages.log, /var/log/asterisk/security.log]
    maxretry: 5
    findtime: 10m
    bantime: 1h
`
	c, err := Parse([]byte(src), testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jails) != 1 || c.Jails[0].Name != "asterisk" {
		t.Fatalf("jails = %+v", c.Jails)
	}
	j := c.Jails[0]
	if j.MaxRetry != 5 || j.FindTime != 10*time.Minute || j.BanTime != time.Hour || len(j.Files) != 2 {
		t.Fatalf("jail = %+v", j)
	}
	if len(j.Weights) != 0 {
		t.Fatalf("weights = %v (want the jail's defaults)", j.Weights)
	}
	if c.Firewall.Backend != "auto" || c.Control.Socket != "/run/pbxguard/pbxguard.sock" || c.Metrics.Listen != "127.0.0.1:9469" {
		t.Fatalf("config = %+v", c)
	}
	want := map[string]bool{"127.0.0.0/8": true, "::1/128": true, "192.0.2.5/32": true}
	for _, p := range c.Allowlist {
		delete(want, p.String())
	}
	if len(want) != 0 {
		t.Fatalf("allowlist %v misses %v", c.Allowlist, want)
	}
}

func TestErrorsCarryLinesAndHints(t *testing.T) {
	src := `state_dir: /var/lib/pbxguard
firewal: {backend: auto}
firewall: {backend: nftable}
jails:
  asterisk:
    maxretry: five
    findtime: 10m
    bantime: 1hr
    bantiem: 1h
    weights: {scna: 3, scan: 2}
allowlist: [not-an-ip]
metrics: {listen: nonsense}
`
	_, err := Parse([]byte(src), testOpts(t))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v, want Errors", err)
	}
	got := es.Error()
	for _, want := range []string{
		`config: line 2: firewal: unknown key (did you mean "firewall"?)`,
		`config: line 3: firewall.backend: "nftable" is not one of nftables, ipset, iptables, dry-run, auto (did you mean "nftables"?)`,
		`config: line 6: jails.asterisk.maxretry: "five" is not a whole number`,
		`config: line 8: jails.asterisk.bantime: "1hr" is not a duration (try 1h, 30m, 1w)`,
		`config: line 9: jails.asterisk.bantiem: unknown key (did you mean "bantime"?)`,
		`config: line 10: jails.asterisk.weights.scna: unknown event kind (did you mean "scan"?)`,
		`config: line 11: allowlist: "not-an-ip" is not an address or prefix`,
		`config: line 12: metrics.listen: "nonsense" is not host:port`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q\ngot:\n%s", want, got)
		}
	}
	c2, err := Parse([]byte("jails:\n  asterisk:\n    weights: {scan: 2, challenge_sent: 0}\n"), testOpts(t))
	if err != nil || c2.Jails[0].Weights[event.Scan] != 2 || len(c2.Jails[0].Weights) != 2 {
		t.Fatalf("weights: %v %v", c2.Jails[0].Weights, err)
	}
	if len(es) != 8 {
		t.Errorf("got %d errors, want 8:\n%s", len(es), got)
	}
}

func TestYAMLSyntaxError(t *testing.T) {
	_, err := Parse([]byte("jails:\n  asterisk:\n bantime: 1h\n  x: : y\n"), testOpts(t))
	if err == nil || !strings.Contains(err.Error(), "line") {
		t.Fatalf("err = %v", err)
	}
}

func TestDefaultsReadLoggerConf(t *testing.T) {
	opts := testOpts(t)
	os.WriteFile(opts.LoggerConf, []byte(`[general]
dateformat=%F %T
[logfiles]
console => notice,warning,error
messages.log => notice,warning,error
full => notice,warning,error,verbose,dtmf,debug
syslog.local0 => notice,warning,error,security
`), 0o644)
	c, err := Default(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jails) != 2 || c.Jails[0].Name != "asterisk" || c.Jails[1].Name != "sshd" {
		t.Fatalf("jails = %+v", c.Jails)
	}
	a := c.Jails[0]
	if len(a.Files) != 1 || a.Files[0] != filepath.Join(opts.AsteriskLogs, "messages.log") {
		t.Fatalf("asterisk files = %v (want only messages.log: full repeats it)", a.Files)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "security.log => security") {
		t.Fatalf("warnings = %q", c.Warnings)
	}
	if a.MaxRetry != 5 || a.FindTime != 10*time.Minute || a.BanTime != time.Hour || a.MaxBanTime != 7*24*time.Hour || a.Increment != 2 {
		t.Fatalf("asterisk defaults = %+v", a)
	}
	s := c.Jails[1]
	if len(s.Files) != 0 || len(s.Journal) == 0 {
		t.Fatalf("sshd without auth.log should use the journal: %+v", s)
	}

	// Older Asterisk: "messages", and a security channel.
	os.WriteFile(opts.LoggerConf, []byte("[logfiles]\nmessages => notice,warning,error\nsecurity => security\nfull => *\n"), 0o644)
	os.WriteFile(opts.AuthLog, nil, 0o644)
	c, err = Default(opts)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(opts.AsteriskLogs, "messages"), filepath.Join(opts.AsteriskLogs, "security")}
	if strings.Join(c.Jails[0].Files, ",") != strings.Join(want, ",") {
		t.Fatalf("files = %v, want %v", c.Jails[0].Files, want)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("warnings = %q", c.Warnings)
	}
	if c.Jails[1].Files[0] != opts.AuthLog {
		t.Fatalf("sshd = %+v", c.Jails[1])
	}
}

func TestCorpusLoggerConf(t *testing.T) {
	logs := readLoggerConf("../../testdata/corpus/asterisk-20/etc/logger.conf", "/var/log/asterisk")
	if !logs.Found {
		t.Fatalf("testdata/corpus/asterisk-20/etc/logger.conf was not read: %+v", logs)
	}
	if strings.Join(logs.Files, ",") != "/var/log/asterisk/messages,/var/log/asterisk/security" || !logs.Security {
		t.Fatalf("logs = %+v", logs)
	}
}

func TestRawSectionsKept(t *testing.T) {
	c, err := Parse([]byte("firewall:\n  policy:\n    default: drop\nfraud:\n  rules: [a]\njails: {}\n"), testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Firewall.Policy == nil || c.Firewall.Policy.Line != 3 || c.Fraud == nil {
		t.Fatalf("policy=%v fraud=%v", c.Firewall.Policy, c.Fraud)
	}
	var m map[string]any
	if err := c.Fraud.Decode(&m); err != nil || m["rules"] == nil {
		t.Fatalf("fraud decode: %v %v", m, err)
	}
}

func TestMisspelledJailName(t *testing.T) {
	_, err := Parse([]byte("jails:\n  asterisc:\n    maxretry: 3\n"), testOpts(t))
	if err == nil || !strings.Contains(err.Error(), `did you mean the "asterisk" jail?`) {
		t.Fatalf("err = %v", err)
	}
}

func TestJailWithoutSourceIsError(t *testing.T) {
	_, err := Parse([]byte("jails:\n  custom:\n    maxretry: 3\n"), testOpts(t))
	if err == nil || !strings.Contains(err.Error(), "line 2: jails.custom: has no files and no journal") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("jails:\n  asterisk:\n    bantime: 1h\n"))
	f.Add([]byte("allowlist: [1.2.3.4, \"::1\"]\nfirewall: {backend: auto}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := Options{LoggerConf: "/nonexistent", AsteriskConf: "/nonexistent", AsteriskLogs: "/nonexistent",
			AuthLog: "/nonexistent", HostPrefixes: func() []netip.Prefix { return nil }, HaveJournal: func() bool { return false }}
		Parse(data, opts)
	})
}

func TestDeployExampleIsValid(t *testing.T) {
	c, err := Load("../../deploy/pbxguard.yaml", testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jails) != 2 || c.Jails[0].IPv6Prefix != 64 || c.Jails[0].Weights[event.Scan] != 5 || c.Jails[1].Journal == nil {
		t.Fatalf("deploy example = %+v", c.Jails)
	}
	for _, p := range c.Allowlist {
		if p.String() == "127.0.0.1/32" {
			t.Fatalf("allowlist keeps 127.0.0.1 inside 127.0.0.0/8: %v", c.Allowlist)
		}
	}
}

func TestMergePrefixes(t *testing.T) {
	var in []netip.Prefix
	for _, s := range []string{"127.0.0.1/32", "127.0.0.0/8", "::1/128", "192.0.2.0/24", "192.0.2.0/24", "192.0.2.7/32", "2001:db8::1/128"} {
		in = append(in, netip.MustParsePrefix(s))
	}
	var got []string
	for _, p := range mergePrefixes(in) {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "127.0.0.0/8 ::1/128 192.0.2.0/24 2001:db8::1/128" {
		t.Fatalf("merged = %v", got)
	}
}

func TestAuditSection(t *testing.T) {
	c, err := Parse(nil, testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Audit.Enabled || c.Audit.AsteriskDir != "/etc/asterisk" || len(c.Audit.TrustedEndpoints) != 0 || !c.AllowlistAsteriskTrunks {
		t.Fatalf("defaults: audit %+v, allowlist_asterisk_trunks %v", c.Audit, c.AllowlistAsteriskTrunks)
	}
	c, err = Parse([]byte("audit:\n  enabled: false\n  asterisk_dir: /srv/pbx/etc\n  trusted_endpoints: [1001, PJSIP/carrier]\nallowlist_asterisk_trunks: no\n"), testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit.Enabled || c.Audit.AsteriskDir != "/srv/pbx/etc" || strings.Join(c.Audit.TrustedEndpoints, ",") != "1001,PJSIP/carrier" || c.AllowlistAsteriskTrunks {
		t.Fatalf("set: audit %+v, allowlist_asterisk_trunks %v", c.Audit, c.AllowlistAsteriskTrunks)
	}
	for src, want := range map[string]string{
		"audit:\n  asterisk_dir: etc/asterisk\n":  `config: line 2: audit.asterisk_dir: "etc/asterisk" is not an absolute path`,
		"audit:\n  asterisk-dir: /etc/asterisk\n": `config: line 2: audit.asterisk-dir: unknown key (did you mean "asterisk_dir"?)`,
		"audit:\n  enabled: maybe\n":              `config: line 2: audit.enabled: "maybe" is not true or false`,
		"allowlist_asterisk_trunks: sometimes\n":  `config: line 1: allowlist_asterisk_trunks: "sometimes" is not true or false`,
		"audit:\n  trusted_endpoints: {a: b}\n":   `config: line 2: audit.trusted_endpoints: expected a list`,
	} {
		_, err := Parse([]byte(src), testOpts(t))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: error %v, want prefix %q", src, err, want)
		}
	}
}

// Issue 16: 18446744074 seconds overflowed into a 288 ms ban and config
// check printed "0s"; every out-of-range duration is an error.
func TestDurationOutOfRange(t *testing.T) {
	for _, in := range []string{"18446744074", "3651d", "600w", "9999999999999h"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
	_, err := Parse([]byte("jails:\n  asterisk:\n    files: [/var/log/x]\n    bantime: 18446744074\n    maxbantime: 600w\n"), testOpts(t))
	for _, want := range []string{
		`config: line 4: jails.asterisk.bantime: "18446744074" is out of range (at most 521w3d)`,
		`config: line 5: jails.asterisk.maxbantime: "600w" is out of range (at most 521w3d)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// Issue 12: logger.conf is read from audit.asterisk_dir (wherever the
// audit: section is in the file), not always from /etc/asterisk, and so is
// asterisk.conf's astlogdir.
func TestLoggerConfFromAsteriskDir(t *testing.T) {
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "logger.conf"), []byte("[logfiles]\nmessages.log => notice,warning,error\nsecurity.log => security\n"), 0o600)
	os.WriteFile(filepath.Join(etc, "asterisk.conf"), []byte("[directories](!)\nastlogdir => /srv/log/asterisk\n"), 0o600)
	opts := testOpts(t)
	opts.LoggerConf, opts.AsteriskConf, opts.AsteriskLogs = "", "", ""
	c, err := Parse([]byte("jails:\n  asterisk: {maxretry: 3}\naudit:\n  asterisk_dir: "+etc+"\n"), opts)
	if err != nil {
		t.Fatal(err)
	}
	want := "/srv/log/asterisk/messages.log,/srv/log/asterisk/security.log"
	if got := strings.Join(c.Jails[0].Files, ","); got != want || len(c.Warnings) != 0 {
		t.Fatalf("files %s, warnings %q; want %s and no warning", got, c.Warnings, want)
	}

	// A missing logger.conf is reported as missing, not as "security log off".
	empty := t.TempDir()
	c, err = Parse([]byte("audit: {asterisk_dir: "+empty+"}\n"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "jail asterisk: Asterisk's "+empty+"/logger.conf is missing or unreadable (is audit.asterisk_dir right?)") ||
		strings.Contains(c.Warnings[0], "security log is off") {
		t.Fatalf("warnings = %q", c.Warnings)
	}
}

// Issue 12: the sample config sets no files: or journal: (they turn
// logger.conf discovery off for anyone who installs it as told).
func TestDeploySampleLeavesDiscoveryOn(t *testing.T) {
	data, err := os.ReadFile("../../deploy/pbxguard.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Jails map[string]map[string]any `yaml:"jails"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for name, j := range doc.Jails {
		for _, k := range []string{"files", "journal"} {
			if _, ok := j[k]; ok {
				t.Errorf("deploy/pbxguard.yaml sets jails.%s.%s: discovery is off for whoever installs it", name, k)
			}
		}
	}
	etc := t.TempDir()
	os.WriteFile(filepath.Join(etc, "logger.conf"), []byte("[logfiles]\nmessages => notice,warning,error\nsecurity => security\n"), 0o600)
	opts := testOpts(t)
	opts.LoggerConf = filepath.Join(etc, "logger.conf")
	c, err := Load("../../deploy/pbxguard.yaml", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Jails[0].Files, ","); got != opts.AsteriskLogs+"/messages,"+opts.AsteriskLogs+"/security" {
		t.Fatalf("asterisk jail of the sample follows %s, not what logger.conf says", got)
	}
}
