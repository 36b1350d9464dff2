package detect

import (
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// The dialled number of a rejected call is its Account: the fraud rules
// use it to spot unauthenticated calls to international numbers.
func TestCallRejectedAccountIsDialledNumber(t *testing.T) {
	now := func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }
	cases := []struct{ line, addr, account string }{
		{`[Nov 25 04:02:18] NOTICE[12690][C-00000003] chan_sip.c: Call from '' (203.0.113.130:5070) to extension '011442079460038' rejected because extension not found in context 'default'.`,
			"203.0.113.130", "011442079460038"},
		{`[Nov 25 04:02:19] NOTICE[12701] res_pjsip_session.c: anonymous: Call (UDP:203.0.113.130:5060) to extension '00442079460075' rejected because extension not found in context 'from-external'.`,
			"203.0.113.130", "00442079460075"},
		{`[Nov 25 04:02:20] NOTICE[12701] res_pjsip_session.c: Call from 'anonymous' (UDP:203.0.113.131:5060) to extension '+972255502810' rejected because extension not found in context 'from-external'.`,
			"203.0.113.131", "+972255502810"},
	}
	for _, c := range cases {
		d, err := New("asterisk", Options{Location: time.UTC, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		var ev event.Event
		if !d.Detect([]byte(c.line), &ev) {
			t.Fatalf("no event for %s", c.line)
		}
		if ev.Kind != event.CallRejected || ev.Addr.String() != c.addr || ev.Account != c.account {
			t.Errorf("%s:\n got kind %v addr %v account %q; want call_rejected %s %q", c.line, ev.Kind, ev.Addr, ev.Account, c.addr, c.account)
		}
	}
}
