package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const procTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100A8C0:0016 0A0200C0:D431 01 00000000:00000000 02:00000000 00000000     0        0 2 4 0 20 4 30 10 -1
   2: 0100A8C0:0050 0B0200C0:D432 01 00000000:00000000 02:00000000 00000000     0        0 3 4 0 20 4 30 10 -1
   3: 0100A8C0:0016 0C0200C0:D433 06 00000000:00000000 02:00000000 00000000     0        0 4 4 0 20 4 30 10 -1
`

const procTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: B80D0120000000000000000001000000:0016 B80D0120000000000000000010000000:C350 01 00000000:00000000 02:00000000 00000000     0        0 5 4 0 20 4 30 10 -1
   1: 0000000000000000FFFF00000100A8C0:0016 0000000000000000FFFF00000D0200C0:C351 01 00000000:00000000 02:00000000 00000000     0        0 6 4 0 20 4 30 10 -1
`

func TestParseProcNetTCP(t *testing.T) {
	got := ParseProcNetTCP([]byte(procTCP), "/proc/net/tcp", 22)
	if len(got) != 1 || got[0].Client != netip.MustParseAddr("192.0.2.10") || got[0].Port != 22 {
		t.Fatalf("tcp sessions = %v (want only the established one to port 22)", got)
	}
	got = ParseProcNetTCP([]byte(procTCP6), "/proc/net/tcp6", 22)
	if len(got) != 2 || got[0].Client != netip.MustParseAddr("2001:db8::10") || got[1].Client != netip.MustParseAddr("192.0.2.13") {
		t.Fatalf("tcp6 sessions = %v", got)
	}
	if got := ParseProcNetTCP([]byte("garbage\nmore garbage here 01\n"), "x", 22); len(got) != 0 {
		t.Fatalf("garbage gave %v", got)
	}
}

func TestParseSSHConnection(t *testing.T) {
	s, ok := ParseSSHConnection("2001:db8::10 51234 2001:db8::1 2222")
	if !ok || s.Client != netip.MustParseAddr("2001:db8::10") || s.Port != 2222 {
		t.Fatalf("got %v %v", s, ok)
	}
	for _, bad := range []string{"", "1.2.3.4 1 2", "x 1 2 3", "1.2.3.4 1 2.2.2.2 99999"} {
		if _, ok := ParseSSHConnection(bad); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestCheckLockout(t *testing.T) {
	src := "firewall:\n  policy:\n    trusted:\n      hosts: [192.0.2.99]\n    services:\n      ssh: {from: trusted}\n"
	cfg, err := parseDoc(t, src)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Source = "/etc/pbxguard/pbxguard.yaml"
	sessions := []Session{
		{Client: netip.MustParseAddr("192.0.2.10"), Port: 22, Via: "SSH_CONNECTION"},
		{Client: netip.MustParseAddr("192.0.2.10"), Port: 22, Via: "/proc/net/tcp"},
		{Client: netip.MustParseAddr("192.0.2.99"), Port: 22, Via: "/proc/net/tcp"},
		{Client: netip.MustParseAddr("2001:db8::10"), Port: 22, Via: "/proc/net/tcp6"},
	}
	got := CheckLockout(cfg, sessions)
	if len(got) != 2 {
		t.Fatalf("lockouts = %+v, want 192.0.2.10 and 2001:db8::10", got)
	}
	if got[0].Session.Client != netip.MustParseAddr("192.0.2.10") ||
		got[0].Fix != "add 192.0.2.10 to the list firewall.policy.trusted.hosts (line 4 of /etc/pbxguard/pbxguard.yaml)" {
		t.Errorf("fix = %q", got[0].Fix)
	}
	if !strings.Contains(got[1].Fix, `"2001:db8::10"`) {
		t.Errorf("IPv6 fix not quoted: %q", got[1].Fix)
	}
	// a block list gets a line to add
	cfg, _ = parseDoc(t, "firewall:\n  policy:\n    trusted:\n      hosts:\n        - 192.0.2.99\n    services: {ssh: {from: trusted}}\n")
	cfg.Source = "f.yaml"
	if got := CheckLockout(cfg, sessions[:1]); len(got) != 1 || got[0].Fix != "add a line `- 192.0.2.10` to firewall.policy.trusted.hosts (line 4 of f.yaml)" {
		t.Errorf("block-list fix = %+v", got)
	}
	// without a trusted key the fix points at the policy key
	cfg, _ = parseDoc(t, "state_dir: /x\nfirewall:\n  policy:\n    services:\n      ssh: {from: [198.51.100.0/24]}\n")
	got = CheckLockout(cfg, sessions[:1])
	if len(got) != 1 || !strings.Contains(got[0].Fix, "under firewall.policy (line 3") {
		t.Errorf("fix = %+v", got)
	}
	// the same session allowed by ssh.from is fine
	if got := CheckLockout(cfg, []Session{{Client: netip.MustParseAddr("198.51.100.9"), Port: 22}}); len(got) != 0 {
		t.Errorf("allowed session reported: %+v", got)
	}
}
