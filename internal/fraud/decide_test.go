package fraud

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

func newDecider(t testing.TB, cfg DecideConfig) *Decider {
	t.Helper()
	nums, err := numbers.New(numbers.Config{HomeRegion: "US"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := NewDecider(cfg, nums)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// fakeDecideState is the engine's view, set by the test.
type fakeDecideState struct {
	views map[string]StateView
	busy  bool
}

func (f *fakeDecideState) DecideView(ext string) (StateView, bool) {
	if f.busy {
		return StateView{}, false
	}
	return f.views[ext], true
}

var dt0 = time.Date(2026, 11, 25, 4, 3, 10, 0, time.UTC)

func ask(d *Decider, ext, dialled string, at time.Duration) Decision {
	return d.Decide(DecideRequest{Channel: "PJSIP/" + ext + "-0000002a", Dialled: dialled}, dt0.Add(at))
}

func askFrom(d *Decider, ext, dialled, addr string, at time.Duration) Decision {
	return d.Decide(DecideRequest{Channel: "PJSIP/" + ext + "-0000002a", Dialled: dialled, Addr: netip.MustParseAddr(addr)}, dt0.Add(at))
}

func TestDecideTable(t *testing.T) {
	type q struct {
		ext, dialled, addr string
		at                 time.Duration
		allow              bool
		rule               DecisionRule
	}
	for _, tc := range []struct {
		name  string
		cfg   DecideConfig
		views map[string]StateView
		qs    []q
	}{
		{"domestic and internal from anyone", DecideConfig{}, nil, []q{
			{"1005", "2125550142", "", 0, true, DecideOK},
			{"1005", "1002", "", 1, true, DecideInternal},
			{"1005", "13125550123", "", 2, true, DecideOK},
		}},
		{"international off for endpoints not trusted (the default)", DecideConfig{Trusted: []string{"PJSIP/1001"}}, nil, []q{
			{"1005", "0033170189999", "", 0, false, DecideUntrusted},
			{"1005", "+442079460349", "", 1, false, DecideUntrusted},
			{"1005", "0088213674923", "", 2, false, DecideUntrusted},
			{"1005", "19005550123", "", 3, false, DecideUntrusted}, // US premium
			{"1001", "0033170189999", "", 4, true, DecideOK},
		}},
		{"trust all", DecideConfig{TrustAll: true}, nil, []q{{"1005", "0033170189999", "", 0, true, DecideOK}}},
		{"locked extension: every call", DecideConfig{TrustAll: true}, map[string]StateView{"1004": {Contained: true}}, []q{
			{"1004", "2125550142", "", 0, false, DecideLocked},
			{"1004", "1002", "", 1, false, DecideLocked},
			{"1001", "2125550142", "", 2, true, DecideOK},
		}},
		{"prefix guessing: the second, odd form", DecideConfig{Trusted: []string{"1004"}}, nil, []q{
			{"1004", "011442079460349", "", 0, true, DecideOK},
			{"1004", "00442079460349", "", time.Second, false, DecidePrefixGuess},
			{"1004", "011442079460958", "", 2 * time.Second, false, DecideHeld}, // a new number: held
			{"1004", "2125550142", "", 3 * time.Second, true, DecideOK},         // domestic still works
		}},
		{"011 then + is normal on a US phone", DecideConfig{Trusted: []string{"1001"}}, nil, []q{
			{"1001", "011442079460349", "", 0, true, DecideOK},
			{"1001", "+442079460349", "", time.Minute, true, DecideOK},
			{"1001", "00442079460349", "", 2 * time.Minute, false, DecidePrefixGuess}, // the third form
		}},
		{"prefix forms older than the window do not count", DecideConfig{Trusted: []string{"1001"}}, nil, []q{
			{"1001", "011442079460349", "", 0, true, DecideOK},
			{"1001", "00442079460349", "", 11 * time.Minute, true, DecideOK},
		}},
		{"new address for international", DecideConfig{Trusted: []string{"1004"}, NewAddress: true}, nil, []q{
			{"1004", "011442079460349", "198.51.100.22", 0, true, DecideOK},                    // the office: baseline
			{"1004", "011442079460349", "203.0.113.177", time.Minute, false, DecideNewAddress}, // the attacker
			{"1004", "2125550142", "203.0.113.177", 2 * time.Minute, true, DecideOK},           // domestic: allowed
			{"1004", "0033170189999", "198.51.100.22", 3 * time.Minute, true, DecideOK},
			{"1004", "0033170189999", "203.0.113.177", 25 * time.Hour, true, DecideOK}, // known a day later
		}},
		{"international budget", DecideConfig{TrustAll: true, IntlPerWindow: 2}, nil, []q{
			{"1001", "0033170189999", "", 0, true, DecideOK},
			{"1001", "0033170189998", "", 1, true, DecideOK},
			{"1001", "0033170189997", "", 2, false, DecideVelocity},
			{"1001", "0033170189997", "", 3, false, DecideHeld},
		}},
		{"calls budget", DecideConfig{CallsPerWindow: 2}, nil, []q{
			{"1001", "2125550142", "", 0, true, DecideOK},
			{"1001", "2125550143", "", 1, true, DecideOK},
			{"1001", "2125550144", "", 2, false, DecideVelocity},
			{"1001", "2125550144", "", 11 * time.Minute, true, DecideOK},
		}},
		{"premium and satellite even from a trusted endpoint", DecideConfig{TrustAll: true, DenyPremium: true, DenySatellite: true}, nil, []q{
			{"1001", "0088213674923", "", 0, false, DecideSatellite},
			{"1001", "19005550123", "", 1, false, DecidePremium},
		}},
		{"trunk and unknown channel", DecideConfig{Trunks: []string{"carrier"}}, nil, []q{
			{"carrier", "0033170189999", "", 0, true, DecideTrunk},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecider(t, tc.cfg)
			if tc.views != nil {
				d.SetState(&fakeDecideState{views: tc.views})
			}
			for i, q := range tc.qs {
				var got Decision
				if q.addr != "" {
					got = askFrom(d, q.ext, q.dialled, q.addr, q.at)
				} else {
					got = ask(d, q.ext, q.dialled, q.at)
				}
				if got.Allow != q.allow || got.Rule != q.rule {
					t.Errorf("#%d %s %s: %s %s (%s), want allow=%v %s", i, q.ext, q.dialled, got.Value(), got.Rule, got.Reason, q.allow, q.rule)
				}
			}
		})
	}
}

func TestDecideMalformedAndUnknownChannel(t *testing.T) {
	d := newDecider(t, DecideConfig{TrustAll: true})
	got := d.Decide(DecideRequest{Channel: "PJSIP/1001-1", Dialled: "2125550142", Malformed: "agi_channel appears twice"}, dt0)
	if got.Allow || got.Rule != DecideMalformed || len(got.Evidence) != 1 {
		t.Errorf("malformed: %+v", got)
	}
	got = d.Decide(DecideRequest{Channel: "Local/1001@from-internal-00000001;2", Dialled: "0033170189999"}, dt0)
	if got.Allow || got.Rule != DecideUnknownCaller {
		t.Errorf("Local channel to France: %+v", got)
	}
	got = d.Decide(DecideRequest{Channel: "Local/1001@from-internal-00000001;2", Dialled: "2125550142"}, dt0)
	if !got.Allow {
		t.Errorf("Local channel domestic: %+v", got)
	}
	// A string no reading makes a number is risky: only trusted endpoints may dial it.
	strict := newDecider(t, DecideConfig{Trusted: []string{"1001"}})
	got = strict.Decide(DecideRequest{Channel: "PJSIP/1005-1", Dialled: "0044\"\n; HANGUP"}, dt0)
	if got.Allow || got.Rule != DecideUntrusted || !strings.Contains(got.Reason, "unreadable") {
		t.Errorf("garbage number from an untrusted endpoint: %+v", got)
	}
}

func TestDecideSpend(t *testing.T) {
	rates, err := ParseRates(strings.NewReader("GB,0.50\n+88213,4.50\n"))
	if err != nil {
		t.Fatal(err)
	}
	d := newDecider(t, DecideConfig{TrustAll: true, SpendPerWindow: 12, Rates: rates, AssumedMinutes: 10, IntlPerWindow: 100, DefaultRate: 0.1})
	want := []bool{true, true, false} // 5 + 5 = 10; +5 = 15 > 12
	for i, num := range []string{"011442079460349", "011442079460350", "011442079460351"} {
		got := ask(d, "1001", num, time.Duration(i)*time.Second)
		if got.Allow != want[i] {
			t.Errorf("#%d %s: %s %s", i, num, got.Value(), got.Reason)
		}
		if !want[i] && (got.Rule != DecideSpend || !strings.Contains(got.Reason, "15.00") || got.Finding == nil) {
			t.Errorf("#%d: rule %s reason %q finding %v", i, got.Rule, got.Reason, got.Finding)
		}
	}
}

// TestDecideIssue11RealUser: the office phone (198.51.100.22) called the UK
// number once; minutes later the attacker (203.0.113.177) dials it as 011…
// then 00…. The second is denied and its finding names only the attacker's
// address.
func TestDecideIssue11RealUser(t *testing.T) {
	d := newDecider(t, DecideConfig{Trusted: []string{"1004"}})
	if got := askFrom(d, "1004", "011442079460349", "198.51.100.22", 0); !got.Allow {
		t.Fatalf("the office's call denied: %+v", got)
	}
	if got := askFrom(d, "1004", "011442079460349", "203.0.113.177", 3*time.Minute); !got.Allow {
		t.Fatalf("same number, same form: %+v", got)
	}
	got := askFrom(d, "1004", "00442079460349", "203.0.113.177", 3*time.Minute+time.Second)
	if got.Allow || got.Rule != DecidePrefixGuess || got.Finding == nil {
		t.Fatalf("00 form: %+v", got)
	}
	if f := got.Finding; len(f.Addrs) != 1 || f.Addrs[0] != netip.MustParseAddr("203.0.113.177") || f.Rule != RulePrefixGuessing || !f.Response.Lock {
		t.Errorf("finding addrs %v rule %s response %+v, want only the attacker, prefix_guessing, contain", f.Addrs, f.Rule, f.Response)
	}
	if want := "011442079460349, 00442079460349"; !strings.Contains(strings.Join(got.Evidence, ", "), want) {
		t.Errorf("evidence %q lacks %q", got.Evidence, want)
	}
}

// TestDecideNewAddressFromAuth: the addresses come from authentications
// (AMI SuccessfulAuth, the log's auth_success): the office registered
// first (baseline), the attacker's fresh registration is new; its odd
// second prefix form is prefix guessing even though the first was denied.
func TestDecideNewAddressFromAuth(t *testing.T) {
	d := newDecider(t, DecideConfig{Trusted: []string{"1004"}, NewAddress: true})
	st := &fakeDecideState{views: map[string]StateView{}}
	d.SetState(st)
	office, attacker := netip.MustParseAddr("198.51.100.22"), netip.MustParseAddr("203.0.113.177")
	d.ObserveAuth("1004", office, dt0.Add(-time.Hour))
	st.views["1004"] = StateView{Addr: office}
	if got := ask(d, "1004", "011442079460349", 0); !got.Allow {
		t.Fatalf("the office: %+v", got)
	}
	d.ObserveAuth("1004", attacker, dt0.Add(time.Minute))
	st.views["1004"] = StateView{Addr: attacker}
	got := ask(d, "1004", "011442079460958", time.Minute+time.Second)
	if got.Allow || got.Rule != DecideNewAddress || !strings.Contains(strings.Join(got.Evidence, ";"), "198.51.100.22 (baseline)") {
		t.Fatalf("attacker's first call: %+v", got)
	}
	got = ask(d, "1004", "00442079460958", time.Minute+2*time.Second)
	if got.Allow || got.Rule != DecidePrefixGuess || got.Finding == nil || len(got.Finding.Addrs) != 1 || got.Finding.Addrs[0] != attacker {
		t.Fatalf("attacker's second form: %+v", got)
	}
	// The extension is held (one extension, one password: its international
	// calls wait for the administrator); its domestic calls go on.
	st.views["1004"] = StateView{Addr: office}
	if got := ask(d, "1004", "2125550142", 2*time.Minute); !got.Allow {
		t.Errorf("domestic call while held: %+v", got)
	}
	// A trunk's or an empty authentication teaches nothing.
	d.ObserveAuth("", office, dt0)
	d.ObserveAuth("1004", netip.Addr{}, dt0)
}

// corpusOutbound returns the corpus's outbound calls (CDR rows of the
// outbound context) in order: extension, channel, dialled, start.
func corpusOutbound(t testing.TB) [][4]string {
	t.Helper()
	f, err := os.Open("../../testdata/corpus/asterisk-20/log/cdr-csv/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var out [][4]string
	for _, rec := range recs {
		if len(rec) < 10 || rec[3] != "outbound" {
			continue
		}
		_, ep, ok := calls.SplitChannel(rec[5])
		if !ok {
			t.Fatalf("channel %q", rec[5])
		}
		out = append(out, [4]string{ep, rec[5], rec[2], rec[9]})
	}
	return out
}

// TestDecideCorpusBurst: the corpus's outbound calls asked in order. With
// 1004 trusted (the worst case: its owner was allowed to call abroad), its
// first call goes through and every later one is denied; with only 1001
// trusted, none of 1004's goes through. 1001's calls (domestic, and one to
// France) are never denied.
func TestDecideCorpusBurst(t *testing.T) {
	rows := corpusOutbound(t)
	msgs, err := ami.ReadCapture("../../testdata/corpus/asterisk-20/ami/ami-events.raw.gz")
	if err != nil {
		t.Fatal(err)
	}
	type auth struct {
		ext  string
		addr netip.Addr
		at   time.Time
	}
	var auths []auth
	for _, m := range msgs {
		if m.Event() != "SuccessfulAuth" || m.Get("Service") != "PJSIP" {
			continue
		}
		a, ok := calls.ParseSecurityAddr(m.Get("RemoteAddress"))
		at, ok2 := calls.MessageTime(m, time.UTC)
		if ok && ok2 {
			auths = append(auths, auth{m.Get("AccountID"), a, at})
		}
	}
	if len(auths) < 40 {
		t.Fatalf("%d SuccessfulAuth events in the corpus", len(auths))
	}
	for _, tc := range []struct {
		trusted      []string
		withAuth     bool // the addresses from the corpus's SuccessfulAuth events
		allowed1004  int
		firstAllowed bool
	}{
		{[]string{"1001", "1004"}, false, 1, true},
		{[]string{"1001", "1004"}, true, 0, false}, // 1004's first address was the cracker's: the fraudster's is new
		{[]string{"1001"}, false, 0, false},
	} {
		d := newDecider(t, DecideConfig{Trusted: tc.trusted, NewAddress: true})
		st := &fakeDecideState{views: map[string]StateView{}}
		d.SetState(st)
		next := 0
		var n1004, allowed1004, n1001 int
		var firstOK bool
		rules := map[DecisionRule]int{}
		for _, r := range rows {
			at, err := time.Parse("2006-01-02 15:04:05", r[3])
			if err != nil {
				t.Fatal(err)
			}
			for tc.withAuth && next < len(auths) && !auths[next].at.After(at) {
				a := auths[next]
				d.ObserveAuth(a.ext, a.addr, a.at)
				st.views[a.ext] = StateView{Addr: a.addr}
				next++
			}
			got := d.Decide(DecideRequest{Channel: r[1], Dialled: r[2]}, at)
			switch r[0] {
			case "1004":
				if n1004 == 0 {
					firstOK = got.Allow
				}
				n1004++
				if got.Allow {
					allowed1004++
				}
				rules[got.Rule]++
			case "1001":
				n1001++
				if !got.Allow {
					t.Errorf("1001's call to %s denied: %s", r[2], got.Reason)
				}
			}
		}
		t.Logf("trusted %v, addresses %v: 1004 %d calls, %d allowed (%v); 1001 %d calls", tc.trusted, tc.withAuth, n1004, allowed1004, rules, n1001)
		if n1004 != 40 || n1001 != 4 {
			t.Fatalf("corpus: %d calls of 1004, %d of 1001; want 40 and 4", n1004, n1001)
		}
		if allowed1004 != tc.allowed1004 || firstOK != tc.firstAllowed {
			t.Errorf("1004: %d allowed (first %v), want %d (first %v)", allowed1004, firstOK, tc.allowed1004, tc.firstAllowed)
		}
	}
}

// TestDecideBusyMonitor: when the monitor's state cannot be read, the
// last view is used and the evidence says so.
func TestDecideBusyMonitor(t *testing.T) {
	st := &fakeDecideState{views: map[string]StateView{"1004": {Contained: true}}}
	d := newDecider(t, DecideConfig{TrustAll: true})
	d.SetState(st)
	if got := ask(d, "1004", "2125550142", 0); got.Allow {
		t.Fatalf("locked: %+v", got)
	}
	st.busy = true
	got := ask(d, "1004", "2125550142", time.Second)
	if got.Allow || got.Rule != DecideLocked || !strings.Contains(strings.Join(got.Evidence, ";"), string(DecideNoState)) {
		t.Errorf("busy monitor: %+v", got)
	}
	d.Release("1004")
	if got := ask(d, "1004", "2125550142", 2*time.Second); !got.Allow {
		t.Errorf("after Release: %+v", got)
	}
	// A containment the daemon made through the monitor counts while the
	// monitor cannot be asked.
	d.MarkContained("1004", dt0.Add(3*time.Second))
	if got := ask(d, "1004", "2125550142", 4*time.Second); got.Allow || got.Rule != DecideLocked {
		t.Errorf("after MarkContained, busy monitor: %+v", got)
	}
}

// TestMonitorContainDecision: a denial's finding through the monitor
// contains the extension (lock + ban of the attacker + alert), and the
// monitor's view then says contained.
func TestMonitorContainDecision(t *testing.T) {
	nums, err := numbers.New(numbers.Config{HomeRegion: "US"})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := NewEngine(Config{}, nums)
	if err != nil {
		t.Fatal(err)
	}
	rec := &decideRecorder{}
	m := &Monitor{Tracker: calls.NewTracker(calls.Config{}), Engine: eng, Responder: &Responder{Recorder: rec, DryRun: true}}
	m.Tracker.SetEndpointAddr("1004", netip.MustParseAddr("203.0.113.177"), dt0)
	d := newDecider(t, DecideConfig{Trusted: []string{"1004"}})
	d.SetState(m)
	if v, ok := m.DecideView("1004"); !ok || v.Contained || v.Addr != netip.MustParseAddr("203.0.113.177") {
		t.Fatalf("view = %+v %v", v, ok)
	}
	ask(d, "1004", "011442079460349", 0)
	got := ask(d, "1004", "00442079460349", time.Second)
	if got.Finding == nil || got.Addr != netip.MustParseAddr("203.0.113.177") {
		t.Fatalf("no finding or addr: %+v", got)
	}
	incs := m.ContainDecision(context.Background(), *got.Finding)
	if len(incs) != 1 || incs[0].Rule != RulePrefixGuessing || len(incs[0].Addrs) != 1 || incs[0].Addrs[0] != got.Addr {
		t.Fatalf("incidents = %+v", incs)
	}
	kinds := map[string]bool{}
	for _, a := range incs[0].Actions {
		kinds[a.Kind] = true
	}
	if !kinds["lock"] || !kinds["ban"] {
		t.Errorf("actions %+v: want lock and ban", incs[0].Actions)
	}
	if again := m.ContainDecision(context.Background(), *got.Finding); len(again) != 0 {
		t.Errorf("a second containment within the window: %d incidents", len(again))
	}
	if v, _ := m.DecideView("1004"); !v.Contained {
		t.Error("engine not contained after ContainDecision")
	}
	if got := ask(d, "1004", "2125550142", 2*time.Second); got.Allow || got.Rule != DecideLocked {
		t.Errorf("after containment, a domestic call: %s %s", got.Value(), got.Rule)
	}
	if rec.n != 1 {
		t.Errorf("%d incidents recorded, want 1", rec.n)
	}
}

type decideRecorder struct{ n int }

func (r *decideRecorder) RecordIncident(context.Context, *Incident) error { r.n++; return nil }

// BenchmarkDecide: one decision (an international call from a trusted
// endpoint, state read from a fake engine view).
func BenchmarkDecide(b *testing.B) {
	d := newDecider(b, DecideConfig{TrustAll: true, IntlPerWindow: 1 << 30, CallsPerWindow: 1 << 30})
	d.SetState(&fakeDecideState{views: map[string]StateView{}})
	nums := []string{"0033170189999", "2125550142", "011442079460349", "+442079460349"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d.Decide(DecideRequest{Channel: fmt.Sprintf("PJSIP/%d-1", 1000+i%50), Dialled: nums[i%len(nums)]}, dt0.Add(time.Duration(i)*time.Millisecond))
	}
}

// FuzzDecide: any channel, dialled string and address; no panic, a rule
// always, and a risky number from an endpoint not trusted never allowed.
func FuzzDecide(f *testing.F) {
	f.Add("PJSIP/1004-00000005", "011442079460349", "203.0.113.159")
	f.Add("Local/1001@x-1;2", "+882\n13674923", "")
	f.Add("PJSIP/-", "\"00\\33", "::1")
	d := newDecider(f, DecideConfig{Trusted: []string{"1001"}, NewAddress: true, CallsPerWindow: 1 << 20, IntlPerWindow: 1 << 20})
	nums := d.nums
	f.Fuzz(func(t *testing.T, channel, dialled, addr string) {
		a, _ := netip.ParseAddr(addr)
		got := d.Decide(DecideRequest{Channel: channel, Dialled: dialled, Addr: a}, dt0)
		if got.Rule == "" || got.Reason == "" {
			t.Fatalf("no rule or reason: %+v", got)
		}
		res := nums.Normalize(dialled)
		best, ok := res.BestCandidate()
		risky := !res.Internal && (!ok || best.International || best.Type == numbers.TypePremium ||
			best.Type == numbers.TypeSatellite || best.Type == numbers.TypeInternationalNetwork)
		if _, ep, epOK := calls.SplitChannel(channel); risky && got.Allow && (!epOK || ep != "1001") {
			t.Fatalf("risky %q from %q allowed: %+v", dialled, channel, got)
		}
	})
}
