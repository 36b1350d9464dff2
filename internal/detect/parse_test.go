package detect

import (
	"net/netip"
	"testing"
	"time"
	_ "time/tzdata" // the zone tests must not depend on the host's tzdata

	"github.com/pbxguard/pbxguard/internal/event"
)

const regLine = `chan_sip.c: Registration from '<sip:301@example.com>' failed for '192.0.2.7:5060' - Wrong password`

// TestAsteriskPrefixesAndTime: every prefix shape Asterisk and syslog write,
// and the time taken from each.
func TestAsteriskPrefixesAndTime(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, berlin)
	for _, tc := range []struct {
		line string
		want string // RFC3339Nano in UTC; "now" = Options.Now
	}{
		// default dateformat (no year): the year that is not in the future.
		{`[Mar 10 11:00:00] NOTICE[1] ` + regLine, "2026-03-10T10:00:00Z"},
		{`[Mar 11 11:00:00] NOTICE[1] ` + regLine, "2026-03-11T10:00:00Z"}, // < 1 day ahead: clock skew, same year
		{`[Mar 12 11:00:00] NOTICE[1] ` + regLine, "2025-03-12T10:00:00Z"},
		{`[Dec 31 23:59:59] NOTICE[1] ` + regLine, "2025-12-31T22:59:59Z"},
		// custom dateformats
		{`[2024-05-01 10:00:00.123] NOTICE[1] ` + regLine, "2024-05-01T08:00:00.123Z"},
		{`[2024-05-01 10:00:00] NOTICE[1][C-0000001a] ` + regLine, "2024-05-01T08:00:00Z"},
		{`[2024-05-01T10:00:00.5+00:00] NOTICE[1] ` + regLine, "2024-05-01T10:00:00.5Z"},
		{`[Mar  2 09:08:07 2024] NOTICE[1] ` + regLine, "2024-03-02T08:08:07Z"},
		// DST: Berlin switched at 2025-03-30 02:00 → 03:00
		{`[2025-03-30 03:30:00] NOTICE[1] ` + regLine, "2025-03-30T01:30:00Z"},
		{`[2025-03-30 01:30:00] NOTICE[1] ` + regLine, "2025-03-30T00:30:00Z"},
		// plain formatter and syslog / journald
		{`[2024-05-01 10:00:00] NOTICE[1]: chan_sip.c:28468 handle_request_register: Registration from '<sip:301@example.com>' failed for '192.0.2.7:5060' - Wrong password`, "2024-05-01T08:00:00Z"},
		{`Mar  1 15:35:53 pbx asterisk[2350]: NOTICE[1195]: chan_sip.c:23417 in handle_request_register: Registration from '<sip:301@example.com>' failed for '192.0.2.7:5060' - Wrong password`, "2026-03-01T14:35:53Z"},
		{`2024-05-01T10:00:00.123456+02:00 pbx asterisk[2350]: NOTICE[1195][C-00000001]: chan_sip.c:23417 in handle_request_register: Registration from '<sip:301@example.com>' failed for '192.0.2.7:5060' - Wrong password`, "2024-05-01T08:00:00.123456Z"},
		{`pbx asterisk[123]: NOTICE[566]: chan_sip.c:28926 handle_request_register: Registration from '<sip:301@example.com>' failed for '192.0.2.7:5060' - Wrong password`, "now"},
		{`NOTICE[566]: chan_sip.c:28926 handle_request_register: Registration from '<sip:301@example.com>' failed for '192.0.2.7:5060' - Wrong password`, "now"},
		{`[2024-05-01 10:00:00] NOTICE [22382] ` + regLine, "2024-05-01T08:00:00Z"},
	} {
		// one detector per case: a detector locks to its source's header form
		d, _ := New("asterisk", Options{Location: berlin, Now: func() time.Time { return now }})
		var ev event.Event
		if !d.Detect([]byte(tc.line), &ev) {
			t.Errorf("no event: %s", tc.line)
			continue
		}
		if ev.Addr != netip.MustParseAddr("192.0.2.7") || ev.Port != 5060 || ev.Kind != event.AuthFailure || ev.Account != "301" || ev.Service != event.ServiceSIP {
			t.Errorf("event %+v: %s", ev, tc.line)
		}
		want := tc.want
		if want == "now" {
			want = now.UTC().Format(time.RFC3339Nano)
		}
		if got := ev.Time.UTC().Format(time.RFC3339Nano); got != want {
			t.Errorf("time %s, want %s: %s", got, want, tc.line)
		}
	}
}

func TestParseHostPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		addr string
		port uint16
		ok   bool
	}{
		{"1.2.3.4", "1.2.3.4", 0, true},
		{"1.2.3.4:5060", "1.2.3.4", 5060, true},
		{"[2001:db8::1]:5060", "2001:db8::1", 5060, true},
		{"[2001:db8::1]", "2001:db8::1", 0, true},
		{"2001:db8::1", "2001:db8::1", 0, true},
		{"[1.2.3.4]:61470", "1.2.3.4", 61470, true},
		{"::ffff:1.2.3.4", "1.2.3.4", 0, true},
		{"1.2.3.4:65536", "", 0, false},
		{"01.2.3.4", "", 0, false},
		{"1.2.3", "", 0, false},
		{"256.1.1.1", "", 0, false},
		{"fe80::1%eth0", "", 0, false},
		{"example.com", "", 0, false},
		{"[2001:db8::1]5060", "", 0, false},
		{"", "", 0, false},
	} {
		a, p, ok := parseHostPort([]byte(tc.in))
		if ok != tc.ok || (ok && (a != netip.MustParseAddr(tc.addr) || p != tc.port)) {
			t.Errorf("parseHostPort(%q) = %v %d %v", tc.in, a, p, ok)
		}
	}
}

func TestInternerBounded(t *testing.T) {
	in := newInterner(4)
	a := in.get([]byte("1001"))
	if b := in.get([]byte("1001")); b != a {
		t.Fatal("not interned")
	}
	for i := 0; i < 10; i++ {
		in.get([]byte{byte('a' + i)})
	}
	if len(in.m) > 4 {
		t.Errorf("interner grew to %d entries, cap 4", len(in.m))
	}
	if in.get(make([]byte, 200)) != "" {
		t.Error("oversized account kept")
	}
}

