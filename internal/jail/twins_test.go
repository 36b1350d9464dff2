package jail

import (
	"fmt"
	"strings"

	"github.com/pbxguard/pbxguard/internal/detect"
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
		{"four typos, both logs: not banned", Config{}, event.ServicePJSIP, 4, false},
		{"five typos, both logs: banned", Config{}, event.ServicePJSIP, 5, true},
		{"chan_sip the same", Config{}, event.ServiceSIP, 4, false},
		{"AMI the same", Config{}, event.ServiceAMI, 4, false},
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
	j, err := New(Config{Name: "asterisk"}, NewAllowlist(nil), nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	iax := netip.MustParseAddr("203.0.113.233")
	for i := 0; i < 5; i++ {
		st := event.Event{Time: base.Add(time.Duration(i) * time.Second), Addr: iax, Service: event.ServicePJSIP, Kind: event.AuthFailure, Structured: true}
		if i == 0 {
			j.Observe(&st) // counted: 5 failures in all from here
		}
		ev := event.Event{Time: base.Add(time.Duration(i) * time.Second), Addr: iax, Service: event.ServiceIAX2, Kind: event.AuthFailure}
		if d, ok := j.Observe(&ev); ok {
			if i != 3 || d.Failures != 5 {
				t.Fatalf("IAX2 ban at failure %d with %d failures", i+1, d.Failures)
			}
			return
		}
	}
	t.Fatal("5 IAX2 NOTICE failures (no structured twin exists) did not ban")
}

// observeAll feeds evs (ticking at each event's time) and reports the
// first decision.
func observeAll(t *testing.T, j *Jail, clk *fakeClock, evs []event.Event) (Decision, int, bool) {
	t.Helper()
	for i := range evs {
		clk.t = evs[i].Time
		if d, ok := j.Observe(&evs[i]); ok {
			return d, i, true
		}
		if ds := j.Tick(evs[i].Time); len(ds) > 0 {
			return ds[0], i, true
		}
	}
	return Decision{}, len(evs), false
}

// Issue 9 (a): one ChallengeSent of a legitimate phone made the jail skip
// every NOTICE of the next hour, from any address: an attacker's ten
// "Failed to authenticate" went uncounted. Twins pair per request now.
func TestTwinsOtherAddressNotHidden(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	phone := netip.MustParseAddr("198.51.100.21")
	attacker := netip.MustParseAddr("203.0.113.99")
	for _, structured := range []event.Kind{event.ChallengeSent, event.AuthFailure, event.UnknownAccount} {
		clk := &fakeClock{t: base}
		j, _ := New(Config{Name: "asterisk"}, NewAllowlist(nil), nil, clk)
		evs := []event.Event{{Time: base, Addr: phone, Port: 5060, Service: event.ServicePJSIP, Kind: structured, Account: "1001", Structured: true, Request: 42}}
		for i := range 10 {
			evs = append(evs, event.Event{Time: base.Add(time.Duration(i) * time.Second), Addr: attacker, Port: 5060,
				Service: event.ServicePJSIP, Kind: event.AuthFailure, Account: "1001", Request: 42})
		}
		d, at, ok := observeAll(t, j, clk, evs)
		if !ok || d.Addr != attacker || at != 5 || d.Failures != 5 {
			t.Fatalf("after a %v of %v: decision %v at event %d (%+v), want the attacker banned at its 5th NOTICE (stats %+v)", structured, phone, ok, at, d, j.Stats())
		}
	}
}

// Issue 9 (b): an attacker whose digest response is 9 KB makes every
// ChallengeResponseFailed exceed Asterisk's 8191-byte cut (read as
// injection_suspect, no address); its NOTICE twin was skipped because the
// jail had seen a structured event: unlimited guessing. Through the
// asterisk detector, one file holding both (a messages channel with the
// security level), after a legit phone's ChallengeSent.
func TestTwinsCutStructuredHidesNothing(t *testing.T) {
	d, err := detect.New("asterisk", detect.Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{
		`[Nov 25 04:10:00] SECURITY[12729] res_security_log.c: SecurityEvent="ChallengeSent",EventTV="2026-11-25T04:10:00.414+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="1-12998@198.51.100.21",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/198.51.100.21/5060",Challenge=""`,
	}
	huge := strings.Repeat("a", 9000)
	for i := range 8 {
		ss := fmt.Sprintf("%02d", 10+i)
		cid := fmt.Sprintf("guess-%d@203.0.113.99", i)
		crf := `[Nov 25 04:10:` + ss + `] SECURITY[12729] res_security_log.c: SecurityEvent="ChallengeResponseFailed",EventTV="2026-11-25T04:10:` + ss + `.414+0000",Severity="Error",Service="PJSIP",EventVersion="1",AccountID="1001",SessionID="` + cid + `",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.99/5062",Challenge="1/2",Response="` + huge + `",ExpectedResponse=""`
		crf = crf[:8191] // Asterisk's cut
		notice := `[Nov 25 04:10:` + ss + `] NOTICE[12666] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1001@198.51.100.10>' failed for '203.0.113.99:5062' (callid: ` + cid + `) - Failed to authenticate`
		if i%2 == 0 {
			lines = append(lines, crf, notice)
		} else {
			lines = append(lines, notice, crf)
		}
	}
	clk := &fakeClock{}
	j, _ := New(Config{Name: "asterisk"}, NewAllowlist(nil), nil, clk)
	var evs []event.Event
	suspects := 0
	for _, l := range lines {
		var ev event.Event
		if !d.Detect([]byte(l), &ev) {
			t.Fatalf("not detected: %.120s", l)
		}
		if ev.Kind == event.InjectionSuspect {
			suspects++
		}
		evs = append(evs, ev)
	}
	if suspects != 8 {
		t.Fatalf("%d injection_suspect lines, want 8 (the cut security events)", suspects)
	}
	dec, at, ok := observeAll(t, j, clk, evs)
	if !ok || dec.Addr != netip.MustParseAddr("203.0.113.99") || dec.Failures != 5 {
		t.Fatalf("decision %v at %d: %+v (stats %+v); want 203.0.113.99 banned after 5 NOTICEs", ok, at, dec, j.Stats())
	}
}

// The two files are read by two goroutines: a NOTICE may be judged before
// or after its security twin. Either way one request counts once, and a
// twin pairs with one event only.
func TestTwinsEitherOrder(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("198.51.100.21")
	mk := func(sec int, structured bool, req uint64, acct string, port uint16) event.Event {
		return event.Event{Time: base.Add(time.Duration(sec) * time.Second), Addr: addr, Port: port, Service: event.ServicePJSIP,
			Kind: event.AuthFailure, Account: acct, Request: req, Structured: structured}
	}
	wire := func(sec int, req uint64, acct string, port uint16) event.Event {
		return event.Event{Time: base.Add(time.Duration(sec) * time.Second), Addr: addr, Port: port, Service: event.ServiceSIP,
			Kind: event.AuthFailure, Account: acct, Request: req, Structured: true, Wire: true, Detector: "sip-sensor"}
	}
	cases := []struct {
		name string
		evs  []event.Event
		want int // failures counted
	}{
		{"notice then structured", []event.Event{mk(0, false, 1, "1001", 5060), mk(0, true, 1, "1001", 5060)}, 1},
		{"structured then notice", []event.Event{mk(0, true, 1, "1001", 5060), mk(1, false, 1, "1001", 5060)}, 1},
		{"security reader 2 s behind", []event.Event{mk(0, false, 1, "1001", 5060), mk(1, false, 2, "1001", 5060), mk(0, true, 1, "1001", 5060), mk(1, true, 2, "1001", 5060)}, 2},
		{"interleaved out of order", []event.Event{mk(0, true, 2, "1001", 5060), mk(0, false, 1, "1001", 5060), mk(0, true, 1, "1001", 5060), mk(0, false, 2, "1001", 5060)}, 2},
		{"other Call-ID: two requests", []event.Event{mk(0, false, 1, "1001", 5060), mk(0, true, 2, "1001", 5060)}, 2},
		{"other account: two requests", []event.Event{mk(0, false, 1, "1001", 5060), mk(0, true, 1, "1002", 5060)}, 2},
		{"other port: two requests", []event.Event{mk(0, false, 1, "1001", 5060), mk(0, true, 1, "1001", 5062)}, 2},
		{"no Call-ID on one side: pairs", []event.Event{mk(0, false, 0, "1001", 0), mk(0, true, 1, "1001", 5060)}, 1},
		{"beyond the window: two requests", []event.Event{mk(0, true, 1, "1001", 5060), mk(3, false, 1, "1001", 5060)}, 2},
		{"one structured, two notices", []event.Event{mk(0, true, 1, "1001", 5060), mk(0, false, 1, "1001", 5060), mk(0, false, 1, "1001", 5060)}, 2},
		{"same form twice: two requests", []event.Event{mk(0, false, 1, "1001", 5060), mk(0, false, 1, "1001", 5060)}, 2},
		// The packet sensor's report of the request is a third form; it
		// says SIP whichever channel driver answered.
		{"wire, notice, security: one request", []event.Event{wire(0, 1, "1001", 5060), mk(0, false, 1, "1001", 5060), mk(1, true, 1, "1001", 5060)}, 1},
		{"notice, wire, security: one request", []event.Event{mk(0, false, 1, "1001", 5060), wire(0, 1, "1001", 5060), mk(0, true, 1, "1001", 5060)}, 1},
		{"wire alone", []event.Event{wire(0, 1, "1001", 5060)}, 1},
		{"wire, then a notice of another Call-ID", []event.Event{wire(0, 1, "1001", 5060), mk(0, false, 2, "1001", 5060)}, 2},
		{"wire twice: two requests", []event.Event{wire(0, 1, "1001", 5060), wire(0, 2, "1001", 5060)}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := &fakeClock{t: base}
			j, _ := New(Config{Name: "a", MaxRetry: 10}, NewAllowlist(nil), nil, clk)
			for i := range c.evs {
				if _, ok := j.Observe(&c.evs[i]); ok {
					t.Fatal("unexpected decision")
				}
			}
			// top up to MaxRetry with IAX2 failures (never twins): the
			// decision's count tells how many the twins made.
			iax := event.Event{Time: base.Add(4 * time.Second), Addr: addr, Service: event.ServiceIAX2, Kind: event.AuthFailure}
			for n := 1; n <= 10; n++ {
				if d, ok := j.Observe(&iax); ok {
					if got := 10 - n; got != c.want {
						t.Fatalf("twins counted %d, want %d (%s)", got, c.want, d.Reason)
					}
					return
				}
			}
			t.Fatal("no decision")
		})
	}
}

// Pairing twins allocates nothing per event.
func TestTwinsZeroAllocs(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	clk := &fakeClock{t: base}
	j, _ := New(Config{Name: "a", MaxRetry: 255}, NewAllowlist(nil), nil, clk)
	addr := netip.MustParseAddr("198.51.100.21")
	evs := []event.Event{
		{Time: base, Addr: addr, Port: 5060, Service: event.ServicePJSIP, Kind: event.AuthFailure, Account: "1001", Request: 7},
		{Time: base, Addr: addr, Port: 5060, Service: event.ServicePJSIP, Kind: event.AuthFailure, Account: "1001", Request: 7, Structured: true},
	}
	for i := range evs {
		j.Observe(&evs[i])
	}
	n := 0
	if a := testing.AllocsPerRun(100, func() {
		n++
		for i := range evs {
			evs[i].Time = base.Add(time.Duration(n) * time.Hour)
			j.Observe(&evs[i])
		}
	}); a != 0 {
		t.Fatalf("%v allocations per pair", a)
	}
	if s := j.Stats(); s.TwinsSkipped < 100 {
		t.Fatalf("TwinsSkipped = %d, want >= 100", s.TwinsSkipped)
	}
}

// Another kind or service of the same request is another report, not a twin.
func TestTwinsKindAndServiceMustMatch(t *testing.T) {
	base := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	addr := netip.MustParseAddr("198.51.100.21")
	for _, other := range []event.Event{
		{Service: event.ServicePJSIP, Kind: event.UnknownAccount},
		{Service: event.ServicePJSIP, Kind: event.ACLViolation},
		{Service: event.ServiceSIP, Kind: event.AuthFailure},
		{Service: event.ServiceAMI, Kind: event.AuthFailure},
	} {
		clk := &fakeClock{t: base}
		j, _ := New(Config{Name: "a", MaxRetry: 2}, NewAllowlist(nil), nil, clk)
		n := event.Event{Time: base, Addr: addr, Port: 5060, Service: event.ServicePJSIP, Kind: event.AuthFailure, Account: "1001", Request: 9}
		j.Observe(&n)
		other.Time, other.Addr, other.Port, other.Account, other.Request, other.Structured = base, addr, 5060, "1001", 9, true
		if _, ok := j.Observe(&other); !ok {
			t.Errorf("%v/%v paired with a pjsip auth_failure NOTICE (stats %+v)", other.Service, other.Kind, j.Stats())
		}
	}
}
