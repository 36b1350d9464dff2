package detect

import (
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// The NOTICE and the security event of one pjsip request carry the same
// request key (the Call-ID, which pjsip writes as the SessionID), so the
// jail can pair them; another Call-ID gives another key.
func TestRequestKey(t *testing.T) {
	lines := []struct {
		line string
		cid  string
	}{
		{`[Nov 25 04:00:27] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"Bob Remote" <sip:1002@198.51.100.10>' failed for '203.0.113.60:5060' (callid: 1-12790@203.0.113.60) - Failed to authenticate`, "1-12790@203.0.113.60"},
		{`[Nov 25 04:00:27] SECURITY[12729] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:00:27.875+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1002",SessionID="1-12790@203.0.113.60",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.60/5060",Challenge="1795579227/16daae487614b2f61637b405b1ba9183",Response="ff62d04c8f7c2501a886a113a0d387e2",ExpectedResponse=""`, "1-12790@203.0.113.60"},
		// a Call-ID that imitates the server's fields: the SessionID runs to
		// the LocalAddress before the real RemoteAddress
		{`[Nov 25 04:00:28] SECURITY[12729] res_security_log.c: SecurityEvent="InvalidAccountID",EventTV="2026-11-25T04:00:28.875+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="100",SessionID="x",LocalAddress="IPV4/UDP/1.1.1.1/1",RemoteAddress="IPV4/UDP/6.6.6.6/1",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.61/5060"`, `x",LocalAddress="IPV4/UDP/1.1.1.1/1",RemoteAddress="IPV4/UDP/6.6.6.6/1`},
		// the ambiguous-candidate path of a pjsip request
		{`[Nov 25 04:00:29] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:a b@198.51.100.10>' failed for '203.0.113.62:5060' (callid: abc) - No matching endpoint found`, "abc"},
		{`[Nov 25 04:00:29] NOTICE[1] chan_sip.c: Registration from '<sip:100@198.51.100.10>' failed for '203.0.113.63:5060' - Wrong password`, ""},
	}
	for _, c := range lines {
		d, _ := New("asterisk", Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
		var ev event.Event
		if !d.Detect([]byte(c.line), &ev) || !ev.Addr.IsValid() {
			t.Fatalf("not detected with an address: %s (%+v)", c.line, ev)
		}
		if want := event.RequestKey([]byte(c.cid)); ev.Request != want {
			t.Errorf("%.60s…: Request %x, want %x (key of %q)", c.line, ev.Request, want, c.cid)
		}
	}
	if event.RequestKey([]byte("1-12790@203.0.113.60")) == event.RequestKey([]byte("1-12791@203.0.113.60")) || event.RequestKey(nil) != 0 {
		t.Fatal("RequestKey does not tell requests apart")
	}
}
