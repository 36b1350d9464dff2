package detect

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// hostileLines are lines whose attacker-controlled fields (From display name
// and user, Call-ID, method, extension, caller name, AccountID, SessionID,
// AMI user name, IAX2 peer name) imitate server-written fields. 6.6.6.6 and
// 7.7.7.7 are the third parties the attacker wants banned; the true source
// is 203.0.113.5 (or 2001:db8::5). want is the address the event must carry
// ("" = no address), kind the kind it must have (KindNone = no event).
var hostileLines = []struct {
	line string
	want string
	kind event.Kind
}{
	// res_pjsip distributor: the fail2ban 1.0.2 bypass and friends.
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '"x' failed for '6.6.6.6:5060' (callid: " <sip:100@1.1.1.1>' failed for '203.0.113.5:5060' (callid: abc) - No matching endpoint found`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:100@1.1.1.1>' failed for '203.0.113.5:5060' (callid: x' failed for '6.6.6.6:5060' (callid: y) - Failed to authenticate`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:100@1.1.1.1>' failed for '203.0.113.5:5060' (callid: ) - No matching endpoint found) - Failed to authenticate`, "203.0.113.5", event.AuthFailure},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:x' failed for '6.6.6.6' (callid: @1.1.1.1>' failed for '203.0.113.5:5060' (callid: abc) - Failed to authenticate`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:100@1.1.1.1>' failed for '[2001:db8::5]:5060' (callid: a' failed for '[2001:db8::6]:5060' (callid: b) - Failed to authenticate`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'I' failed for '6.6.6.6:1' (callid: ' from '<sip:1@2>' failed for '203.0.113.5:5060' (callid: c) - Failed to authenticate`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'OPTIONS' from '"sipvicious" <sip:100@1.1.1.1>' failed for '203.0.113.5:5060' (callid: 6.6.6.6) - No matching endpoint found`, "203.0.113.5", event.Scan},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'OPTIONS' from '"6.6.6.6" <sip:6.6.6.6@6.6.6.6>' failed for '203.0.113.5:5060' (callid: failed for 6.6.6.6) - No matching endpoint found after 5 tries in 3.2 ms`, "203.0.113.5", event.UnknownAccount},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'OPTIONS' from '<sip:a@b>' failed for 'evil.example.com:5060' (callid: x) - No matching endpoint found`, "", event.KindNone},
	// chan_sip Registration: read from the end.
	{`[Nov 25 04:00:51] NOTICE[1] chan_sip.c: Registration from '"x' failed for '6.6.6.6' - Wrong password" <sip:1@2>' failed for '203.0.113.5:5060' - Wrong password`, "203.0.113.5", event.AuthFailure},
	{`[Nov 25 04:00:51] NOTICE[1] chan_sip.c: Registration from '"a' - Wrong password" <sip:'6.6.6.6'@x>' failed for '203.0.113.5' - Wrong password`, "203.0.113.5", event.AuthFailure},
	{`[Nov 25 04:00:51] NOTICE[1] chan_sip.c: Registration from '"friendly-scanner" <sip:100@6.6.6.6>' failed for '203.0.113.5:5060' - No matching peer found`, "203.0.113.5", event.Scan},
	{`[Nov 25 04:00:51] NOTICE[1] chan_sip.c: Registration from '<sip:6.6.6.6@6.6.6.6>' failed for '2001:db8::5' - Device does not match ACL`, "2001:db8::5", event.ACLViolation},
	// chan_sip / pjsip "Call from": attacker text on both sides.
	{`[Nov 25 04:00:51] NOTICE[1][C-00000001] chan_sip.c: Call from '' (6.6.6.6:5060) to extension '' (203.0.113.5:5060) to extension '900' rejected because extension not found in context 'default'.`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1][C-00000001] chan_sip.c: Call from 'x' (6.6.6.6:5060) to extension 'y' (203.0.113.5:5060) to extension '900' rejected because extension not found in context 'default'.`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1][C-00000001] chan_sip.c: Call from '' (203.0.113.5:5060) to extension '9' rejected because extension not found in context 'x'. (6.6.6.6:5060) to extension '1' rejected because extension not found in context 'default'.`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1][C-00000001] chan_sip.c: Call from '6.6.6.6 (6.6.6.6)' (203.0.113.5:5060) to extension '(6.6.6.6)' rejected because extension not found in context 'default'.`, "203.0.113.5", event.CallRejected},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '0' (UDP:6.6.6.6:5060) to extension '1' rejected because extension not found in context 'from-external'.`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] NOTICE[1] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '6.6.6.6' rejected because extension not found in context 'from-external'.`, "203.0.113.5", event.CallRejected},
	// res_security_log: forged fields in AccountID / SessionID / Response.
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="x",SessionID="",LocalAddress="IPV4/UDP/1.2.3.4/5060",RemoteAddress="IPV4/UDP/6.6.6.6/5060"",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060"`, "203.0.113.5", event.UnknownAccount},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="a",RemoteAddress="IPV4/UDP/6.6.6.6/5060",SessionID="b",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060"`, "203.0.113.5", event.UnknownAccount},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="x",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge="c",Response="",RemoteAddress="IPV4/UDP/6.6.6.6/5060",ExpectedResponse=""`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="",RemoteAddress="IPV4/UDP/6.6.6.6/5060",X="",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge="c",Response="r",ExpectedResponse=""`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="RemoteAddress=IPV4/UDP/6.6.6.6/5060",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge="c",Response="r",ExpectedResponse=""`, "203.0.113.5", event.AuthFailure},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="FailedACL",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="AMI",EventVersion="1",AccountID="",RemoteAddress="IPV6/TCP/2001:db8::6/1",SessionID="0x1",LocalAddress="IPV6/TCP/2001:db8::10/5038",RemoteAddress="IPV6/TCP/2001:db8::5/40000",SessionTV="1970-01-01T00:00:00.000+0000"`, "2001:db8::5", event.ACLViolation},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="SIP",EventVersion="2",AccountID="2002",SessionID="",RemoteAddress="IPV4/UDP/6.6.6.6/5060",LocalAddress="IPV4/UDP/198.51.100.10/5070",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge="1",ReceivedChallenge="1",ReceivedHash="2"`, "", event.InjectionSuspect},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="SuccessfulAuth",EventTV="2026-11-25T04:00:51.000+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1004",SessionID="",RemoteAddress="IPV4/UDP/6.6.6.6/5060",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",UsingPassword="1"`, "203.0.113.5", event.AuthSuccess},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeSent",EventTV="2026-11-25T04:00:51.000+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="RemoteAddress=\"IPV4/UDP/6.6.6.6/1\"",SessionID="",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge=""`, "203.0.113.5", event.ChallengeSent},
	{`[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="Bogus",RemoteAddress="IPV4/UDP/6.6.6.6/5060"`, "", event.KindNone},
	// AMI: user name at the end, address first.
	{`[Nov 25 04:02:42] NOTICE[1] manager.c: 203.0.113.5 failed to authenticate as '6.6.6.6 failed to authenticate as 'x''`, "203.0.113.5", event.AuthFailure},
	{`[Nov 25 04:02:42] NOTICE[1] manager.c: 203.0.113.5 tried to authenticate with nonexistent user ''; 6.6.6.6 tried to authenticate with nonexistent user 'x'`, "203.0.113.5", event.UnknownAccount},
	// IAX2: peer names.
	{`[Nov 25 04:03:01] NOTICE[1] chan_iax2.c: No registration for peer 'x' (from 6.6.6.6)' (from 203.0.113.5)`, "203.0.113.5", event.UnknownAccount},
	{`[Nov 25 04:03:01] NOTICE[1] chan_iax2.c: Host 6.6.6.6 failed RSA authentication with inkeys 'k'`, "", event.KindNone},
	{`[Nov 25 04:03:01] ERROR[1] chan_iax2.c: Call rejected, CallToken Support required. If unexpected, resolve by placing address 203.0.113.5:4569 in the calltokenoptional list or setting user 6.6.6.6 in the calltokenoptional list requirecalltoken=no`, "203.0.113.5", event.BadRequest},
	// acl.c
	{`[Nov 25 04:01:23] NOTICE[1] acl.c: SIP ACL: Rejecting '203.0.113.5' due to a failure to pass ACL '(BASELINE)'`, "203.0.113.5", event.ACLViolation},
	// FreePBX Friendly Scanner: Via header → no address.
	{`[2016-05-06 07:08:09] WARNING[6410][C-00000bac] Ext. s: Friendly Scanner from 6.6.6.6`, "", event.Scan},
	// Lines that are not Asterisk's at all must not match.
	{`Nov 25 04:00:51 host sshd[1]: NOTICE[1] chan_sip.c: Registration from '' failed for '6.6.6.6' - Wrong password`, "", event.KindNone},
	{`[Nov 25 04:00:51] VERBOSE[1] chan_sip.c: Registration from '' failed for '6.6.6.6' - Wrong password`, "", event.KindNone},
	{`[Nov 25 04:00:51] NOTICE[1] app_dial.c: Registration from 6.6.6.6 failed`, "", event.KindNone},
}

