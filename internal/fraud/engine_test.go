package fraud

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/numbers"
	"github.com/pbxguard/pbxguard/internal/store"
)

var t0 = time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)

func newEngine(t testing.TB, cfg Config) *Engine {
	t.Helper()
	nums, err := numbers.New(numbers.Config{HomeRegion: "US"})
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(cfg, nums)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type step struct {
	at      time.Duration
	kind    calls.UpdateKind
	ext     string
	dialled string
	id      string
	addr    string
}

func runSteps(e *Engine, steps []step) []Finding {
	var out []Finding
	for i, s := range steps {
		c := calls.Call{ID: s.id, Extension: s.ext, Dialled: s.dialled, Start: t0.Add(s.at), Live: true,
			Channel: "PJSIP/" + s.ext + "-" + fmt.Sprint(i), Source: calls.SourceAMI}
		if s.id == "" {
			c.ID = fmt.Sprint(i)
		}
		if s.addr != "" {
			c.SourceAddr = netip.MustParseAddr(s.addr)
		}
		if s.kind == calls.CallEnded {
			c.Live, c.End = false, t0.Add(s.at)
		}
		out = append(out, e.Observe(calls.Update{Kind: s.kind, Call: c}, t0.Add(s.at))...)
	}
	return out
}

func rules(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Extension+":"+string(f.Rule))
	}
	return out
}

