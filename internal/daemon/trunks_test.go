package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/firewall"
)

func TestAsteriskTrunksCorpus(t *testing.T) {
	trunks, skipped, err := AsteriskTrunks(corpusEtc)
	if err != nil {
		t.Fatal(err)
	}
	// The carrier is identified by its address in pjsip.conf; the chan_sip
	// and IAX peers all register (host = dynamic): nothing else.
	want := Trunk{Prefix: netip.MustParsePrefix("203.0.113.250/32"), Section: "carrier", Kind: "pjsip identify", At: "pjsip.conf:117"}
	if len(trunks) != 1 || trunks[0] != want || len(skipped) != 0 {
		t.Fatalf("trunks %+v, skipped %+v; want only %+v", trunks, skipped, want)
	}
	if _, _, err := AsteriskTrunks("/nonexistent/asterisk"); err == nil {
		t.Fatal("no error for a missing directory")
	}
}

func TestAsteriskTrunksNearMisses(t *testing.T) {
	fsys := fstest.MapFS{
		"pjsip.conf": {Data: []byte(`[tmpl](!)
type = identify
match = 192.0.2.99
[office](tmpl)
endpoint = office
[carrier2]
type = identify
endpoint = carrier2
match = 198.51.100.0/255.255.255.240, [2001:db8:5::10]:5060
match = sip.carrier.example
match = 0.0.0.0/0
match = !198.51.100.7
;match = 203.0.113.1
#include pjsip_more.conf
[carrier2]
type = aor
contact = sip:203.0.113.2
match = 203.0.113.3
[ep]
type = endpoint
match = 203.0.113.4
`)},
		"pjsip_more.conf": {Data: []byte("match = 192.0.2.77:5070\n")},
		"sip.conf": {Data: []byte(`[general]
host = 192.0.2.200
[phone]
type = friend
host = dynamic
[trunk]
type = peer
host = 198.51.100.50
[trunk2]
type = peer
host = sip.example.net
[trunk3](!)
host = 198.51.100.60
`)},
		"iax.conf": {Data: []byte("[general]\nbindport = 4569\n[iaxtrunk]\ntype = friend\nhost = 2001:db8:77::5\n")},
	}
	trunks, skipped := asteriskTrunks(fsys)
	var got []string
	for _, tr := range trunks {
		got = append(got, fmt.Sprintf("%s %s %s %s", tr.Prefix, tr.Section, tr.Kind, tr.At))
	}
	want := []string{
		"192.0.2.99/32 office pjsip identify pjsip.conf:3", // inherited from the template, not the template itself
		"198.51.100.0/28 carrier2 pjsip identify pjsip.conf:9",
		"2001:db8:5::10/128 carrier2 pjsip identify pjsip.conf:9",
		"192.0.2.77/32 carrier2 pjsip identify pjsip_more.conf:1", // through #include, position of the included file
		"198.51.100.50/32 trunk sip peer sip.conf:8",
		"2001:db8:77::5/128 iaxtrunk iax peer iax.conf:5",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("trunks:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var sk []string
	for _, s := range skipped {
		sk = append(sk, fmt.Sprintf("%s %s %s", s.Value, s.At, strings.SplitN(s.Why, ":", 2)[0]))
	}
	wantSk := []string{
		"sip.carrier.example pjsip.conf:10 a hostname",
		"0.0.0.0/0 pjsip.conf:11 wider than /16 (IPv4) or /32 (IPv6)",
		"!198.51.100.7 pjsip.conf:12 an excluded (!) entry",
		"sip.example.net sip.conf:11 a hostname",
	}
	if strings.Join(sk, "\n") != strings.Join(wantSk, "\n") {
		t.Errorf("skipped:\n%s\nwant:\n%s", strings.Join(sk, "\n"), strings.Join(wantSk, "\n"))
	}
}

func TestTrunkPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.250":             "203.0.113.250/32",
		"203.0.113.250:5060":        "203.0.113.250/32",
		"203.0.113.0/24":            "203.0.113.0/24",
		"203.0.113.9/24":            "203.0.113.0/24",
		"203.0.113.0/255.255.255.0": "203.0.113.0/24",
		"2001:db8::7":               "2001:db8::7/128",
		"[2001:db8::7]":             "2001:db8::7/128",
		"[2001:db8::7]:5061":        "2001:db8::7/128",
		"2001:db8:1::/48":           "2001:db8:1::/48",
		"::ffff:192.0.2.1":          "192.0.2.1/32",
		"10.0.0.0/8":                "", // too wide
		"2001:db8::/16":             "", // too wide
		"192.0.2.0/255.0.255.0":     "", // not contiguous
		"192.0.2.1:99999":           "", // bad port
		"[2001:db8::7":              "", // no ]
		"pbx.example.com":           "", // hostname
		"pbx.example.com:5060":      "", // hostname
		"!192.0.2.1":                "", // excluded
		"192.0.2.1/33":              "", // bad mask
	} {
		p, why := trunkPrefix(in)
		got := ""
		if why == "" {
			got = p.String()
		}
		if got != want || (want == "" && why == "") {
			t.Errorf("trunkPrefix(%q) = %q (why %q), want %q", in, got, why, want)
		}
	}
}

