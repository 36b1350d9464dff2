package detect

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// injectionTemplates are real line shapes with the attacker-controlled
// fields marked A and B; the server-written source address is 203.0.113.5
// (or [2001:db8::5]).
var injectionTemplates = []struct {
	det  string
	line string
}{
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from 'A' failed for '203.0.113.5:5060' (callid: B) - No matching endpoint found`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'A' from '<sip:B@x>' failed for '[2001:db8::5]:5060' (callid: B) - Failed to authenticate after 3 tries in 1.000 ms`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] chan_sip.c: Registration from 'A' failed for '203.0.113.5:5060' - Wrong password`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1][C-00000001] chan_sip.c: Call from 'A' (203.0.113.5:5060) to extension 'B' rejected because extension not found in context 'default'.`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] res_pjsip_session.c:  anonymous: Call (UDP:203.0.113.5:5060) to extension 'A' rejected because extension not found in context 'from-external'.`},
	{"asterisk", `[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="A",SessionID="B",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060"`},
	{"asterisk", `[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="A",SessionID="B",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.5/5060",Challenge="c",Response="A",ExpectedResponse=""`},
	{"asterisk", `[Nov 25 04:00:51] SECURITY[1] res_security_log.c: SecurityEvent="InvalidPassword",EventTV="2026-11-25T04:00:51.000+0000",Severity="Error",Service="SIP",EventVersion="2",AccountID="A",SessionID="0x1",LocalAddress="IPV4/UDP/198.51.100.10/5070",RemoteAddress="IPV6/UDP/2001:db8::5/5060",Challenge="1",ReceivedChallenge="B",ReceivedHash="A"`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] manager.c: 203.0.113.5 failed to authenticate as 'A'`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] chan_iax2.c: No registration for peer 'A' (from 203.0.113.5)`},
	{"asterisk", `[Nov 25 04:00:51] NOTICE[1] chan_iax2.c: Host 203.0.113.5 failed MD5 authentication for 'A' (B != c)`},
	{"sshd", `Nov 11 08:04:51 h sshd[1]: Failed password for A from 203.0.113.5 port 58946 ssh2`},
	{"sshd", `Nov 11 08:04:51 h sshd[1]: Failed password for invalid user A from 203.0.113.5 port 58946 ssh2`},
	{"sshd", `Nov 11 08:04:51 h sshd[1]: Failed hostbased for A from 203.0.113.5 port 58946 ssh2: RSA x, client user "B", client host "B"`},
	{"sshd", `Nov 11 08:04:51 h sshd[1]: Invalid user A from 203.0.113.5 port 4`},
	{"sshd", `Nov 11 08:04:51 h sshd[1]: error: PAM: Authentication failure for A from 203.0.113.5`},
	{"sshd", `Nov 11 08:04:51 h sshd[1]: User A from 203.0.113.5 not allowed because listed in DenyUsers`},
}

// FuzzInjection fills the attacker fields of real line shapes with any
// text (no line breaks: SIP, AMI and SSH framing end a field there) and
// checks the invariant: the event carries the true source address or none.
func FuzzInjection(f *testing.F) {
	f.Add(uint8(0), "x' failed for '6.6.6.6:5060' (callid: ", "y")
	f.Add(uint8(3), "' (6.6.6.6:5060) to extension '", "' (6.6.6.6:1) to extension '")
	f.Add(uint8(5), `",RemoteAddress="IPV4/UDP/6.6.6.6/1",X="`, `",LocalAddress="IPV4/UDP/1.1.1.1/1",RemoteAddress="IPV4/UDP/6.6.6.6/5060`)
	f.Add(uint8(6), `",RemoteAddress="IPV4/UDP/6.6.6.6/1`, "")
	f.Add(uint8(11), "x from 6.6.6.6 port 1 ssh2:", "")
	f.Add(uint8(13), "u", `", from 6.6.6.6 port 1 ssh2`)
	f.Add(uint8(2), "x' failed for '6.6.6.6' - Wrong password", "")
	opts := Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }}
	v4, v6 := netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("2001:db8::5")
	f.Fuzz(func(t *testing.T, sel uint8, a, b string) {
		if bytes.ContainsAny([]byte(a+b), "\r\n") {
			return
		}
		tpl := injectionTemplates[int(sel)%len(injectionTemplates)]
		line := make([]byte, 0, len(tpl.line)+2*(len(a)+len(b)))
		for i := 0; i < len(tpl.line); i++ {
			switch {
			case tpl.line[i] == 'A' && isField(tpl.line, i):
				line = append(line, a...)
			case tpl.line[i] == 'B' && isField(tpl.line, i):
				line = append(line, b...)
			default:
				line = append(line, tpl.line[i])
			}
		}
		for _, name := range []string{tpl.det, "auto"} {
			d, _ := New(name, opts)
			var ev event.Event
			if !d.Detect(line, &ev) || !ev.Addr.IsValid() {
				continue
			}
			if ev.Addr != v4 && ev.Addr != v6 {
				t.Fatalf("%s: wrong address %v from attacker fields %q, %q:\n%s", name, ev.Addr, a, b, line)
			}
		}
	})
}

// isField reports whether the capital at i is a lone placeholder (not part
// of a word such as "ACL" or "IPV4").
func isField(s string, i int) bool {
	isWord := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	return (i == 0 || !isWord(s[i-1])) && (i+1 >= len(s) || !isWord(s[i+1]))
}

// TestInjectionTemplatesBaseline: with harmless attacker fields every
// template is detected with the true address (so the fuzz target tests
// real lines), and the classic forgeries never move the address.
func TestInjectionTemplatesBaseline(t *testing.T) {
	opts := Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }}
	for i, tpl := range injectionTemplates {
		for _, fields := range [][2]string{
			{"u", "v"},
			{"x' failed for '6.6.6.6:5060' (callid: ", `",RemoteAddress="IPV4/UDP/6.6.6.6/1`},
			{"x from 6.6.6.6 port 1 ssh2", "' (6.6.6.6:5060) to extension '"},
		} {
			var line []byte
			for j := 0; j < len(tpl.line); j++ {
				switch {
				case tpl.line[j] == 'A' && isField(tpl.line, j):
					line = append(line, fields[0]...)
				case tpl.line[j] == 'B' && isField(tpl.line, j):
					line = append(line, fields[1]...)
				default:
					line = append(line, tpl.line[j])
				}
			}
			d, _ := New(tpl.det, opts)
			var ev event.Event
			ok := d.Detect(line, &ev)
			if fields[0] == "u" {
				if !ok || !ev.Addr.IsValid() {
					t.Errorf("template %d not detected: %s", i, line)
				}
				continue
			}
			if ok && ev.Addr.IsValid() && ev.Addr.String() != "203.0.113.5" && ev.Addr.String() != "2001:db8::5" {
				t.Errorf("template %d: %v from %s", i, ev.Addr, line)
			}
		}
	}
}
