package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// firewall plan puts the daemon's allowlist, with the trunk that pjsip.conf
// identifies, in the SIP trusted set, and says where each entry comes from.
func TestFirewallPlanTrustsTrunksForSIP(t *testing.T) {
	etc, err := filepath.Abs("../../testdata/corpus/asterisk-20/etc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(path, []byte("audit: {asterisk_dir: "+etc+"}\nstate_dir: "+dir+"\nallowlist:\n  - 192.0.2.50\njails:\n  asterisk:\n    files: ["+dir+"/m.log]\n"), 0o600)
	out, code := runCmd(t, "firewall", "plan", "--config", path, "--no-diff")
	if code != exitOK {
		t.Fatalf("plan: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"set sip_trusted4 {",
		"#   203.0.113.250/32: " + etc + "/pjsip.conf:117 [carrier] pjsip identify",
		"#   192.0.2.50/32: allowlist (" + path + ":4)",
		"ip saddr @sip_trusted4 udp dport 5060 counter accept",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("plan:\n%s", out)
	}
	out, code = runCmd(t, "firewall", "plan", "--config", path, "--format", "iptables")
	if code != exitOK || !strings.Contains(out, "-s 203.0.113.250/32 -p udp --dport 5060 -m comment --comment \"sip-trusted-udp") {
		t.Fatalf("iptables plan (exit %d) lacks the trunk:\n%s", code, out)
	}
}
