package e2e

// Issue 9 points 3 and 4 through the real daemon following both Asterisk
// files (messages and security, read by two goroutines) on nftables in a
// namespace: the two twin evasions end in a kernel ban, a legit phone's
// three typos with both logs do not, and special addresses are never
// banned (from log lines or by hand).

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
)

func TestDaemonTwins(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "twins")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{})
	d := startDaemon(t, ns, dir, cfg)
	stamp := "[" + time.Now().Format("Jan _2 15:04:05") + "]"
	sec := func(event, acct, sid, addr, port, tail string) string {
		return stamp + ` SECURITY[12729] res_security_log.c: SecurityEvent="` + event + `",EventTV="2026-11-25T04:10:00.414+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="` + acct + `",SessionID="` + sid + `",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/` + addr + `/` + port + `"` + tail
	}
	notice := func(acct, addr, cid, reason string) string {
		return stamp + ` NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:` + acct + `@198.51.100.10>' failed for '` + addr + `' (callid: ` + cid + `) - ` + reason
	}
	var msgs, secs []string
	// A legit phone: three typos, each a NOTICE and a ChallengeSent +
	// ChallengeResponseFailed: three failures, no ban.
	for i := range 3 {
		cid := fmt.Sprintf("typo-%d@198.51.100.21", i)
		msgs = append(msgs, notice("1001", "198.51.100.21:5060", cid, "Failed to authenticate"))
		secs = append(secs, sec("ChallengeSent", "1001", cid, "198.51.100.21", "5060", `,Challenge=""`),
			sec("ChallengeResponseFailed", "1001", cid, "198.51.100.21", "5060", `,Challenge="1/2",Response="3",ExpectedResponse=""`))
	}
	// The phone's lines are read first (the jail has seen structured
	// events), then the attackers'.
	appendLines(t, filepath.Join(dir, "security.log"), secs...)
	appendLines(t, filepath.Join(dir, "messages.log"), msgs...)
	d.waitLines(uint64(len(msgs)+len(secs)), 10*time.Second)
	read := len(msgs) + len(secs)
	msgs, secs = nil, nil
	// (a) after the phone's ChallengeSent, ten NOTICEs of an attacker.
	for i := range 10 {
		msgs = append(msgs, notice("1001", "203.0.113.99:5060", fmt.Sprintf("a-%d", i), "Failed to authenticate"))
	}
	// (b) a 9 KB digest response cuts every ChallengeResponseFailed at
	// 8191 bytes (no address); the NOTICE twins name the attacker.
	huge := strings.Repeat("f", 9000)
	for i := range 6 {
		cid := fmt.Sprintf("b-%d@203.0.113.98", i)
		l := sec("ChallengeResponseFailed", "1002", cid, "203.0.113.98", "5062", `,Challenge="1/2",Response="`+huge+`",ExpectedResponse=""`)
		secs = append(secs, l[:8191])
		msgs = append(msgs, notice("1002", "203.0.113.98:5062", cid, "Failed to authenticate"))
	}
	// Special addresses named by log lines: never tracked.
	for _, a := range []string{"0.0.0.0:5060", "255.255.255.255:5060", "224.0.0.1:5060", "[::]:5060", "[ff02::1]:5060", "[::ffff:224.0.0.1]:5060"} {
		for i := range 6 {
			msgs = append(msgs, notice("100", a, fmt.Sprintf("s-%d", i), "No matching endpoint found"))
		}
	}
	appendLines(t, filepath.Join(dir, "security.log"), secs...)
	appendLines(t, filepath.Join(dir, "messages.log"), msgs...)
	d.waitLines(uint64(read+len(msgs)+len(secs)), 10*time.Second)
	d.waitBans("both twin evaders banned", 10*time.Second, func(b []daemon.BanInfo) bool {
		return hasBan(b, "203.0.113.99/32") && hasBan(b, "203.0.113.98/32")
	})
	// Unanswered challenges are judged after challenge_timeout (5 s).
	time.Sleep(6500 * time.Millisecond)
	bans := d.bans()
	if len(bans) != 2 {
		t.Fatalf("bans = %+v, want exactly the two attackers (not the phone 198.51.100.21, no special address)", bans)
	}
	n, kernel := kernelCount(t, ns, "nftables")
	if n != 2 || kernel["203.0.113.99/32"] == 0 || kernel["203.0.113.98/32"] == 0 {
		t.Fatalf("kernel holds %v, want 203.0.113.99 and 203.0.113.98", sortedKeys(kernel))
	}
	// Manual bans of special addresses are refused with the reason.
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1", "::ffff:224.0.0.1", "224.0.0.0/24"} {
		out, code := d.cli("ban", a, "--for", "1h")
		if code != 1 || !strings.Contains(out, "multicast") {
			t.Errorf("manual ban of %s: exit %d: %s", a, code, out)
		}
	}
	if n, kernel := kernelCount(t, ns, "nftables"); n != 2 {
		t.Fatalf("after the manual bans the kernel holds %v", sortedKeys(kernel))
	}
}