// TestBuildAllowlistsTrunks: with the corpus configuration, the carrier
// can be neither banned by hand nor by its jail, its neighbour can, and
// the log says where the entry came from. With the option off, the
// carrier is bannable.
func TestBuildAllowlistsTrunks(t *testing.T) {
	etc, _ := filepath.Abs(corpusEtc)
	ctx := context.Background()
	b, logs := buildWith(t, fmt.Sprintf("audit: {enabled: false, asterisk_dir: %s}\n", etc))
	_, err := b.Ban(ctx, netip.MustParsePrefix("203.0.113.250/32"), time.Hour, "", "")
	if !errors.Is(err, ErrAllowlisted) || !strings.Contains(err.Error(), "entry 203.0.113.250/32") {
		t.Fatalf("ban of the carrier: %v, want refused as allowlisted", err)
	}
	if _, err := b.Ban(ctx, netip.MustParsePrefix("203.0.113.0/24"), time.Hour, "", ""); !errors.Is(err, ErrAllowlisted) {
		t.Fatalf("ban of the carrier's /24: %v, want refused", err)
	}
	if _, err := b.Ban(ctx, netip.MustParsePrefix("203.0.113.251/32"), time.Hour, "", ""); err != nil {
		t.Fatalf("ban of the carrier's neighbour: %v", err)
	}
	want := fmt.Sprintf(`msg="allowlisted an asterisk trunk" component=trunks prefix=203.0.113.250/32 section=carrier kind="pjsip identify" at=%s/pjsip.conf:117`, etc)
	if !strings.Contains(logs.String(), want) {
		t.Fatalf("log lacks %q:\n%s", want, logs.String())
	}

	b, logs = buildWith(t, fmt.Sprintf("audit: {enabled: false, asterisk_dir: %s}\nallowlist_asterisk_trunks: false\n", etc))
	if _, err := b.Ban(ctx, netip.MustParsePrefix("203.0.113.250/32"), time.Hour, "", ""); err != nil {
		t.Fatalf("option off: ban of the carrier: %v", err)
	}
	if strings.Contains(logs.String(), "trunk") {
		t.Fatalf("option off, yet trunks read:\n%s", logs.String())
	}

	_, logs = buildWith(t, "audit: {enabled: false, asterisk_dir: /nonexistent/asterisk}\n")
	if !strings.Contains(logs.String(), `level=WARN msg="asterisk trunks not allowlisted: cannot read the configuration"`) {
		t.Fatalf("no warning for an unreadable directory:\n%s", logs.String())
	}
}

// Allowlist is the one allowlist: configured entries with their line, the
// host's addresses, loopback, and the trunks with file:line; Build's gate
// refuses a trunk like any other entry.
func TestOneAllowlist(t *testing.T) {
	dir := t.TempDir()
	etc, _ := filepath.Abs(corpusEtc)
	path := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(path, []byte("state_dir: "+dir+"/state\nfirewall: {backend: dry-run}\ncontrol: {socket: "+dir+"/ctl.sock}\nmetrics: {listen: \"\"}\naudit: {asterisk_dir: "+etc+"}\nallowlist:\n  - 198.51.100.0/24\njails:\n  asterisk:\n    files: ["+dir+"/m.log]\n"), 0o600)
	cfg, err := config.Load(path, config.Options{HostPrefixes: func() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("192.0.2.5/32")} }})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range Allowlist(cfg, nil) {
		got[e.Prefix.String()] = e.From
	}
	want := map[string]string{
		"127.0.0.0/8":      "loopback",
		"::1/128":          "loopback",
		"198.51.100.0/24":  "allowlist (" + path + ":7)",
		"203.0.113.250/32": etc + "/pjsip.conf:117 [carrier] pjsip identify",
	}
	for p, from := range want {
		if got[p] != from {
			t.Errorf("%s: from %q, want %q", p, got[p], from)
		}
	}
	if _, ok := got["192.0.2.5/32"]; !ok {
		t.Errorf("host address missing: %v", got)
	}
	b, err := Build(cfg, BuildOptions{Backend: firewall.NewDryRun(firewall.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Ban(context.Background(), netip.MustParsePrefix("203.0.113.250/32"), time.Hour, "", ""); !errors.Is(err, ErrAllowlisted) {
		t.Fatalf("ban of the trunk: %v, want refused as allowlisted", err)
	}
}
