package detect

// Red-team cases (from the red-team review, branch redteam). Each case is a line, or a group of
// lines, that a real Asterisk writes (format strings from asterisk/asterisk
// main/logger.c, res/res_security_log.c, res/res_pjsip/security_events.c,
// res/res_pjproject.c, pjproject sip_transport.c). 198.51.100.21 is the
// victim (a legit phone), 203.0.113.5 the attacker. A case fails when the
// detector gives the victim an event.

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

const (
	rtVictim = "198.51.100.21"
	rtFile   = "[Nov 25 04:01:39] SECURITY[12729] res_security_log.c: "
)

func rtSec(name, sessionID, tail string) string {
	return `SecurityEvent="` + name + `",EventTV="2026-11-25T04:01:39.375+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1004",SessionID="` +
		sessionID + `",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060"` + tail
}

// rtLogger imitates main/logger.c: the message is cut to LOGMSG_SIZE-1
// (8191) bytes, a '\n' is added, then the file channel's
// snprintf(buf, 8192, "[%s] %s[%d]%s %s: %s") cuts again (losing the '\n').
func rtFileLine(prefix, msg string) (line string, newline bool) {
	if len(msg) > 8191 {
		msg = msg[:8191]
	}
	s := prefix + msg + "\n"
	if len(s) > 8191 {
		return s[:8191], false
	}
	return s[:len(s)-1], true
}

const rtForge = `x",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/198.51.100.21/5060",Module="`

func rtCases() map[string][]string {
	c := map[string][]string{}
	// 1. pjproject PJ_LOG(1) "Error processing N bytes packet" dumps the raw
	// (malformed) packet into the messages log; its body lines are whole
	// log lines chosen by the sender.
	c["pjproject packet dump"] = []string{
		"[Nov 25 04:05:01] ERROR[12721] pjproject: \tsip_transport.c Error processing 402 bytes packet from UDP 203.0.113.5:5060 : PJSIP syntax error exception when parsing 'CSeq' header on line 6 col 7:",
		"REGISTER sip:198.51.100.10 SIP/2.0",
		"CSeq: x REGISTER",
		"[Nov 25 04:05:01] NOTICE[12721] chan_sip.c: Registration from '<sip:1001@x>' failed for '198.51.100.21:5060' - Wrong password",
		"Content-Length: 0",
		"",
		"-- end of packet.",
	}
	// 2. syslog channel: a SessionID (Call-ID) longer than 8 KiB is cut by
	// the logger after a forged RemoteAddress; the real one is lost.
	msg := "SECURITY[12729]: res_security_log.c:114 in security_event_stasis_cb: " + rtSec("ChallengeResponseFailed", rtForge+strings.Repeat("A", 9000), "")
	c["syslog truncation"] = []string{"Nov 25 04:01:39 vm asterisk[12637]: " + msg[:8191]}
	// 3. file channel: the cut line has no '\n', the next message (a legit
	// phone's SuccessfulAuth) is appended to it.
	l, _ := rtFileLine(rtFile, rtSec("ChallengeResponseFailed", strings.Repeat("B", 9000), ""))
	c["file concatenation"] = []string{l + `[Nov 25 04:01:40] SECURITY[12729] res_security_log.c: SecurityEvent="SuccessfulAuth",EventTV="2026-11-25T04:01:40.798+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="1-1@198.51.100.21",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/198.51.100.21/5060",UsingPassword="1"`}
	// 4. AMI over HTTP (/rawman?action=login&username=a%0A...): URL-decoded
	// user name with a newline.
	c["ami http newline"] = []string{
		"[Nov 25 04:02:47] NOTICE[12979] manager.c: 203.0.113.5 tried to authenticate with nonexistent user 'a",
		"[Nov 25 04:02:47] NOTICE[12979] manager.c: 198.51.100.21 failed to authenticate as 'admin''",
	}
	// 5. A legit phone whose display name contains a scanner substring
	// ("Siwar" contains "iwar") is a scan (weight maxretry) at its first typo.
	c["display name false scan"] = []string{
		`[Nov 25 04:03:03] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"Siwar Haddad" <sip:1001@198.51.100.10>' failed for '198.51.100.21:5060' (callid: 1-1@198.51.100.21) - Failed to authenticate`,
	}
	// 6. res_security_log InvalidAccountID: AccountID is the From URI user
	// as pjsip unescapes it (%0A -> newline), at most 36 bytes
	// (pjsip_distributor.c name[AST_UUID_STR_LEN]); SessionID is the Call-ID.
	c["security AccountID newline"] = []string{
		`[Nov 25 04:00:51] SECURITY[12729] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2026-11-25T04:00:51.374+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="`,
		`NOTICE[] acl.c:x",SessionID="Rejecting '198.51.100.21' due to a failure to pass ACL 'a'",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060"`,
	}
	// 7. res_pjsip_session: session->exten is the unescaped Request-URI user
	// (<= 79 bytes); reached through an anonymous/guest endpoint.
	c["pjsip exten newline"] = []string{
		`[Nov 25 04:02:18] NOTICE[12666] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '0`,
		`NOTICE[] acl.c:Rejecting '198.51.100.21' due to a failure to pass ACL 'x' rejected because extension not found in context 'from-external'.`,
	}
	// 8. chan_iax2 (authdebug=yes): the peer name is a length-prefixed IE.
	c["iax2 peer newline"] = []string{
		`[Nov 25 04:03:01] NOTICE[12713] chan_iax2.c: No registration for peer 'x`,
		`NOTICE[] acl.c:Rejecting '198.51.100.21' due to a failure to pass ACL 'x' (from 203.0.113.5)`,
	}
	return c
}

