package jail

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// A mistyped password as Asterisk reports it when both the messages and
// the security log are followed: a NOTICE, a ChallengeSent and a
// ChallengeResponseFailed for the same request.
func typo(at time.Time, addr netip.Addr, svc event.Service) []event.Event {
	return []event.Event{
		{Time: at, Addr: addr, Service: svc, Kind: event.AuthFailure, Account: "1001"},
		{Time: at, Addr: addr, Service: svc, Kind: event.ChallengeSent, Account: "1001", Structured: true},
		{Time: at, Addr: addr, Service: svc, Kind: event.AuthFailure, Account: "1001", Structured: true},
	}
}

func TestTwinsCountOnce(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	phone := netip.MustParseAddr("198.51.100.21")
	cases := []struct {
		name       string
		cfg        Config
		svc        event.Service
		typos      int
		wantBanned bool
	}{
		{"four typos, both logs: not banned", Config{StructuredSource: true}, event.ServicePJSIP, 4, false},
		{"five typos, both logs: banned", Config{StructuredSource: true}, event.ServicePJSIP, 5, true},
		{"chan_sip the same", Config{StructuredSource: true}, event.ServiceSIP, 4, false},
		{"AMI the same", Config{StructuredSource: true}, event.ServiceAMI, 4, false},
		// Without StructuredSource the jail learns of the security log from
		// its first structured event: only the very first NOTICE counts.
		{"learnt: four typos count five", Config{}, event.ServicePJSIP, 4, true},
		{"learnt: three typos count four", Config{}, event.ServicePJSIP, 3, false},
		{"twin counting off: three typos count six", Config{TwinWindow: -1}, event.ServicePJSIP, 3, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Name = "asterisk"
			clk := &fakeClock{t: base}
			j, err := New(c.cfg, NewAllowlist(nil), nil, clk)
			if err != nil {
				t.Fatal(err)
			}
			banned := false
			for i := 0; i < c.typos; i++ {
				at := base.Add(time.Duration(i) * 20 * time.Second)
				clk.t = at
				for _, ev := range typo(at, phone, c.svc) {
					if _, ok := j.Observe(&ev); ok {
						banned = true
					}
				}
				if len(j.Tick(at.Add(10*time.Second))) > 0 {
					banned = true
				}
			}
			if banned != c.wantBanned {
				t.Fatalf("banned = %v, want %v (stats %+v)", banned, c.wantBanned, j.Stats())
			}
		})
	}
}

func TestTwinsOnlyForServicesWithStructuredEvents(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: base}
	j, err := New(Config{Name: "asterisk", StructuredSource: true}, NewAllowlist(nil), nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	iax := netip.MustParseAddr("203.0.113.233")
	for i := 0; i < 5; i++ {
		ev := event.Event{Time: base.Add(time.Duration(i) * time.Second), Addr: iax, Service: event.ServiceIAX2, Kind: event.AuthFailure}
		if d, ok := j.Observe(&ev); ok {
			if i != 4 || d.Failures != 5 {
				t.Fatalf("IAX2 ban at failure %d with %d failures", i+1, d.Failures)
			}
			return
		}
	}
	t.Fatal("5 IAX2 NOTICE failures (no structured twin exists) did not ban")
}

func TestTwinsStructuredSourceAndWindow(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("203.0.113.77")
	notice := func(at time.Time) event.Event {
		return event.Event{Time: at, Addr: addr, Service: event.ServicePJSIP, Kind: event.UnknownAccount}
	}
	// StructuredSource: NOTICE twins are skipped from the first line on.
	clk := &fakeClock{t: base}
	j, _ := New(Config{Name: "a", StructuredSource: true}, NewAllowlist(nil), nil, clk)
	for i := 0; i < 10; i++ {
		ev := notice(base.Add(time.Duration(i) * time.Second))
		if _, ok := j.Observe(&ev); ok {
			t.Fatal("a NOTICE twin counted although the jail follows a structured source")
		}
	}
	if got := j.Stats().TwinsSkipped; got != 10 {
		t.Fatalf("TwinsSkipped = %d, want 10", got)
	}
	// Without it, NOTICEs count until a structured event is seen, and again
	// once none has been seen for TwinWindow.
	j, _ = New(Config{Name: "b", TwinWindow: time.Minute, MaxRetry: 3}, NewAllowlist(nil), nil, clk)
	other := netip.MustParseAddr("203.0.113.78")
	st := event.Event{Time: base, Addr: other, Service: event.ServicePJSIP, Kind: event.ChallengeSent, Structured: true}
	j.Observe(&st)
	for i := 0; i < 3; i++ {
		ev := notice(base.Add(time.Duration(10+i) * time.Second))
		if _, ok := j.Observe(&ev); ok {
			t.Fatal("NOTICE counted within the twin window")
		}
	}
	banned := false
	for i := 0; i < 3; i++ {
		ev := notice(base.Add(2*time.Minute + time.Duration(i)*time.Second))
		if _, ok := j.Observe(&ev); ok {
			banned = true
		}
	}
	if !banned {
		t.Fatal("NOTICEs after the twin window (no structured source seen) did not count")
	}
}
