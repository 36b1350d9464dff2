package detect

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/pbxguard/pbxguard/internal/event"
)

func jsonLine(ts, level, file, msg string) string {
	var b strings.Builder
	b.WriteString(`{"hostname":"pbx","timestamp":"` + ts + `","identifiers":{"lwp":12666,"callid":""},"logmsg":{"location":{"filename":"` + file + `","function":"f","line":676},"level":"` + level + `","message":"`)
	for _, c := range msg {
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteRune(c)
		}
	}
	b.WriteString(`\n"}}`)
	return b.String()
}

// TestJSONFormatter: Asterisk's [json] logger formatter.
func TestJSONFormatter(t *testing.T) {
	reg := jsonLine("Nov 25 04:00:51", "NOTICE", "res_pjsip/pjsip_distributor.c",
		`Request 'REGISTER' from '"1004" <sip:1004@198.51.100.10>' failed for '203.0.113.5:5060' (callid: x) - Failed to authenticate`)
	sec := jsonLine("2026-11-25 04:00:52.123", "SECURITY", "res_security_log.c", rtSec("InvalidAccountID", "x", ""))
	// an attacker field holding a newline stays inside the message
	forged := jsonLine("Nov 25 04:00:53", "NOTICE", "manager.c",
		"203.0.113.5 tried to authenticate with nonexistent user 'a\n[Nov 25 04:02:47] NOTICE[12979] manager.c: 198.51.100.21 failed to authenticate as 'admin''")
	verbose := jsonLine("Nov 25 04:00:54", "VERBOSE", "pbx.c", "Executing")
	uni := `{"hostname":"pbx","timestamp":"Nov 25 04:00:55","identifiers":{"lwp":1,"callid":"[C-00000001]"},"logmsg":{"location":{"filename":"chan_sip.c","function":"f","line":1},"level":"NOTICE","message":"Registration from '\"J\u00fcrgen\" <sip:2002@x>' failed for '2001:db8::5' - Wrong password\n"}}`
	bracket := `[Nov 25 04:00:51] NOTICE[1] acl.c: SIP ACL: Rejecting '198.51.100.21' due to a failure to pass ACL 'a'`
	d := newAt(t, "asterisk", noon)
	evs := run(d, reg, sec, forged, verbose, uni, bracket, reg)
	if evs[0] == nil || evs[0].Addr != attacker || evs[0].Kind != event.AuthFailure || evs[0].Account != "1004" || evs[0].Time.Format("15:04:05") != "04:00:51" {
		t.Errorf("notice: %+v", evs[0])
	}
	if evs[1] == nil || evs[1].Addr != attacker || !evs[1].Structured || evs[1].Time.Format("15:04:05.000") != "04:00:52.123" {
		t.Errorf("security: %+v", evs[1])
	}
	if evs[2] == nil || evs[2].Addr != attacker || evs[2].Kind != event.UnknownAccount {
		t.Errorf("newline inside the message: %+v", evs[2])
	}
	if evs[3] != nil {
		t.Errorf("verbose: %+v", evs[3])
	}
	if evs[4] == nil || evs[4].Addr != netip.MustParseAddr("2001:db8::5") {
		t.Errorf("\\u escape: %+v", evs[4])
	}
	if evs[5] != nil {
		t.Errorf("bracketed line in a JSON source: %+v", evs[5])
	}
	if evs[6] == nil {
		t.Errorf("JSON after a refused line")
	}
	for _, bad := range []string{
		`{"timestamp":"Nov 25 04:00:51","logmsg":{"location":{"filename":"acl.c"},"level":"NOTICE","message":"SIP ACL: Rejecting '203.0.113.5' due to a failure to pass ACL 'a'"}}`, // no lwp
		strings.Replace(reg, `"lwp":12666`, `"lwp":"x"`, 1),
		strings.Replace(reg, `"timestamp":"Nov 25 04:00:51"`, `"timestamp":"soon"`, 1),
		strings.TrimSuffix(reg, "}"),
		reg + "x",
	} {
		if ev := run(newAt(t, "asterisk", noon), bad)[0]; ev != nil {
			t.Errorf("accepted %+v: %s", ev, bad)
		}
	}
}

func TestJSONZeroAllocs(t *testing.T) {
	lines := [][]byte{
		[]byte(jsonLine("Nov 25 04:00:51", "NOTICE", "chan_sip.c", `Registration from '"J" <sip:2002@x>' failed for '203.0.113.5' - Wrong password`)),
		[]byte(jsonLine("Nov 25 04:00:52", "SECURITY", "res_security_log.c", rtSec("ChallengeResponseFailed", "x", `,Challenge="1",Response="2",ExpectedResponse=""`))),
	}
	d := newAt(t, "asterisk", noon)
	var ev event.Event
	for _, l := range lines {
		if !d.Detect(l, &ev) {
			t.Fatalf("no event: %s", l)
		}
	}
	if a := testing.AllocsPerRun(20, func() {
		for _, l := range lines {
			d.Detect(l, &ev)
		}
	}); a != 0 {
		t.Errorf("%.1f allocations per pass", a)
	}
}