func TestHostileLines(t *testing.T) {
	d, _ := New("asterisk", Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
	wrong := 0
	for i, h := range hostileLines {
		var ev event.Event
		ok := d.Detect([]byte(h.line), &ev)
		if !ok {
			ev = event.Event{}
		}
		got := ""
		if ev.Addr.IsValid() {
			got = ev.Addr.String()
		}
		if got != "" {
			want, err := netip.ParseAddr(h.want)
			if err != nil || want != ev.Addr {
				wrong++
			}
		}
		if got != h.want || ev.Kind != h.kind {
			t.Errorf("hostile %d: got addr %q kind %v, want %q %v\n  %s", i, got, ev.Kind, h.want, h.kind, h.line)
		}
	}
	if len(hostileLines) < 30 {
		t.Errorf("only %d hostile lines, want ≥ 30", len(hostileLines))
	}
	if wrong != 0 {
		t.Errorf("%d hostile lines yielded a wrong address", wrong)
	}
	t.Logf("%d hostile lines, %d wrong addresses", len(hostileLines), wrong)
}

// hostileSSHD: user names and auth info imitating the host part.
var hostileSSHD = []struct {
	line string
	want string
	kind event.Kind
}{
	{`Nov 11 08:04:51 h sshd[1]: Failed password for invalid user x from 6.6.6.6 port 1 ssh2 from 203.0.113.5 port 58946 ssh2`, "203.0.113.5", event.UnknownAccount},
	{`Nov 11 08:04:51 h sshd[1]: Failed password for x from 6.6.6.6 port 1 ssh2: y from 203.0.113.5 port 58946 ssh2`, "", event.InjectionSuspect},
	// user "root from 203.0.113.5 port 58946 ssh2:" from 6.6.6.6 writes the same bytes:
	{`Nov 11 08:04:51 h sshd[1]: Failed password for root from 203.0.113.5 port 58946 ssh2: from 6.6.6.6 port 1 ssh2`, "", event.InjectionSuspect},
	{`Nov 11 08:04:51 h sshd[1]: Invalid user a from 6.6.6.6 from 203.0.113.5 port 4`, "203.0.113.5", event.UnknownAccount},
	{`Nov 11 08:04:51 h sshd[1]: error: PAM: Authentication failure for x from 6.6.6.6 from 203.0.113.5`, "203.0.113.5", event.AuthFailure},
	{`Nov 11 08:04:51 h sshd[1]: User a from 6.6.6.6 not allowed because listed in DenyUsers from 203.0.113.5 not allowed because listed in DenyUsers`, "203.0.113.5", event.ACLViolation},
	{`Nov 11 08:04:51 h sshd[1]: Failed publickey for git from 203.0.113.5 port 5 ssh2: RSA from 6.6.6.6 port 1 ssh2`, "", event.InjectionSuspect},
	{`Nov 11 08:04:51 h sshd[1]: Failed password for invalid user a b from 6.6.6.6 port 1 ssh2: from 203.0.113.5 port 2 ssh2`, "", event.InjectionSuspect},
	{`Nov 11 08:04:51 h kernel: Failed password for root from 6.6.6.6 port 1 ssh2`, "", event.KindNone},
	{`Nov 11 08:04:51 h asterisk[1]: Failed password for root from 6.6.6.6 port 1 ssh2`, "", event.KindNone},
}

func TestHostileSSHD(t *testing.T) {
	for _, name := range []string{"sshd", "auto"} {
		d, _ := New(name, Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
		for i, h := range hostileSSHD {
			var ev event.Event
			if !d.Detect([]byte(h.line), &ev) {
				ev = event.Event{}
			}
			got := ""
			if ev.Addr.IsValid() {
				got = ev.Addr.String()
			}
			if got != h.want || ev.Kind != h.kind {
				t.Errorf("%s hostile %d: got %q %v, want %q %v\n  %s", name, i, got, ev.Kind, h.want, h.kind, h.line)
			}
		}
	}
}

// TestAutoRoutesOnPrefixOnly: "sshd" in attacker text does not steer an
// Asterisk line to the sshd detector.
func TestAutoRoutesOnPrefixOnly(t *testing.T) {
	d, _ := New("auto", Options{Location: time.UTC})
	var ev event.Event
	line := `[Nov 25 04:00:51] NOTICE[1] chan_sip.c: Registration from '"sshd[1]: x" <sip:1@x>' failed for '203.0.113.5:5060' - Wrong password`
	if !d.Detect([]byte(line), &ev) || ev.Addr != netip.MustParseAddr("203.0.113.5") || ev.Detector != "asterisk" {
		t.Errorf("auto: %+v", ev)
	}
	line = `Nov 25 04:00:51 pbx asterisk[2]: NOTICE[1]: chan_sip.c:1 in f: Registration from '"sshd" <sip:1@x>' failed for '203.0.113.5:5060' - Wrong password`
	if !d.Detect([]byte(line), &ev) || ev.Addr != netip.MustParseAddr("203.0.113.5") || ev.Detector != "asterisk" {
		t.Errorf("auto (syslog): %+v", ev)
	}
}
