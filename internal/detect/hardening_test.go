package detect

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Tests for the red-team hardening (header strictness, multi-line
// messages, time limits, left-to-right parsing where the left side is
// server-written). 203.0.113.5 is the attacker, 198.51.100.21 the victim.

var (
	attacker = netip.MustParseAddr("203.0.113.5")
	victim   = netip.MustParseAddr("198.51.100.21")
)

func newAt(t *testing.T, name string, now time.Time) Detector {
	t.Helper()
	d, err := New(name, Options{Location: time.UTC, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var noon = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// run feeds lines to one detector and returns the events (nil for no event).
func run(d Detector, lines ...string) []*event.Event {
	out := make([]*event.Event, len(lines))
	for i, l := range lines {
		var ev event.Event
		if d.Detect([]byte(l), &ev) {
			out[i] = &ev
		}
	}
	return out
}

func TestHeaderStrict(t *testing.T) {
	msg := `Rejecting '198.51.100.21' due to a failure to pass ACL 'a'`
	for _, l := range []string{
		`NOTICE[] acl.c: SIP ACL: ` + msg,                      // empty lwp
		`[Nov 25 04:00:00] NOTICE[] acl.c: SIP ACL: ` + msg,    // empty lwp
		`[Nov 25 04:00:00] NOTICE[12a] acl.c: SIP ACL: ` + msg, // lwp not decimal
		`[not a date] NOTICE[1] acl.c: SIP ACL: ` + msg,        // no timestamp
		`[Nov 25 04:00:00] NOTICE[1] acl: SIP ACL: ` + msg,     // module is not a source file
		`[Nov 25 04:00:00] NOTICE[1] acl.c:SIP ACL: ` + msg,    // no space after the module
		`[Nov 25 04:00:00] NOTICE[1] a b.c: SIP ACL: ` + msg,   // module with a space
		`Nov 25 04:00:00 pbx asterisk-x[1]: NOTICE[1]: acl.c:1 f: SIP ACL: ` + msg,
	} {
		d := newAt(t, "asterisk", noon)
		if ev := run(d, l)[0]; ev != nil {
			t.Errorf("accepted %v %v: %s", ev.Kind, ev.Addr, l)
		}
	}
	good := `[Nov 25 04:00:00] NOTICE[1] acl.c: SIP ACL: ` + msg
	if ev := run(newAt(t, "asterisk", noon), good)[0]; ev == nil || ev.Addr != victim {
		t.Errorf("well-formed line refused: %s", good)
	}
}

// TestHeaderFormLock: a detector reads one source; a line in another
// header form (a forged date-less line inside a file log, a bracketed
// line inside a syslog stream) is refused.
func TestHeaderFormLock(t *testing.T) {
	file := `[Nov 25 04:00:00] NOTICE[1] acl.c: SIP ACL: Rejecting '203.0.113.5' due to a failure to pass ACL 'a'`
	bare := `NOTICE[1]: acl.c:1 f: SIP ACL: Rejecting '198.51.100.21' due to a failure to pass ACL 'a'`
	sys := `Nov 25 04:00:00 pbx asterisk[2]: NOTICE[1]: acl.c:1 f: SIP ACL: Rejecting '198.51.100.21' due to a failure to pass ACL 'a'`
	evs := run(newAt(t, "asterisk", noon), file, bare, sys, file)
	if evs[0] == nil || evs[1] != nil || evs[2] != nil || evs[3] == nil {
		t.Errorf("file source: %v", evs)
	}
	evs = run(newAt(t, "asterisk", noon), sys, file, bare)
	if evs[0] == nil || evs[1] != nil || evs[2] == nil {
		t.Errorf("syslog source: %v", evs)
	}
}

// TestPjprojectPacketDump: the first line is BadRequest for the sender
// (the address is pjlib's); the N bytes after it are the packet, whatever
// they look like; the lines after them are read again.
func TestPjprojectPacketDump(t *testing.T) {
	forged := `[Nov 25 04:05:01] NOTICE[12721] chan_sip.c: Registration from '<sip:1001@x>' failed for '198.51.100.21:5060' - Wrong password`
	body := "REGISTER sip:198.51.100.10 SIP/2.0\nCSeq: x REGISTER\n" + forged + "\nContent-Length: 0\n"
	first := "[Nov 25 04:05:01] ERROR[12721] pjproject: \tsip_transport.c Error processing " + itoa(len(body)) + " bytes packet from UDP 203.0.113.5:5060 : PJSIP syntax error exception when parsing 'CSeq' header on line 2 col 7:"
	real := `[Nov 25 04:05:02] NOTICE[12721] chan_sip.c: Registration from '<sip:1001@x>' failed for '192.0.2.9:5060' - Wrong password`
	lines := append([]string{first}, strings.Split(strings.TrimSuffix(body, "\n"), "\n")...)
	lines = append(lines, "", "-- end of packet.", real)
	evs := run(newAt(t, "asterisk", noon), lines...)
	if evs[0] == nil || evs[0].Addr != attacker || evs[0].Port != 5060 || evs[0].Kind != event.BadRequest || evs[0].Service != event.ServicePJSIP {
		t.Errorf("first line: %+v", evs[0])
	}
	for i, ev := range evs[1 : len(evs)-1] {
		if ev != nil {
			t.Errorf("dump line %d gave %v %v: %s", i+1, ev.Kind, ev.Addr, lines[i+1])
		}
	}
	if last := evs[len(evs)-1]; last == nil || last.Addr != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("line after the dump: %+v", last)
	}
	// IPv6: pjlib prints the address without brackets, the port last.
	v6 := "[Nov 25 04:05:01] ERROR[12721] pjproject: \tsip_transport.c Error processing 10 bytes packet from UDP6 2001:db8::5:5061 : x:"
	if ev := run(newAt(t, "asterisk", noon), v6)[0]; ev == nil || ev.Addr != netip.MustParseAddr("2001:db8::5") || ev.Port != 5061 {
		t.Errorf("IPv6 sender: %+v", ev)
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestCutFieldSkipsFollowingLines: a message that ends inside an attacker
// field (no server-written ending) makes the next lines, up to the
// field's maximum length, untrusted; the lines after are read again.
func TestCutFieldSkipsFollowingLines(t *testing.T) {
	forged := `[Nov 25 04:02:47] NOTICE[12979] manager.c: 198.51.100.21 failed to authenticate as 'admin'`
	pad := `[Nov 25 04:02:48] VERBOSE[1] x.c: ` + strings.Repeat("p", 200)
	real := `[Nov 25 04:02:49] NOTICE[12979] manager.c: 192.0.2.9 failed to authenticate as 'admin'`
	lines := []string{`[Nov 25 04:02:47] NOTICE[12979] manager.c: 203.0.113.5 tried to authenticate with nonexistent user 'a`, forged}
	for range 6 { // 6 × 235 bytes > maxAMIUserField
		lines = append(lines, pad)
	}
	lines = append(lines, real)
	evs := run(newAt(t, "asterisk", noon), lines...)
	if evs[0] == nil || evs[0].Addr != attacker || evs[0].Kind != event.UnknownAccount {
		t.Errorf("cut line: %+v", evs[0])
	}
	if evs[1] != nil {
		t.Errorf("forged line accepted: %+v", evs[1])
	}
	if last := evs[len(evs)-1]; last == nil || last.Addr != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("line after the region: %+v", last)
	}
	// A complete message does not skip anything.
	evs = run(newAt(t, "asterisk", noon), `[Nov 25 04:02:47] NOTICE[12979] manager.c: 203.0.113.5 tried to authenticate with nonexistent user 'a'`, real)
	if evs[1] == nil {
		t.Errorf("line after a complete message skipped")
	}
}

// TestSecurityAccountIDNewline: a 36-byte AccountID holds a newline and a
// complete file-channel header; the rest of the record then reads as an
// acl.c message naming the victim.
func TestSecurityAccountIDNewline(t *testing.T) {
	acct := "\n[Nov 25 04:00:51] NOTICE[1] acl.c: "
	if len(acct) > 36 {
		t.Fatalf("AccountID %d bytes", len(acct))
	}
	rec := rtFile + `SecurityEvent="InvalidAccountID",EventTV="2026-11-25T04:00:51.374+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="` + acct +
		`",SessionID="Rejecting '198.51.100.21' due to a failure to pass ACL 'a'",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060"`
	evs := run(newAt(t, "asterisk", noon), strings.Split(rec, "\n")...)
	for i, ev := range evs {
		if ev != nil && ev.Addr == victim {
			t.Errorf("line %d: victim gets %v", i, ev.Kind)
		}
	}
	if evs[0] == nil || evs[0].Kind != event.InjectionSuspect {
		t.Errorf("cut record: %+v", evs[0])
	}
}

// TestLongLinesUntrusted: Asterisk cuts messages at 8191 bytes.
func TestLongLinesUntrusted(t *testing.T) {
	l := rtFile + rtSec("InvalidAccountID", strings.Repeat("C", 8100), "")
	ev := run(newAt(t, "asterisk", noon), l)[0]
	if ev == nil || ev.Kind != event.InjectionSuspect || ev.Addr.IsValid() {
		t.Errorf("long line: %+v", ev)
	}
	// a res_pjsip Request names its source before the (8 KB) Call-ID
	pj := `[Nov 25 04:01:39] NOTICE[12721] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"1004" <sip:1004@198.51.100.10>' failed for '203.0.113.5:5060' (callid: ` +
		strings.Repeat("D", 8200)
	if ev := run(newAt(t, "asterisk", noon), pj[:8191]+`[Nov 25 04:01:40] NOTICE[1] acl.c: SIP ACL: Rejecting '198.51.100.21' due to a failure to pass ACL 'a'`)[0]; ev == nil || ev.Addr != attacker || ev.Kind != event.BadRequest {
		t.Errorf("long pjsip request: %+v", ev)
	}
	// ... but not when the address would lie near or past the cut
	pj = `[Nov 25 04:01:39] NOTICE[12721] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"` + strings.Repeat("E", 8050) + `" <sip:1004@198.51.100.10>' failed for '203.0.113.5:5060' (callid: x`
	if ev := run(newAt(t, "asterisk", noon), pj)[0]; ev == nil || ev.Kind != event.InjectionSuspect || ev.Addr.IsValid() {
		t.Errorf("address near the cut: %+v", ev)
	}
	short := rtFile + rtSec("InvalidAccountID", strings.Repeat("C", 7000), "")
	if ev := run(newAt(t, "asterisk", noon), short)[0]; ev == nil || ev.Addr != attacker {
		t.Errorf("7 KB line: %+v", ev)
	}
}

func TestStructuredFlag(t *testing.T) {
	sec := rtFile + rtSec("InvalidAccountID", "x", "")
	notice := `[Nov 25 04:01:39] NOTICE[12721] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"1004" <sip:1004@198.51.100.10>' failed for '203.0.113.5:5060' (callid: x) - No matching endpoint found`
	evs := run(newAt(t, "asterisk", noon), sec, notice)
	if evs[0] == nil || !evs[0].Structured || evs[0].Addr != attacker {
		t.Errorf("security event: %+v", evs[0])
	}
	if evs[1] == nil || evs[1].Structured || evs[1].Addr != attacker {
		t.Errorf("notice: %+v", evs[1])
	}
	ssh := run(newAt(t, "sshd", noon), `Nov 25 04:00:02 vm sshd[101]: Failed password for root from 203.0.113.5 port 1 ssh2`)[0]
	if ssh == nil || ssh.Structured {
		t.Errorf("sshd: %+v", ssh)
	}
}

func TestScannerSignatureNearMisses(t *testing.T) {
	for _, tc := range []struct {
		display string
		scan    bool
	}{
		{"Siwar Haddad", false},
		{"kiwari.example", false},
		{"Iwarsson", false},
		{"smaple", false},
		{"xsipvicious", false},
		{"sipvicious", true},
		{"SIPVicious/0.3", true},
		{"friendly-scanner", true},
		{"iWar", true},
		{"x svwar", true},
	} {
		l := `[Nov 25 04:03:03] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"` + tc.display + `" <sip:1001@198.51.100.10>' failed for '203.0.113.5:5060' (callid: 1) - Failed to authenticate`
		ev := run(newAt(t, "asterisk", noon), l)[0]
		if ev == nil || ev.Addr != attacker || (ev.Kind == event.Scan) != tc.scan {
			t.Errorf("%q: %+v, want scan=%v", tc.display, ev, tc.scan)
		}
	}
	// Signatures count only in the display name, not in the URI host.
	l := `[Nov 25 04:03:03] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1001@sipvicious.example>' failed for '203.0.113.5:5060' (callid: 1) - Failed to authenticate`
	if ev := run(newAt(t, "asterisk", noon), l)[0]; ev == nil || ev.Kind != event.AuthFailure {
		t.Errorf("host name: %+v", ev)
	}
}

// TestNewYear: year-less stamps around New Year, both ways.
func TestNewYear(t *testing.T) {
	line := func(stamp string) string {
		return `[` + stamp + `] NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '203.0.113.5' - Wrong password`
	}
	for _, tc := range []struct {
		now   time.Time
		stamp string
		want  string
	}{
		// reader's clock a little behind the writer's: next year
		{time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC), "Jan  1 00:00:03", "2027-01-01T00:00:03Z"},
		{time.Date(2026, 12, 31, 23, 59, 58, 0, time.UTC), "Dec 31 23:59:57", "2026-12-31T23:59:57Z"},
		// reading last year's lines just after New Year
		{time.Date(2027, 1, 1, 0, 0, 5, 0, time.UTC), "Dec 31 23:59:59", "2026-12-31T23:59:59Z"},
		{time.Date(2027, 1, 1, 0, 0, 5, 0, time.UTC), "Jan  1 00:00:04", "2027-01-01T00:00:04Z"},
		// a day and more ahead: last year's
		{time.Date(2026, 12, 29, 12, 0, 0, 0, time.UTC), "Jan  1 00:00:03", "2026-01-01T00:00:03Z"},
	} {
		ev := run(newAt(t, "asterisk", tc.now), line(tc.stamp))[0]
		if ev == nil || ev.Time.UTC().Format(time.RFC3339) != tc.want {
			t.Errorf("now %v, %s: got %+v, want %s", tc.now, tc.stamp, ev, tc.want)
		}
	}
}

// TestFutureStampClamped: a stamp beyond now+24h gets the receive time.
func TestFutureStampClamped(t *testing.T) {
	ev := run(newAt(t, "asterisk", noon), `[2099-01-01 00:00:00] NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '203.0.113.5' - Wrong password`)[0]
	if ev == nil || !ev.Time.Equal(noon) {
		t.Errorf("2099 stamp: %+v", ev)
	}
	ev = run(newAt(t, "sshd", noon), `2099-01-01T00:00:00+00:00 vm sshd[101]: Failed password for root from 203.0.113.5 port 1 ssh2`)[0]
	if ev == nil || !ev.Time.Equal(noon) {
		t.Errorf("sshd 2099 stamp: %+v", ev)
	}
	ev = run(newAt(t, "asterisk", noon), `[2026-11-26 11:00:00] NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '203.0.113.5' - Wrong password`)[0]
	if ev == nil || ev.Time.Equal(noon) {
		t.Errorf("stamp within the slack was clamped: %+v", ev)
	}
}

// TestSecurityDigestLastAddressWins: ChallengeResponseFailed and
// InvalidPassword end with digest fields that cannot hold `",`, so the
// last RemoteAddress after a LocalAddress is the server's.
func TestSecurityDigestLastAddressWins(t *testing.T) {
	for _, l := range []string{
		rtFile + rtSec("ChallengeResponseFailed", rtForge, `,Challenge="1795579227/16daae",Response="ff62d04c",ExpectedResponse=""`),
		rtFile + `SecurityEvent="InvalidPassword",EventTV="2026-11-25T04:01:39.375+0000",Severity="Error",Service="SIP",EventVersion="2",AccountID="1004",SessionID="` + rtForge + `",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge="1",ReceivedChallenge="1",ReceivedHash="2"`,
	} {
		ev := run(newAt(t, "asterisk", noon), l)[0]
		if ev == nil || ev.Addr != attacker || ev.Kind != event.AuthFailure || !ev.Structured {
			t.Errorf("%+v: %s", ev, l)
		}
	}
	// An event type with attacker text after RemoteAddress stays ambiguous.
	l := rtFile + rtSec("RequestNotAllowed", rtForge, `,RequestType="x",RequestParams="",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/198.51.100.21/5060"`)
	if ev := run(newAt(t, "asterisk", noon), l)[0]; ev == nil || ev.Kind != event.InjectionSuspect || ev.Addr.IsValid() {
		t.Errorf("RequestNotAllowed: %+v", ev)
	}
}

// TestSSHDPidTableNotPoisoned: a failure logged without an address is
// attributed to the pid's last trusted address, never to one an attacker
// wrote into a user name.
func TestSSHDPidTableNotPoisoned(t *testing.T) {
	evs := run(newAt(t, "sshd", noon),
		`Nov 25 04:00:01 vm sshd[101]: Connection from 203.0.113.5 port 4242 on 198.51.100.10 port 22 rdomain ""`,
		`Nov 25 04:00:02 vm sshd[101]: Failed password for invalid user x from 198.51.100.21 port 1 ssh2: y from 203.0.113.5 port 4242 ssh2`,
		`Nov 25 04:00:03 vm sshd[101]: Failed hostbased for x from 203.0.113.5 port 4242 ssh2: RSA SHA256:x, client user "u", client host "h from 198.51.100.21 port 1 ssh2"`,
		`Nov 25 04:00:04 vm sshd[101]: Disconnecting: Too many authentication failures [preauth]`,
	)
	for i, ev := range evs {
		if ev != nil && ev.Addr == victim {
			t.Errorf("line %d: victim gets %v", i, ev.Kind)
		}
	}
	if evs[1] == nil || evs[1].Addr != attacker || evs[1].Kind != event.UnknownAccount || evs[1].Account != "x from 198.51.100.21 port 1 ssh2: y" {
		t.Errorf("password line: %+v", evs[1])
	}
	if evs[3] == nil || evs[3].Addr != attacker {
		t.Errorf("too many: %+v", evs[3])
	}
	// Disconnecting: ambiguous when the marker occurs twice.
	ev := run(newAt(t, "sshd", noon), `Nov 25 04:00:30 vm sshd[130]: Disconnecting invalid user x 198.51.100.21 port 1: Change of username or service not allowed: y 203.0.113.5 port 4242: Change of username or service not allowed: (a,ssh-connection) -> (b,ssh-connection) [preauth]`)[0]
	if ev == nil || ev.Kind != event.InjectionSuspect || ev.Addr.IsValid() {
		t.Errorf("ambiguous disconnect: %+v", ev)
	}
	ev = run(newAt(t, "sshd", noon), `Nov 25 04:00:30 vm sshd[130]: Disconnecting invalid user x 198.51.100.21 203.0.113.5 port 4242: Change of username or service not allowed: (x 198.51.100.21,ssh-connection) -> (y,ssh-connection) [preauth]`)[0]
	if ev == nil || ev.Addr != attacker || ev.Kind != event.AuthFailure {
		t.Errorf("disconnect: %+v", ev)
	}
}

// TestAutoRoutesOnProgram: the auto detector routes on the program token
// and reads RFC 5424, full program paths and long host names.
func TestAutoRoutesOnProgram(t *testing.T) {
	for _, tc := range []struct {
		line, det string
	}{
		{`<133>1 2026-11-25T04:00:51.123456+00:00 host asterisk 12637 - - NOTICE[12666]: acl.c:1 f: SIP ACL: Rejecting '203.0.113.5' due to a failure to pass ACL 'a'`, "asterisk"},
		{`Nov 25 04:00:51 a-very-long-host-name.subdomain.example.org /usr/sbin/asterisk[12637]: NOTICE[12]: acl.c:1 f: SIP ACL: Rejecting '203.0.113.5' due to a failure to pass ACL 'a'`, "asterisk"},
		{`Nov 25 04:00:51 host sshd-session[12]: Failed password for root from 203.0.113.5 port 1 ssh2`, "sshd"},
		{`Nov 25 04:00:51 host /usr/sbin/sshd[12]: Failed password for root from 203.0.113.5 port 1 ssh2`, "sshd"},
		{`<38>1 2026-11-25T04:00:51Z host sshd 12 - - Failed password for root from 203.0.113.5 port 1 ssh2`, "sshd"},
	} {
		ev := run(newAt(t, "auto", noon), tc.line)[0]
		if ev == nil || ev.Addr != attacker || ev.Detector != tc.det {
			t.Errorf("%+v, want %s: %s", ev, tc.det, tc.line)
		}
	}
	// "sshd" early in an Asterisk message does not route it to sshd.
	l := `Nov 25 04:00:51 h asterisk[1]: NOTICE[12]: acl.c:1 f: sshd[1]: Rejecting '203.0.113.5' due to a failure to pass ACL 'a'`
	if ev := run(newAt(t, "auto", noon), l)[0]; ev != nil && ev.Detector != "asterisk" {
		t.Errorf("routed to %s: %s", ev.Detector, l)
	}
}

// TestPjsipEndpointFromLeft: the res_pjsip 17+ call rejection names the
// configured endpoint first; the first "Call (" is the server's.
func TestPjsipEndpointFromLeft(t *testing.T) {
	l := `[Nov 25 04:02:18] NOTICE[12666] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '011 (UDP:198.51.100.21:5060) to extension '1' rejected because extension not found in context 'from-external'.`
	if ev := run(newAt(t, "asterisk", noon), l)[0]; ev == nil || ev.Addr != attacker || ev.Kind != event.CallRejected {
		t.Errorf("%+v", ev)
	}
}

// TestCutFieldFullForgedHeader: dialled numbers and IAX2 peer names can
// hold a newline followed by a complete, well-formed header; the cut
// message's next lines are skipped.
func TestCutFieldFullForgedHeader(t *testing.T) {
	forged := "[Nov 25 04:02:18] NOTICE[1] acl.c: SIP ACL: Rejecting '198.51.100.21' due to a failure to pass ACL 'x"
	for name, lines := range map[string][]string{
		"chan_sip exten": {
			`[Nov 25 04:02:18] NOTICE[12666][C-00000001] chan_sip.c: Call from 'x' (203.0.113.5:5060) to extension '0`,
			forged + `' rejected because extension not found in context 'default'.`,
		},
		"pjsip exten": {
			`[Nov 25 04:02:18] NOTICE[12666] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension '0`,
			forged + `' rejected because extension not found in context 'from-external'.`,
		},
		"iax2 peer": {
			`[Nov 25 04:03:01] NOTICE[12713] chan_iax2.c: No registration for peer 'x`,
			forged + `' (from 203.0.113.5)`,
		},
		"iax2 md5 peer": {
			`[Nov 25 04:03:01] NOTICE[12713] chan_iax2.c: Host 203.0.113.5 failed MD5 authentication for 'x`,
			forged + `' (a != b)`,
		},
	} {
		evs := run(newAt(t, "asterisk", noon), lines...)
		if evs[1] != nil {
			t.Errorf("%s: forged line gave %v %v", name, evs[1].Kind, evs[1].Addr)
		}
		if evs[0] != nil && evs[0].Addr.IsValid() && evs[0].Addr != attacker {
			t.Errorf("%s: cut line gave %v", name, evs[0].Addr)
		}
	}
}

// TestIAX2Formats: chan_iax2 "Host %s denied access to register peer '%s'"
// and "Rejected dial attempt from %s, request '%s@%s' does not exist"
// (format strings of channels/chan_iax2.c); a codec mismatch is no attack.
func TestIAX2Formats(t *testing.T) {
	for _, tc := range []struct {
		line string
		kind event.Kind
	}{
		{`[Nov 25 04:03:01] NOTICE[12713] chan_iax2.c: Host 203.0.113.5 denied access to register peer '5001'`, event.ACLViolation},
		{`[Nov 25 04:03:01] WARNING[12713] chan_iax2.c: Rejected dial attempt from 203.0.113.5, request '0041@default' does not exist`, event.UnknownAccount},
		{`[Nov 25 04:03:01] NOTICE[12713] chan_iax2.c: Rejected connect attempt from 203.0.113.5, requested 'ulaw' incompatible with our capability 'alaw'.`, event.KindNone},
	} {
		ev := run(newAt(t, "asterisk", noon), tc.line)[0]
		if tc.kind == event.KindNone {
			if ev != nil {
				t.Errorf("%+v: %s", ev, tc.line)
			}
			continue
		}
		if ev == nil || ev.Addr != attacker || ev.Kind != tc.kind || ev.Service != event.ServiceIAX2 {
			t.Errorf("%+v: %s", ev, tc.line)
		}
	}
}

// TestEntrySourceNoSkip: a journal entry arrives whole, newlines inside;
// its continuation is not on the next call, which is not skipped.
func TestEntrySourceNoSkip(t *testing.T) {
	entry := "Nov 25 04:05:01 pbx asterisk[1]: ERROR[12721]: pjproject:0 <?>: \tsip_transport.c Error processing 40 bytes packet from UDP 203.0.113.5:5060 : x:\nREGISTER sip:a SIP/2.0\nCSeq: x\n-- end of packet.\n"
	next := `Nov 25 04:05:02 pbx asterisk[1]: NOTICE[1]: acl.c:1 f: SIP ACL: Rejecting '192.0.2.9' due to a failure to pass ACL 'a'`
	evs := run(newAt(t, "asterisk", noon), entry, next)
	if evs[0] == nil || evs[0].Addr != attacker || evs[0].Kind != event.BadRequest {
		t.Errorf("entry: %+v", evs[0])
	}
	if evs[1] == nil || evs[1].Addr != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("next entry skipped: %+v", evs[1])
	}
}

// TestPjsipLoggerDump: "pjsip set logger on" writes whole packets into the
// full log as VERBOSE messages; a packet body line may look like any log
// line.
func TestPjsipLoggerDump(t *testing.T) {
	forged := `[Nov 25 04:05:01] NOTICE[12721] acl.c: SIP ACL: Rejecting '198.51.100.21' due to a failure to pass ACL 'a'`
	pkt := "INVITE sip:1@198.51.100.10 SIP/2.0\r\nContent-Length: 120\r\n\r\n" + forged + "\r\n"
	lines := []string{"[Nov 25 04:05:01] VERBOSE[12721] res_pjsip_logger.c: <--- Received SIP request (" + itoa(len(pkt)) + " bytes) from UDP:203.0.113.5:5060 --->"}
	lines = append(lines, strings.Split(strings.TrimSuffix(pkt, "\n"), "\n")...)
	lines = append(lines, "", `[Nov 25 04:05:02] NOTICE[12721] acl.c: SIP ACL: Rejecting '192.0.2.9' due to a failure to pass ACL 'a'`)
	evs := run(newAt(t, "asterisk", noon), lines...)
	for i, ev := range evs[:len(evs)-1] {
		if ev != nil {
			t.Errorf("line %d gave %v %v", i, ev.Kind, ev.Addr)
		}
	}
	if last := evs[len(evs)-1]; last == nil || last.Addr != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("line after the packet: %+v", last)
	}
}

// TestRsyslogEscapedNoSkip: rsyslog writes a multi-line message on one line
// with #012 for each newline; the next line is not part of it.
func TestRsyslogEscapedNoSkip(t *testing.T) {
	l := "Nov 25 04:05:01 pbx asterisk[1]: ERROR[12721]: pjproject:0 <?>: #011sip_transport.c Error processing 40 bytes packet from UDP 203.0.113.5:5060 : x:#012REGISTER sip:a SIP/2.0#012-- end of packet."
	next := `Nov 25 04:05:02 pbx asterisk[1]: NOTICE[1]: acl.c:1 f: SIP ACL: Rejecting '192.0.2.9' due to a failure to pass ACL 'a'`
	evs := run(newAt(t, "asterisk", noon), l, next)
	if evs[0] == nil || evs[0].Addr != attacker || evs[1] == nil {
		t.Errorf("%+v / %+v", evs[0], evs[1])
	}
}