func TestRules(t *testing.T) {
	start := calls.CallStarted
	tests := []struct {
		name  string
		cfg   Config
		steps []step
		want  []string
	}{
		{"one legit international call", Config{}, []step{{0, start, "1001", "0033170189999", "", ""}}, nil},
		{"domestic calls only", Config{}, []step{
			{0, start, "1001", "2125550142", "", ""}, {time.Second, start, "1001", "13125550123", "", ""},
			{2 * time.Second, start, "1001", "3125550199", "", ""}, {3 * time.Second, start, "1001", "1002", "", ""},
		}, nil},
		{"prefix guessing at the second form", Config{}, []step{
			{0, start, "1004", "011442079460349", "", "203.0.113.159"},
			{time.Second, start, "1004", "00442079460349", "", "203.0.113.159"},
		}, []string{"1004:prefix_guessing"}},
		{"plus and home IDD alone are normal dialling", Config{}, []step{
			{0, start, "1001", "+442079460349", "", ""},
			{time.Minute, start, "1001", "011442079460349", "", ""},
		}, nil},
		{"a third form is guessing", Config{ConcurrentIntl: 10}, []step{
			{0, start, "1001", "+442079460349", "", ""},
			{time.Minute, start, "1001", "011442079460349", "", ""},
			{2 * time.Minute, start, "1001", "442079460349", "", ""},
		}, []string{"1001:prefix_guessing"}},
		{"same number same form twice is not guessing", Config{}, []step{
			{0, start, "1001", "011442079460349", "a", ""}, {time.Second, calls.CallEnded, "1001", "011442079460349", "a", ""},
			{time.Minute, start, "1001", "011442079460349", "b", ""},
		}, nil},
		{"international rate", Config{ConcurrentIntl: 10, CountriesPerWindow: 10}, []step{
			{0, start, "1001", "011442079460001", "", ""}, {time.Minute, start, "1001", "011442079460002", "", ""},
			{2 * time.Minute, start, "1001", "011442079460003", "", ""}, {3 * time.Minute, start, "1001", "011442079460004", "", ""},
			{4 * time.Minute, start, "1001", "011442079460005", "", ""},
		}, []string{"1001:intl_rate"}},
		{"international rate outside the window is quiet", Config{ConcurrentIntl: 10}, []step{
			{0, calls.CallEnded, "1001", "011442079460001", "", ""}, {11 * time.Minute, calls.CallEnded, "1001", "011442079460002", "", ""},
			{22 * time.Minute, calls.CallEnded, "1001", "011442079460003", "", ""}, {33 * time.Minute, calls.CallEnded, "1001", "011442079460004", "", ""},
			{44 * time.Minute, calls.CallEnded, "1001", "011442079460005", "", ""},
		}, nil},
		{"concurrent", Config{}, []step{
			{0, start, "1001", "011442079460001", "", ""}, {time.Second, start, "1001", "011493012345678", "", ""},
			{2 * time.Second, start, "1001", "01133170189999", "", ""},
		}, []string{"1001:concurrent_intl", "1001:countries"}},
		{"satellite", Config{}, []step{{0, start, "1004", "011881612345678", "", ""}}, []string{"1004:satellite"}},
		{"premium domestic", Config{}, []step{{0, start, "1004", "19005551234", "", ""}}, []string{"1004:premium"}},
		{"high risk country", Config{}, []step{{0, start, "1001", "01153 7 8123456", "", ""}}, []string{"1001:high_risk_country"}},
		{"configured high risk", Config{HighRiskCountries: []string{"FR"}}, []step{{0, start, "1001", "0033170189999", "", ""}}, []string{"1001:high_risk_country"}},
		{"off hours", Config{Hours: &Hours{Start: 8 * time.Hour, End: 19 * time.Hour}}, []step{{0, start, "1001", "0033170189999", "", ""}}, []string{"1001:off_hours"}},
		{"in hours", Config{Hours: &Hours{Start: 3 * time.Hour, End: 19 * time.Hour}}, []step{{0, start, "1001", "0033170189999", "", ""}}, nil},
		{"trunk ignored", Config{IgnoreExtensions: []string{"carrier"}}, []step{
			{0, start, "carrier", "011442079460349", "", ""}, {time.Second, start, "carrier", "00442079460349", "", ""},
		}, nil},
		{"contained extension calls are hung up", Config{}, []step{
			{0, start, "1004", "011442079460349", "", ""}, {time.Second, start, "1004", "00442079460349", "", ""},
			{2 * time.Second, start, "1004", "2125550142", "", ""},
		}, []string{"1004:prefix_guessing", "1004:locked_extension"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEngine(t, tt.cfg)
			got := rules(runSteps(e, tt.steps))
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("findings %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFindingCarriesAddrsAndResponse(t *testing.T) {
	e := newEngine(t, Config{})
	fs := runSteps(e, []step{
		{0, calls.CallStarted, "1004", "011442079460349", "", "203.0.113.159"},
		{time.Second, calls.CallStarted, "1004", "00442079460349", "", "203.0.113.159"},
	})
	if len(fs) != 1 {
		t.Fatalf("findings %v", rules(fs))
	}
	f := fs[0]
	if len(f.Addrs) != 1 || f.Addrs[0] != netip.MustParseAddr("203.0.113.159") || f.Response != respContain ||
		f.Country != "GB" || f.E164 != "+442079460349" || len(f.Evidence) != 2 || f.Severity != SeverityCritical {
		t.Errorf("finding %+v", f)
	}
	if !e.Contained("1004") || e.Risk("1004", t0.Add(2*time.Second)) != 100 {
		t.Error("1004 not contained")
	}
	e.Release("1004")
	if e.Contained("1004") {
		t.Error("release did not release")
	}
}

func TestNewCountry(t *testing.T) {
	geo := map[string]string{"81.2.69.160": "GB", "8.8.8.8": "US", "203.0.113.5": ""}
	e := newEngine(t, Config{CountryOf: func(a netip.Addr) string { return geo[a.String()] }})
	auth := func(addr string, at time.Duration) []Finding {
		return e.Observe(calls.Update{Kind: calls.EndpointAuth, Call: calls.Call{Extension: "1001", SourceAddr: netip.MustParseAddr(addr)}}, t0.Add(at))
	}
	if fs := auth("8.8.8.8", 0); len(fs) != 0 {
		t.Errorf("baseline fired: %v", rules(fs))
	}
	if fs := auth("203.0.113.5", time.Minute); len(fs) != 0 {
		t.Errorf("unknown country fired: %v", rules(fs))
	}
	fs := auth("81.2.69.160", 2*time.Minute)
	if len(fs) != 1 || fs[0].Rule != RuleNewCountry || fs[0].Country != "GB" || fs[0].Response != respAlertOnly {
		t.Errorf("new country: %+v", fs)
	}
	if fs := auth("81.2.69.160", 3*time.Minute); len(fs) != 0 {
		t.Errorf("repeat fired: %v", rules(fs))
	}
}

func TestIPCountryUnknownForDocumentationRanges(t *testing.T) {
	for _, s := range []string{"203.0.113.159", "198.51.100.21", "192.0.2.1", "2001:db8::1", "10.1.2.3", "127.0.0.1", "::ffff:192.0.2.1"} {
		if c := IPCountry(netip.MustParseAddr(s)); c != "" {
			t.Errorf("%s: %q, want unknown", s, c)
		}
	}
	if c := IPCountry(netip.MustParseAddr("8.8.8.8")); c != "US" {
		t.Errorf("8.8.8.8: %q", c)
	}
}

func TestUnauthIntl(t *testing.T) {
	e := newEngine(t, Config{})
	ev := event.Event{Kind: event.CallRejected, Addr: netip.MustParseAddr("203.0.113.130"), Service: event.ServicePJSIP, Account: "01197225550281"}
	fs := e.ObserveEvent(ev, t0)
	if len(fs) != 1 || fs[0].Rule != RuleUnauthIntl || fs[0].Addrs[0] != ev.Addr || !fs[0].Response.Ban || fs[0].Country != "IL" {
		t.Fatalf("%+v", fs)
	}
	if fs := e.ObserveEvent(ev, t0.Add(time.Second)); len(fs) != 0 {
		t.Error("fired twice in the window")
	}
	ev.Account = "2125550100" // domestic DID: the carrier's misdialled call
	ev.Addr = netip.MustParseAddr("203.0.113.250")
	if fs := e.ObserveEvent(ev, t0); len(fs) != 0 {
		t.Errorf("domestic fired: %+v", fs)
	}
}

func TestNewEngineRejects(t *testing.T) {
	nums, _ := numbers.New(numbers.Config{HomeRegion: "US"})
	if _, err := NewEngine(Config{HighRiskCountries: []string{"Cuba"}}, nums); err == nil {
		t.Error("Cuba accepted")
	}
	if _, err := NewEngine(Config{Responses: map[Rule]Response{"bogus": respContain}}, nums); err == nil {
		t.Error("unknown rule accepted")
	}
	if _, err := NewEngine(Config{}, nil); err == nil {
		t.Error("nil normaliser accepted")
	}
}

func TestEngineBounded(t *testing.T) {
	e := newEngine(t, Config{MaxExtensions: 10, MaxPerExtension: 4, IntlPerWindow: 1000, ConcurrentIntl: 1000, CountriesPerWindow: 1000})
	for i := 0; i < 1000; i++ {
		ext := fmt.Sprint(1000 + i%50)
		e.Observe(calls.Update{Kind: calls.CallStarted, Call: calls.Call{ID: fmt.Sprint(i), Extension: ext, Dialled: fmt.Sprintf("01144207946%04d", i)}}, t0.Add(time.Duration(i)*time.Minute))
	}
	if len(e.ext) > 10 {
		t.Errorf("%d extensions tracked", len(e.ext))
	}
	for k, s := range e.ext {
		if len(s.recent) > 4 {
			t.Errorf("%s: %d calls kept", k, len(s.recent))
		}
	}
}

type recAlerter struct{ got []*Incident }

func (r *recAlerter) Alert(_ context.Context, inc *Incident) error {
	r.got = append(r.got, inc)
	return nil
}

func TestResponderDryRunAndNeverBan(t *testing.T) {
	var clock time.Time
	fa := newFakeActions(&clock)
	al := &recAlerter{}
	path := filepath.Join(t.TempDir(), "incidents.jsonl")
	rec, err := OpenFileRecorder(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	f := Finding{Rule: RulePrefixGuessing, Severity: SeverityCritical, Extension: "1004", Time: t0,
		Addrs:    []netip.Addr{netip.MustParseAddr("203.0.113.159"), netip.MustParseAddr("198.51.100.21")},
		Response: respContain, Reason: "test"}
	live := []calls.Call{{Channel: "PJSIP/1004-00000005", Live: true}, {Channel: "PJSIP/1004-00000007", Live: true}}

	r := &Responder{Hanger: fa, Locker: fa, Banner: fa, Alerters: []Alerter{al}, Recorder: rec, DryRun: true,
		NeverBan: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	inc := r.Respond(context.Background(), f, live)
	if len(fa.hangups)+len(fa.locks)+len(fa.bans) != 0 || len(al.got) != 0 {
		t.Errorf("dry run acted: %v %v %v %d", fa.hangups, fa.locks, fa.bans, len(al.got))
	}
	kinds := map[string]int{}
	for _, a := range inc.Actions {
		kinds[a.Kind]++
		if a.Kind == "ban" && a.Target == "198.51.100.21" && a.Result != ResultSkipped {
			t.Error("never_ban address not skipped")
		}
	}
	if kinds["hangup"] != 2 || kinds["lock"] != 1 || kinds["ban"] != 2 || kinds["alert"] != 1 {
		t.Errorf("actions %v", inc.Actions)
	}

	r.DryRun = false
	r.Respond(context.Background(), f, live)
	if len(fa.hangups) != 2 || len(fa.locks) != 1 || len(fa.bans) != 1 || fa.bans[0] != netip.MustParseAddr("203.0.113.159") || len(al.got) != 1 {
		t.Errorf("acted: %v %v %v %d", fa.hangups, fa.locks, fa.bans, len(al.got))
	}
	// Missing interfaces are recorded as errors, not panics.
	inc = (&Responder{}).Respond(context.Background(), f, live)
	for _, a := range inc.Actions {
		if a.OK() {
			t.Errorf("action %+v without an interface succeeded", a)
		}
	}
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d recorded lines", len(lines))
	}
	var got Incident
	if err := json.Unmarshal([]byte(lines[1]), &got); err != nil || got.Extension != "1004" || got.Rule != RulePrefixGuessing || len(got.Actions) != 6 {
		t.Errorf("recorded %+v (%v)", got, err)
	}
}

func TestWebhookAlerter(t *testing.T) {
	var got Incident
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Token") != "s3cret" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&got)
	}))
	defer srv.Close()
	w := &WebhookAlerter{URL: srv.URL, Header: map[string]string{"X-Token": "s3cret"}}
	if err := w.Alert(context.Background(), &Incident{ID: "x", Extension: "1004", Rule: RulePrefixGuessing}); err != nil {
		t.Fatal(err)
	}
	if got.Extension != "1004" || got.Rule != RulePrefixGuessing {
		t.Errorf("posted %+v", got)
	}
	w.Header = nil
	if err := w.Alert(context.Background(), &Incident{}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("bad status not reported: %v", err)
	}
}

// fakeSMTP is a minimal SMTP server on loopback that keeps one message.
func fakeSMTP(t *testing.T) (addr string, msg chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	msg = make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		fmt.Fprint(c, "220 test ESMTP\r\n")
		var data strings.Builder
		inData := false
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if inData {
				if line == ".\r\n" {
					inData = false
					msg <- data.String()
					fmt.Fprint(c, "250 ok\r\n")
					continue
				}
				data.WriteString(line)
				continue
			}
			switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
			case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
				fmt.Fprint(c, "250 test\r\n")
			case strings.HasPrefix(cmd, "DATA"):
				inData = true
				fmt.Fprint(c, "354 go\r\n")
			case strings.HasPrefix(cmd, "QUIT"):
				fmt.Fprint(c, "221 bye\r\n")
				return
			default:
				fmt.Fprint(c, "250 ok\r\n")
			}
		}
	}()
	return ln.Addr().String(), msg
}

