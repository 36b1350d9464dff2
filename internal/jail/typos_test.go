package jail_test

// One mistyped password of a legit phone is written by Asterisk twice
// (messages: pjsip "Failed to authenticate"; security:
// ChallengeResponseFailed). The daemon follows both files (what
// config.readLoggerConf picks for the corpus logger.conf): without twin
// counting, three typos made five failures and a ban.

import (
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/jail"
)

type typoClock struct{ t time.Time }

func (c *typoClock) Now() time.Time { return c.t }

func TestTyposBothLogsThroughDetector(t *testing.T) {
	msg := `[Nov 25 04:10:SS] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '"Alice Office" <sip:1001@198.51.100.10>' failed for '198.51.100.21:5060' (callid: 1-12998@198.51.100.21) - Failed to authenticate`
	sec := []string{
		`[Nov 25 04:10:SS] SECURITY[12729] res_security_log.c: SecurityEvent="ChallengeSent",EventTV="2026-11-25T04:10:SS.414+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="1-12998@198.51.100.21",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/198.51.100.21/5060",Challenge=""`,
		`[Nov 25 04:10:SS] SECURITY[12729] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:10:SS.414+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="1-12998@198.51.100.21",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/198.51.100.21/5060",Challenge="1",Response="2",ExpectedResponse=""`,
	}
	for typos := 1; typos <= 3; typos++ {
		for _, both := range []bool{false, true} {
			d, _ := detect.New("asterisk", detect.Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
			clk := &typoClock{}
			j, _ := jail.New(jail.Config{Name: "asterisk"}, jail.NewAllowlist(nil), nil, clk)
			banned := false
			for i := 1; i <= typos; i++ {
				ss := []string{"10", "20", "30"}[i-1]
				var lines []string
				if both {
					lines = append(lines, strings.ReplaceAll(msg, "SS", ss))
				}
				for _, s := range sec {
					lines = append(lines, strings.ReplaceAll(s, "SS", ss))
				}
				for _, l := range lines {
					var ev event.Event
					if !d.Detect([]byte(l), &ev) {
						continue
					}
					clk.t = ev.Time
					if _, ok := j.Observe(&ev); ok {
						banned = true
					}
					if len(j.Tick(ev.Time)) > 0 {
						banned = true
					}
				}
			}
			if len(j.Tick(clk.t.Add(10*time.Second))) > 0 {
				banned = true
			}
			t.Logf("typos=%d messages+security=%v banned=%v", typos, both, banned)
			if banned && typos < 5 {
				t.Errorf("legit phone banned after %d typo(s) (both logs: %v)", typos, both)
			}
		}
	}
}