func TestHostileNewlineVictim(t *testing.T) {
	victim := netip.MustParseAddr(rtVictim)
	for name, lines := range rtCases() {
		d, _ := New("asterisk", Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
		for i, line := range lines {
			var ev event.Event
			if !d.Detect([]byte(line), &ev) {
				continue
			}
			// In "display name false scan" 198.51.100.21 is the phone that
			// mistyped its password: its auth_failure is right, a scan is not.
			if ev.Addr == victim && ev.Kind.IsFailure() && name != "display name false scan" {
				t.Errorf("%s: line %d (%d bytes): victim %s gets %v", name, i, len(line), victim, ev.Kind)
			}
			if name == "display name false scan" && ev.Kind == event.Scan {
				t.Errorf("%s: a phone's first typo is a scan", name)
			}
		}
	}
}

// TestHostileForgedCallID: a forged Call-ID makes a brute-force attempt
// injection_suspect in both logs (messages: pjsip Request line; security:
// ChallengeResponseFailed), although the From field pjsip prints can be
// parsed from the left and the fields after RemoteAddress cannot form a
// candidate.
func TestHostileForgedCallID(t *testing.T) {
	lines := []string{
		`[Nov 25 04:01:39] NOTICE[12721] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"1004" <sip:1004@198.51.100.10>' failed for '203.0.113.5:5060' (callid: x' failed for '198.51.100.21:5060' (callid: y) - Failed to authenticate`,
		rtFile + rtSec("ChallengeResponseFailed", rtForge, `,Challenge="1795579227/16daae",Response="ff62d04c",ExpectedResponse=""`),
		`[Nov 25 04:02:18] NOTICE[12666] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '011 (UDP:198.51.100.21:5060) to extension '1' rejected because extension not found in context 'from-external'.`,
	}
	d, _ := New("asterisk", Options{Location: time.UTC})
	for i, line := range lines {
		var ev event.Event
		if !d.Detect([]byte(line), &ev) || ev.Addr != netip.MustParseAddr("203.0.113.5") {
			t.Errorf("line %d: got %v %v, want the attacker 203.0.113.5", i, ev.Addr, ev.Kind)
		}
	}
}

// TestHostileSSHDUserSpaces: OpenSSH logs the user name of "Failed password for
// invalid user %.100s from %s port %d ssh2" verbatim (spaces and ':' kept).
func TestHostileSSHDUserSpaces(t *testing.T) {
	d, err := New("sshd", Options{Location: time.UTC})
	if err != nil {
		t.Fatalf("sshd detector: %v", err)
	}
	for _, line := range []string{
		`Nov 25 04:00:02 vm sshd[101]: Failed password for invalid user x from 198.51.100.21 port 1 ssh2: y from 203.0.113.5 port 4242 ssh2`,
		// packet.c ssh_packet_disconnect: "Disconnecting %s: %.100s", remote_id
		// = log preamble "invalid user USER" + " HOST port N".
		`Nov 25 04:00:30 vm sshd[130]: Disconnecting invalid user x 198.51.100.21 203.0.113.5 port 4242: Change of username or service not allowed: (x 198.51.100.21,ssh-connection) -> (y,ssh-connection) [preauth]`,
	} {
		var ev event.Event
		if d.Detect([]byte(line), &ev) && ev.Addr == netip.MustParseAddr(rtVictim) {
			t.Errorf("sshd: victim %s gets %v: %s", rtVictim, ev.Kind, line)
		}
	}
}
