package fraud

import (
	"bufio"
	"bytes"
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

const corpus20 = "../../testdata/corpus/asterisk-20"
const corpus22 = "../../testdata/corpus/asterisk-22"

// readRawAMI parses a recorded AMI byte stream with the AMI client's reader.
func readRawAMI(t testing.TB, path string) []*ami.Message {
	t.Helper()
	msgs, err := ami.ReadCapture(path)
	if err != nil {
		t.Fatalf("corpus: %v", err)
	}
	return msgs
}

type fakeActions struct {
	mu      sync.Mutex
	clock   *time.Time
	hangups []string
	locks   []string
	bans    []netip.Addr
	doneAt  map[string]time.Time // first time each kind of action happened
	onLock  func(ext string)     // runs as the lock starts, before it is done
}

func newFakeActions(clock *time.Time) *fakeActions {
	return &fakeActions{clock: clock, doneAt: map[string]time.Time{}}
}

func (f *fakeActions) mark(k string) {
	if _, ok := f.doneAt[k]; !ok {
		f.doneAt[k] = *f.clock
	}
}

func (f *fakeActions) Hangup(_ context.Context, ch string) ([]Attempt, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hangups = append(f.hangups, ch)
	f.mark("hangup:" + ch[:strings.LastIndexByte(ch, '-')])
	return []Attempt{{Method: "Hangup", Result: "gone"}}, nil
}
func (f *fakeActions) Lock(_ context.Context, ext, _ string) error {
	if f.onLock != nil {
		f.onLock(ext)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.locks = append(f.locks, ext)
	f.mark("lock:" + ext)
	return nil
}
func (f *fakeActions) Unlock(context.Context, string) error { return nil }
func (f *fakeActions) Ban(_ context.Context, a netip.Addr, _ time.Duration, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bans = append(f.bans, a)
	f.mark("ban:" + a.String())
	return nil
}

func newTestMonitor(t testing.TB, clock *time.Time, fa *fakeActions, home string) *Monitor {
	t.Helper()
	nums, err := numbers.New(numbers.Config{HomeRegion: home})
	if err != nil {
		t.Fatal(err)
	}
	return newTestMonitorNums(t, clock, fa, nums)
}

func newTestMonitorNums(t testing.TB, clock *time.Time, fa *fakeActions, nums *numbers.Normalizer) *Monitor {
	t.Helper()
	eng, err := NewEngine(Config{IgnoreExtensions: []string{"carrier"}, CountryOf: IPCountry}, nums)
	if err != nil {
		t.Fatal(err)
	}
	return &Monitor{
		Tracker: calls.NewTracker(calls.Config{}),
		Engine:  eng,
		Responder: &Responder{Hanger: fa, Locker: fa, Banner: fa,
			Now: func() time.Time { return *clock }},
	}
}

type replayResult struct {
	firstFraud    time.Time
	fraudCalls    int // fraudulent calls started when containment was complete
	containedAt   time.Time
	incidents     []*Incident
	fa            *fakeActions
	attackerCalls int
}

// replayAMI replays the corpus AMI stream on a fake clock taken from the
// events' own times (EventTV, CEL EventTime, Uniqueid seconds).
func replayAMI(t testing.TB, dir, ext, attacker string) replayResult {
	msgs := readRawAMI(t, dir+"/ami/ami-events.raw.gz")
	var clock time.Time
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	ctx := context.Background()
	var r replayResult
	r.fa = fa
	atk := netip.MustParseAddr(attacker)
	for _, m := range msgs {
		if ts, ok := calls.MessageTime(m, time.UTC); ok && ts.After(clock) {
			clock = ts
		}
		u, ok := mon.Tracker.Handle(m, clock)
		if !ok {
			continue
		}
		if u.Kind == calls.CallStarted && u.Call.Extension == ext && u.Call.SourceAddr == atk {
			r.attackerCalls++
			if r.firstFraud.IsZero() {
				r.firstFraud = clock
			}
		}
		r.incidents = append(r.incidents, mon.HandleUpdate(ctx, u, clock)...)
		if r.containedAt.IsZero() {
			_, h := fa.doneAt["hangup:PJSIP/"+ext]
			_, l := fa.doneAt["lock:"+ext]
			_, b := fa.doneAt["ban:"+attacker]
			if h && l && b {
				r.containedAt = clock
				r.fraudCalls = r.attackerCalls
			}
		}
	}
	return r
}

func checkQuiet(t *testing.T, incs []*Incident, ext string, quiet ...string) {
	t.Helper()
	for _, inc := range incs {
		if inc.Extension != ext {
			t.Errorf("finding on extension %q (want only %s): %s: %s", inc.Extension, ext, inc.Rule, inc.Reason)
		}
		for _, q := range quiet {
			if inc.Extension == q {
				t.Errorf("legit extension %s flagged", q)
			}
		}
	}
}

func TestCorpusAMIContainment(t *testing.T) {
	r := replayAMI(t, corpus20, "1004", "203.0.113.159")
	if r.containedAt.IsZero() {
		t.Fatalf("1004 never contained: hangups=%v locks=%v bans=%v", r.fa.hangups, r.fa.locks, r.fa.bans)
	}
	after := r.containedAt.Sub(r.firstFraud)
	t.Logf("AMI replay: 1004 contained after %d fraudulent calls, %.3f s after the first (first %s, contained %s); %d attacker calls in all; incidents %d",
		r.fraudCalls, after.Seconds(), r.firstFraud.Format(time.RFC3339Nano), r.containedAt.Format(time.RFC3339Nano), r.attackerCalls, len(r.incidents))
	if r.fraudCalls > 3 || after > 5*time.Second {
		t.Errorf("containment took %d calls / %s, want ≤ 3 calls and ≤ 5 s", r.fraudCalls, after)
	}
	if len(r.incidents) > 0 {
		t.Logf("first incident: %s %s: %s; actions: %+v", r.incidents[0].Rule, r.incidents[0].Extension, r.incidents[0].Reason, r.incidents[0].Actions)
	}
	if r.attackerCalls != 40 {
		t.Errorf("attacker calls seen = %d, want 40 (ground truth)", r.attackerCalls)
	}
	for _, b := range r.fa.bans {
		if b != netip.MustParseAddr("203.0.113.159") {
			t.Errorf("banned %s: only 203.0.113.159 placed the calls", b)
		}
	}
	for _, h := range r.fa.hangups {
		if !strings.HasPrefix(h, "PJSIP/1004-") {
			t.Errorf("hung up %s: not extension 1004", h)
		}
	}
	var sawPrefix bool
	for _, inc := range r.incidents {
		if inc.Rule == RulePrefixGuessing {
			sawPrefix = true
		}
	}
	if !sawPrefix {
		t.Error("no prefix_guessing incident")
	}
	checkQuiet(t, r.incidents, "1004", "1001", "1002", "2001")
}

func TestCorpus22AMIContainment(t *testing.T) {
	if _, err := os.Stat(corpus22 + "/ami/ami-events.raw.gz"); err != nil {
		t.Skip("no asterisk-22 corpus")
	}
	r := replayAMI(t, corpus22, "204", "203.0.113.187")
	if r.containedAt.IsZero() {
		t.Fatalf("204 never contained: hangups=%v locks=%v bans=%v", r.fa.hangups, r.fa.locks, r.fa.bans)
	}
	after := r.containedAt.Sub(r.firstFraud)
	t.Logf("AMI replay (asterisk-22): 204 contained after %d fraudulent calls, %.3f s after the first", r.fraudCalls, after.Seconds())
	if r.fraudCalls > 3 || after > 5*time.Second {
		t.Errorf("containment took %d calls / %s, want ≤ 3 calls and ≤ 5 s", r.fraudCalls, after)
	}
	checkQuiet(t, r.incidents, "204")
}

// replayCDR feeds Master.csv rows in file order (the order cdr_csv wrote them,
// at hang-up), the clock at each row's end time.
func replayCDR(t testing.TB, dir, ext, attacker string) (rowsAtContain, startedAtContain int, containedAt, firstStart time.Time, incs []*Incident) {
	data, err := os.ReadFile(dir + "/log/cdr-csv/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	var clock time.Time
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	// CDRs carry no address: follow the security log beside them and feed
	// its SuccessfulAuth lines (in time order, up to each row's time).
	auths := readAuths(t, dir+"/log/security")
	ai := 0
	cr := calls.NewCDRReader(bytes.NewReader(data), time.UTC)
	var all []calls.Call
	rows := 0
	for {
		c, err := cr.Next()
		if err != nil {
			break
		}
		all = append(all, c)
		if c.End.After(clock) {
			clock = c.End
		}
		for ; ai < len(auths) && !auths[ai].Time.After(clock); ai++ {
			a := auths[ai]
			mon.HandleUpdate(context.Background(), calls.Update{Kind: calls.EndpointAuth,
				Call: calls.Call{Extension: a.Account, SourceAddr: a.Addr, Start: a.Time}}, a.Time)
			mon.Tracker.SetEndpointAddr(a.Account, a.Addr, a.Time)
		}
		if c.Extension == ext {
			rows++
		}
		c.SourceAddr, _ = mon.Tracker.EndpointAddr(c.Extension)
		incs = append(incs, mon.HandleUpdate(context.Background(), calls.Update{Kind: calls.CallEnded, Call: c}, clock)...)
		if containedAt.IsZero() {
			_, l := fa.doneAt["lock:"+ext]
			_, b := fa.doneAt["ban:"+attacker]
			if l && b {
				containedAt, rowsAtContain = clock, rows
			}
		}
	}
	for _, c := range all {
		if c.Extension != ext {
			continue
		}
		if firstStart.IsZero() || c.Start.Before(firstStart) {
			firstStart = c.Start
		}
		if !containedAt.IsZero() && !c.Start.After(containedAt) {
			startedAtContain++
		}
	}
	return
}

func readAuths(t testing.TB, path string) []calls.Auth {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []calls.Auth
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if a, ok := calls.ParseSecurityLine(sc.Text()); ok && a.Service != "AMI" {
			out = append(out, a)
		}
	}
	return out
}

func TestCorpusCDRContainment(t *testing.T) {
	rows, started, at, first, incs := replayCDR(t, corpus20, "1004", "203.0.113.159")
	if at.IsZero() {
		t.Fatal("1004 never contained from the CDR source")
	}
	t.Logf("CDR replay: 1004 contained at the %d-th fraudulent CDR row (%s, %.0f s after the first fraudulent call started); %d fraudulent calls had started by then",
		rows, at.Format(time.RFC3339), at.Sub(first).Seconds(), started)
	if rows > 3 {
		t.Errorf("contained after %d CDR rows, want ≤ 3", rows)
	}
	checkQuiet(t, incs, "1004", "1001", "1002", "2001")
}

func TestCorpus22CDRContainment(t *testing.T) {
	if _, err := os.Stat(corpus22 + "/log/cdr-csv/Master.csv"); err != nil {
		t.Skip("no asterisk-22 CDRs")
	}
	rows, started, at, first, incs := replayCDR(t, corpus22, "204", "203.0.113.187")
	if at.IsZero() {
		t.Fatal("204 never contained from the CDR source")
	}
	t.Logf("CDR replay (asterisk-22): 204 contained at the %d-th fraudulent CDR row (%.0f s after the first started); %d had started", rows, at.Sub(first).Seconds(), started)
	if rows > 3 {
		t.Errorf("contained after %d CDR rows, want ≤ 3", rows)
	}
	checkQuiet(t, incs, "204")
}

// TestCorpusCELContainment follows the CEL custom CSV (written at each call
// event) beside the security log: call starts are seen as they happen.
func TestCorpusCELContainment(t *testing.T) {
	data, err := os.ReadFile(corpus20 + "/log/cel-custom/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	auths := readAuths(t, corpus20+"/log/security")
	var clock time.Time
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	ctx := context.Background()
	ai := 0
	var first, contained time.Time
	fraudCalls, atContain := 0, 0
	var incs []*Incident
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		rec, err := calls.SplitCDRLine(line)
		if err != nil {
			t.Fatal(err)
		}
		m, at, ok, err := calls.CELMessage(rec)
		if err != nil {
			t.Fatal(err)
		}
		if at.After(clock) {
			clock = at
		}
		for ; ai < len(auths) && !auths[ai].Time.After(clock); ai++ {
			incs = append(incs, mon.HandleEvent(ctx, event.Event{Kind: event.AuthSuccess, Account: auths[ai].Account, Addr: auths[ai].Addr}, auths[ai].Time)...)
		}
		if !ok {
			continue
		}
		if m.Event() == "Newchannel" && strings.HasPrefix(m.Get("Channel"), "PJSIP/1004-") {
			fraudCalls++
			if first.IsZero() {
				first = clock
			}
		}
		incs = append(incs, mon.HandleMessage(ctx, m, clock)...)
		if contained.IsZero() {
			_, h := fa.doneAt["hangup:PJSIP/1004"]
			_, l := fa.doneAt["lock:1004"]
			_, b := fa.doneAt["ban:203.0.113.159"]
			if h && l && b {
				contained, atContain = clock, fraudCalls
			}
		}
	}
	if contained.IsZero() {
		t.Fatalf("not contained from CEL: %v %v %v", fa.hangups, fa.locks, fa.bans)
	}
	t.Logf("CEL replay: 1004 contained after %d fraudulent calls, %.3f s after the first", atContain, contained.Sub(first).Seconds())
	if atContain > 3 || contained.Sub(first) > 5*time.Second {
		t.Errorf("containment %d calls / %s", atContain, contained.Sub(first))
	}
	checkQuiet(t, incs, "1004", "1001", "1002", "2001")
}

// TestCorpusCDRWithDetector is the daemon's log-only path: the asterisk
// detector reads the security log (AuthSuccess gives the extension's
// address), the CDR rows give the calls.
func TestCorpusCDRWithDetector(t *testing.T) {
	det, err := detect.New("asterisk", detect.Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	secData, err := os.ReadFile(corpus20 + "/log/security")
	if err != nil {
		t.Fatal(err)
	}
	var evs []event.Event
	for _, line := range strings.Split(string(secData), "\n") {
		var ev event.Event
		if det.Detect([]byte(line), &ev) && ev.Kind == event.AuthSuccess {
			evs = append(evs, ev)
		}
	}
	if len(evs) < 40 {
		t.Fatalf("detector gave %d AuthSuccess events", len(evs))
	}
	cdr, err := os.ReadFile(corpus20 + "/log/cdr-csv/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	var clock time.Time
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	ctx := context.Background()
	ei, rows := 0, 0
	var incs []*Incident
	for _, line := range strings.Split(strings.TrimSpace(string(cdr)), "\n") {
		rec, _ := calls.SplitCDRLine(line)
		c, ok, err := calls.ParseCDR(rec, time.UTC)
		if err != nil || !ok {
			continue
		}
		clock = c.End
		for ; ei < len(evs) && !evs[ei].Time.After(clock); ei++ {
			incs = append(incs, mon.HandleEvent(ctx, evs[ei], evs[ei].Time)...)
		}
		if c.Extension == "1004" {
			rows++
		}
		got, err := mon.HandleCDRLine(ctx, line, time.UTC, clock)
		if err != nil {
			t.Fatal(err)
		}
		incs = append(incs, got...)
		if len(fa.bans) > 0 && rows > 0 {
			break
		}
	}
	if len(fa.bans) != 1 || fa.bans[0] != netip.MustParseAddr("203.0.113.159") || len(fa.locks) != 1 {
		t.Fatalf("bans %v locks %v", fa.bans, fa.locks)
	}
	t.Logf("CDR + detector: 1004 locked and 203.0.113.159 banned at the %d-th fraudulent CDR row", rows)
	if rows > 3 {
		t.Errorf("%d rows", rows)
	}
	checkQuiet(t, incs, "1004")
}