// TestAsteriskKinds: one line per message shape and the kind, service and
// account it yields.
func TestAsteriskKinds(t *testing.T) {
	d, _ := New("asterisk", Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
	p := `[Nov 25 04:00:00] `
	for _, tc := range []struct {
		line    string
		addr    string
		kind    event.Kind
		svc     event.Service
		account string
	}{
		{p + `NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"1003" <sip:1003@198.51.100.10>' failed for '203.0.113.77:5060' (callid: 4-12873@203.0.113.77) - Not match Endpoint ACL`, "203.0.113.77", event.ACLViolation, event.ServicePJSIP, "1003"},
		{p + `NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1@x>' failed for '[2001:db8::66]:5060' (callid: a) - No matching endpoint found after 5 tries in 0.312 ms`, "2001:db8::66", event.UnknownAccount, event.ServicePJSIP, "1"},
		{p + `NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:1@x>' failed for '192.0.2.1:5060' (callid: a) - Not match Endpoint Contact ACL`, "192.0.2.1", event.ACLViolation, event.ServicePJSIP, "1"},
		{p + `NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:1@x>' failed for '192.0.2.1:5060' (callid: a) - Error to authenticate`, "192.0.2.1", event.AuthFailure, event.ServicePJSIP, "1"},
		{p + `NOTICE[1] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.130:5060) to extension '01197225550281' rejected because extension not found in context 'from-external'.`, "203.0.113.130", event.CallRejected, event.ServicePJSIP, "01197225550281"},
		{p + `NOTICE[1][C-0000000e] chan_sip.c: Call from '' (203.0.113.130:5060) to extension '003726812119' rejected because extension not found in context 'default'.`, "203.0.113.130", event.CallRejected, event.ServiceSIP, "003726812119"},
		{p + `NOTICE[1] chan_sip.c: Registration from '"2003" <sip:2003@198.51.100.10>' failed for '203.0.113.77:5060' - Device does not match ACL`, "203.0.113.77", event.ACLViolation, event.ServiceSIP, "2003"},
		{p + `NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '192.0.2.1' - Device not configured to use this transport type`, "192.0.2.1", event.BadRequest, event.ServiceSIP, "1"},
		{p + `NOTICE[1] manager.c: 203.0.113.222 failed to pass IP ACL as 'pbxadmin'`, "203.0.113.222", event.ACLViolation, event.ServiceAMI, "pbxadmin"},
		{p + `NOTICE[1] manager.c: 203.0.113.222 tried to authenticate with nonexistent user 'admin'`, "203.0.113.222", event.UnknownAccount, event.ServiceAMI, "admin"},
		{p + `NOTICE[1] acl.c: Manager User ACL: Rejecting '203.0.113.222' due to a failure to pass ACL '(BASELINE)'`, "203.0.113.222", event.ACLViolation, event.ServiceAMI, ""},
		{p + `NOTICE[1] acl.c: SIP Peer ACL: Rejecting '203.0.113.77' due to a failure to pass ACL '(BASELINE)'`, "203.0.113.77", event.ACLViolation, event.ServiceSIP, ""},
		{p + `NOTICE[1] chan_iax2.c: Host 203.0.113.233 failed MD5 authentication for '5001' (19d7 != b9fd)`, "203.0.113.233", event.AuthFailure, event.ServiceIAX2, "5001"},
		{p + `ERROR[1] chan_iax2.c: Call rejected, CallToken Support required. If unexpected, resolve by placing address 203.0.113.233:41500 in the calltokenoptional list or setting user 5001 requirecalltoken=no`, "203.0.113.233", event.BadRequest, event.ServiceIAX2, ""},
		{p + `NOTICE[1] chan_iax2.c: Rejected connect attempt from 192.0.2.9, who was trying to reach '100@default'`, "192.0.2.9", event.UnknownAccount, event.ServiceIAX2, ""},
		{p + `WARNING[1] chan_iax2.c: Host 192.0.2.9:4569 failed to authenticate as guest`, "192.0.2.9", event.AuthFailure, event.ServiceIAX2, ""},
		{p + `SECURITY[1] res_security_log.c: SecurityEvent="RequestBadFormat",EventTV="2026-11-25T04:00:00.000+0000",Severity="Error",Service="SIP",EventVersion="2",SessionID="0x1",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/192.0.2.9/5060",RequestType="x"`, "192.0.2.9", event.BadRequest, event.ServiceSIP, ""},
		{p + `SECURITY[1] res_security_log.c: SecurityEvent="InvalidTransport",EventTV="2026-11-25T04:00:00.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="x",LocalAddress="IPV6/WSS/2001:db8::10/8089",RemoteAddress="IPV6/WSS/2001:db8::9/40000",AttemptedTransport="WSS"`, "2001:db8::9", event.BadRequest, event.ServicePJSIP, "1001"},
		{p + `SECURITY[1] res_security_log.c: SecurityEvent="UnexpectedAddress",EventTV="2026-11-25T04:00:00.000+0000",Severity="Error",Service="IAX2",EventVersion="2",AccountID="5001",SessionID="x",LocalAddress="IPV4/UDP/198.51.100.10/4569",RemoteAddress="IPV4/UDP/192.0.2.9/4569",ExpectedAddress="IPV4/UDP/192.0.2.8/4569"`, "192.0.2.9", event.BadRequest, event.ServiceIAX2, "5001"},
		{p + `SECURITY[1] res_security_log.c: SecurityEvent="AuthMethodNotAllowed",EventTV="x",Severity="Error",Service="AMI",EventVersion="1",AccountID="u",SessionID="x",LocalAddress="IPV4/TCP/0.0.0.0/5038",RemoteAddress="IPV4/TCP/192.0.2.9/1234",AuthMethod="plain"`, "192.0.2.9", event.BadRequest, event.ServiceAMI, "u"},
		{p + `SECURITY[1] res_security_log.c: SecurityEvent="RequestNotAllowed",EventTV="x",Severity="Error",Service="AMI",EventVersion="1",AccountID="u",SessionID="x",LocalAddress="IPV4/TCP/0.0.0.0/5038",RemoteAddress="IPV4/TCP/192.0.2.9/1234",RequestType="Originate",RequestParams="x"`, "192.0.2.9", event.BadRequest, event.ServiceAMI, "u"},
		{`[2013-11-11 14:33:38] WARNING[12124][C-00000001] Ext. s: "Rejecting unknown SIP connection from [2001:db8::1]:5060"`, "2001:db8::1", event.UnknownAccount, event.ServiceSIP, ""},
	} {
		var ev event.Event
		if !d.Detect([]byte(tc.line), &ev) {
			t.Errorf("no event: %s", tc.line)
			continue
		}
		if ev.Addr != netip.MustParseAddr(tc.addr) || ev.Kind != tc.kind || ev.Service != tc.svc || ev.Account != tc.account || ev.Detector != "asterisk" || ev.Detail == "" {
			t.Errorf("got %v %v %v %q %q, want %s %v %v %q: %s", ev.Addr, ev.Kind, ev.Service, ev.Account, ev.Detail, tc.addr, tc.kind, tc.svc, tc.account, tc.line)
		}
	}
	// Not attacks.
	for _, l := range []string{
		p + `NOTICE[1] chan_sip.c: Registration from '<sip:1@x>' failed for '192.0.2.1' - RTP initialization failed`,
		p + `WARNING[1] res_pjsip_session.c: 106: Call (UDP:192.168.1.34:5060) to extension '116' - Unable to create channel; reason: busy`,
		p + `NOTICE[1] res_rtp_asterisk.c: Strict RTP learning complete - Locking on source address 192.0.2.1:1000`,
		p + `SECURITY[1] res_security_log.c: SecurityEvent="SessionLimit",EventTV="x",Severity="Error",Service="AMI",EventVersion="1",AccountID="u",SessionID="x",LocalAddress="IPV4/TCP/0.0.0.0/5038",RemoteAddress="IPV4/TCP/192.0.2.9/1234"`,
		p + `VERBOSE[1] manager.c: Manager 'admin' logged on from 127.0.0.1`,
		`garbage`, ``,
	} {
		var ev event.Event
		if d.Detect([]byte(l), &ev) {
			t.Errorf("event %v %v from a non-attack line: %s", ev.Kind, ev.Addr, l)
		}
	}
}