func TestSMTPAlerter(t *testing.T) {
	addr, msg := fakeSMTP(t)
	s := &SMTPAlerter{Addr: addr, From: "pbxguard@example.org", To: []string{"admin@example.org"}}
	inc := &Incident{ID: "x", Extension: "1004", Rule: RulePrefixGuessing, Severity: SeverityCritical, Reason: "+442079460349 dialled with 5 prefixes"}
	if err := s.Alert(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msg:
		if !strings.Contains(m, "Subject: [pbxguard] toll fraud critical: 1004 prefix_guessing") || !strings.Contains(m, "dialled with 5 prefixes") {
			t.Errorf("mail:\n%s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no mail")
	}
	s.To = []string{"a@example.org\r\nBcc: x@example.org"}
	if err := s.Alert(context.Background(), inc); err == nil {
		t.Error("header injection accepted")
	}
}

func TestSyslogAlerter(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "log.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := &SyslogAlerter{Network: "unixgram", Addr: sock}
	if err := s.Alert(context.Background(), &Incident{ID: "x", Extension: "1004", Rule: RulePrefixGuessing, Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.159")}}); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	got := string(buf[:n])
	if !strings.Contains(got, "pbxguard") || !strings.Contains(got, "extension=1004") || !strings.Contains(got, "addrs=203.0.113.159") {
		t.Errorf("syslog got %q", got)
	}
}

func TestStoreRecorder(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := StoreRecorder{Store: st}
	inc := &Incident{ID: "x", Time: t0, Rule: RulePrefixGuessing, Extension: "1004", Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.159")},
		Actions: []Action{{Kind: "lock", Target: "1004", Time: t0}}}
	if err := rec.RecordIncident(context.Background(), inc); err != nil {
		t.Fatal(err)
	}
	got, err := st.Incidents(context.Background(), t0.Add(-time.Hour), 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("%v %v", got, err)
	}
	var back Incident
	if got[0].Kind != "fraud/prefix_guessing" || got[0].Subject != "1004" || json.Unmarshal([]byte(got[0].Detail), &back) != nil || back.Actions[0].Target != "1004" {
		t.Errorf("stored %+v", got[0])
	}
}

func TestResetForgetsLiveCalls(t *testing.T) {
	e := newEngine(t, Config{CountriesPerWindow: 10})
	runSteps(e, []step{
		{0, calls.CallStarted, "1001", "011442079460001", "a", ""},
		{time.Second, calls.CallStarted, "1001", "011442079460002", "b", ""},
	})
	e.Observe(calls.Update{Kind: calls.Reset}, t0.Add(2*time.Second)) // AMI reconnected: the hang-ups were missed
	fs := runSteps(e, []step{{3 * time.Second, calls.CallStarted, "1001", "011442079460003", "c", ""}})
	if len(fs) != 0 {
		t.Errorf("after a reset: %v", rules(fs))
	}
	// A missed hang-up also ages out.
	e = newEngine(t, Config{CountriesPerWindow: 10, IntlPerWindow: 100})
	runSteps(e, []step{
		{0, calls.CallStarted, "1001", "011442079460001", "a", ""},
		{time.Second, calls.CallStarted, "1001", "011442079460002", "b", ""},
	})
	fs = runSteps(e, []step{{5 * time.Hour, calls.CallStarted, "1001", "011442079460003", "c", ""}})
	if len(fs) != 0 {
		t.Errorf("after 5 h: %v", rules(fs))
	}
}

func TestMonitorReleasesWhenUnlockedByHand(t *testing.T) {
	var clock time.Time
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	locked := true
	mon.LockCheck = func(context.Context, string) (bool, error) { return locked, nil }
	ctx := context.Background()
	start := func(i int, dialled string) []*Incident {
		clock = t0.Add(time.Duration(i) * time.Second)
		return mon.HandleUpdate(ctx, calls.Update{Kind: calls.CallStarted, Call: calls.Call{ID: fmt.Sprint(i), Extension: "1004",
			Channel: fmt.Sprintf("PJSIP/1004-%08d", i), Dialled: dialled, Start: clock, Live: true}}, clock)
	}
	start(0, "011442079460349")
	if incs := start(1, "00442079460349"); len(incs) != 1 || incs[0].Rule != RulePrefixGuessing {
		t.Fatalf("%+v", incs)
	}
	if incs := start(2, "2125550142"); len(incs) != 1 || incs[0].Rule != RuleLocked {
		t.Fatalf("locked call: %+v", incs)
	}
	locked = false // pbxguard incident unlock 1004, from another process
	if incs := start(3, "2125550142"); len(incs) != 0 {
		t.Errorf("after unlock: %+v", incs)
	}
	if mon.Engine.Contained("1004") {
		t.Error("still contained after unlock")
	}
}

// TestOwnLockInFlightIsNoUnlock: between a denial's containment decision
// and its AstDB lock, the key is absent because pbxguard has not written
// it yet, not because an administrator removed it: the extension stays
// contained (the AGI decider asks StillLocked then, and a release would
// let the guessing start over).
func TestOwnLockInFlightIsNoUnlock(t *testing.T) {
	clock := t0
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	ctx := context.Background()
	inAstDB := false
	mon.LockCheck = func(context.Context, string) (bool, error) { return inAstDB, nil }
	var during []bool
	fa.onLock = func(ext string) {
		during = append(during, mon.StillLocked(ctx, ext), mon.Engine.Contained(ext))
	}
	f := Finding{Rule: RulePrefixGuessing, Severity: SeverityCritical, Score: 95, Time: clock, Extension: "1004",
		Dialled: "00442079460349", Reason: "denied before the call", Response: defaultResponses[RulePrefixGuessing]}
	if !f.Response.Lock {
		t.Fatal("prefix guessing's default response does not lock")
	}
	incs := mon.ContainDecision(ctx, f)
	if len(incs) != 1 || len(fa.locks) != 1 {
		t.Fatalf("incidents %+v, locks %v", incs, fa.locks)
	}
	if !slices.Equal(during, []bool{true, true}) {
		t.Errorf("while the lock was on its way: StillLocked, Contained = %v, want both true", during)
	}
	// Once the lock ran, a missing key is an unlock by hand.
	if mon.StillLocked(ctx, "1004") || mon.Engine.Contained("1004") {
		t.Error("after the lock ran and the key was removed: still contained")
	}
}

func TestBanOnlyTheOffendingAddresses(t *testing.T) {
	e := newEngine(t, Config{})
	fs := runSteps(e, []step{
		// the real user, from the office, one legitimate call to London
		{0, calls.CallStarted, "1004", "011442079460001", "a", "198.51.100.21"},
		{time.Minute, calls.CallEnded, "1004", "011442079460001", "a", "198.51.100.21"},
		// the attacker, minutes later, from elsewhere
		{3 * time.Minute, calls.CallStarted, "1004", "011442079460349", "b", "203.0.113.159"},
		{3*time.Minute + time.Second, calls.CallStarted, "1004", "00442079460349", "c", "203.0.113.159"},
	})
	if len(fs) != 1 || fs[0].Rule != RulePrefixGuessing {
		t.Fatalf("%v", rules(fs))
	}
	if len(fs[0].Addrs) != 1 || fs[0].Addrs[0] != netip.MustParseAddr("203.0.113.159") {
		t.Errorf("would ban %v, want only 203.0.113.159", fs[0].Addrs)
	}
}

// TestDefaultsAreCopies: a caller changing an exported default changes
// nothing for anyone else (they are functions returning copies).
func TestDefaultsAreCopies(t *testing.T) {
	DefaultResponses()[RulePrefixGuessing] = AlertOnly()
	if DefaultResponses()[RulePrefixGuessing] != Contain() {
		t.Error("DefaultResponses shares its map")
	}
	AllRules()[0] = "bogus"
	if AllRules()[0] == "bogus" {
		t.Error("AllRules shares its slice")
	}
	DefaultHighRiskCountries()[0] = "XX"
	if DefaultHighRiskCountries()[0] == "XX" {
		t.Error("DefaultHighRiskCountries shares its slice")
	}
}
