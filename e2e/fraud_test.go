package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/store"
)

// Issue 5, first "Show" point, end to end through the real daemon binary:
// the corpus toll-fraud burst (extension 1004 cracked, calls from
// 203.0.113.159) replayed with its real timing into `pbxguard run` (in a
// fresh network namespace, nftables backend), over a fake Asterisk Manager
// Interface the test serves, and (second test) through the CDR CSV file.

const (
	fraudExt      = "1004"
	fraudAddr     = "203.0.113.159"
	fraudAMIUser  = "pbxguard"
	fraudAMIPass  = "e2e-s3cret"
	replayLead    = 5 * time.Second  // real-timed lead before the first fraudulent call
	replayRealFor = 10 * time.Second // real-timed span after the first fraudulent call
)

var (
	legitExts  = []string{"1001", "1002", "2001"}
	legitAddrs = []string{"198.51.100.21", "203.0.113.60", "203.0.113.250"}
)

// replayItem is one step of a replay on the corpus clock: an AMI event to
// send, or a CDR row to append, or a marker (neither) whose wall-clock
// instant is recorded.
type replayItem struct {
	at     time.Time // corpus time (never going backwards)
	msg    *ami.Message
	cdr    []string // CDR record; its times are rewritten to the wall clock
	marker string
}

// recvAction is an action the fake AMI server received, with its arrival.
type recvAction struct {
	msg *ami.Message
	at  time.Time
}

// fakeAMI is an amitest manager (answering as Asterisk 22 does, with the
// documented write = system,call) that, once the daemon has logged in,
// replays the corpus items with their real relative timing inside
// [winStart, winEnd] and compressed outside it. The replayed events keep
// the server's channels, so a hang-up action really ends a replayed call.
type fakeAMI struct {
	t        *testing.T
	srv      *amitest.Server
	items    []replayItem
	winStart time.Time
	winEnd   time.Time
	cdrPath  string

	mu         sync.Mutex
	newchan    map[string]time.Time // channel → wall time its Newchannel was sent
	ended      map[string]time.Time // channel → wall time its Hangup event was sent
	fraudCalls []time.Time          // wall times 1004's calls were announced (Newchannel or CDR row)
	markers    map[string]time.Time
	sentItems  int
	streamDone chan struct{}
}

func newFakeAMI(t *testing.T, ln net.Listener, items []replayItem, winStart, winEnd time.Time, cdrPath string) *fakeAMI {
	s := &fakeAMI{t: t, items: items, winStart: winStart, winEnd: winEnd, cdrPath: cdrPath,
		newchan: map[string]time.Time{}, ended: map[string]time.Time{}, markers: map[string]time.Time{},
		streamDone: make(chan struct{})}
	s.srv = amitest.NewServerListener(ln, amitest.Config{Username: fraudAMIUser, Secret: fraudAMIPass, Write: []string{"system", "call"}})
	t.Cleanup(s.srv.Close)
	go func() {
		deadline := time.Now().Add(30 * time.Second)
		for s.srv.LoggedIn() == 0 {
			if time.Now().After(deadline) {
				close(s.streamDone)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.stream(func(m *ami.Message) error { s.srv.EmitMessage(m); return nil })
	}()
	return s
}

// actions returns the actions the server received, with their arrival.
func (s *fakeAMI) actions() []recvAction {
	var out []recvAction
	for _, r := range s.srv.Received() {
		out = append(out, recvAction{r.Msg, r.At})
	}
	return out
}

// pace returns how long to wait between two items on the corpus clock:
// the real gap inside [winStart, winEnd], at most 2 ms outside it.
func (s *fakeAMI) pace(prev, cur time.Time) time.Duration {
	if !cur.After(prev) {
		return 0
	}
	if cur.After(s.winStart) && !cur.After(s.winEnd) {
		if prev.Before(s.winStart) {
			prev = s.winStart
		}
		return cur.Sub(prev)
	}
	return min(cur.Sub(prev), 2*time.Millisecond)
}

func (s *fakeAMI) stream(write func(*ami.Message) error) {
	defer close(s.streamDone)
	time.Sleep(300 * time.Millisecond) // let the daemon finish its start
	var prev time.Time
	start := time.Now()
	var slept time.Duration
	for i, it := range s.items {
		if i > 0 {
			// Sleep to a target on the wall clock, so that the time spent
			// writing does not accumulate into drift.
			slept += s.pace(prev, it.at)
			if d := time.Until(start.Add(slept)); d > 0 {
				time.Sleep(d)
			}
		}
		prev = it.at
		switch {
		case it.msg != nil:
			m := it.msg
			if err := write(m); err != nil {
				s.t.Logf("fake AMI: write: %v", err)
				return
			}
			now := time.Now()
			s.mu.Lock()
			ch := m.Get("Channel")
			switch m.Event() {
			case "Newchannel":
				s.newchan[ch] = now
				if strings.HasPrefix(ch, "PJSIP/"+fraudExt+"-") {
					s.fraudCalls = append(s.fraudCalls, now)
				}
			case "Hangup":
				s.ended[ch] = now
			}
			s.sentItems++
			s.mu.Unlock()
		case it.cdr != nil:
			now := time.Now()
			line := cdrLineAt(s.t, it.cdr, now)
			f, err := os.OpenFile(s.cdrPath, os.O_APPEND|os.O_WRONLY, 0o640)
			if err != nil {
				s.t.Errorf("fake AMI: CDR file: %v", err)
				return
			}
			_, err = f.WriteString(line)
			f.Close()
			if err != nil {
				s.t.Errorf("fake AMI: CDR append: %v", err)
				return
			}
			s.mu.Lock()
			if strings.HasPrefix(it.cdr[5], "PJSIP/"+fraudExt+"-") {
				s.fraudCalls = append(s.fraudCalls, now)
			}
			s.sentItems++
			s.mu.Unlock()
		default:
			s.mu.Lock()
			if _, ok := s.markers[it.marker]; !ok {
				s.markers[it.marker] = time.Now()
			}
			s.mu.Unlock()
		}
	}
}

// cdrLineAt renders a Master.csv record written at end (its hang-up) on
// the wall clock: start and answer keep their distance to the end.
func cdrLineAt(t *testing.T, rec []string, end time.Time) string {
	rec = slices.Clone(rec)
	const layout = "2006-01-02 15:04:05"
	oldEnd, err := time.ParseInLocation(layout, rec[11], time.UTC)
	if err != nil {
		t.Fatalf("CDR end %q: %v", rec[11], err)
	}
	end = end.UTC().Truncate(time.Second)
	for _, i := range []int{9, 10, 11} {
		if rec[i] == "" {
			continue
		}
		old, err := time.ParseInLocation(layout, rec[i], time.UTC)
		if err != nil {
			t.Fatalf("CDR time %q: %v", rec[i], err)
		}
		rec[i] = end.Add(old.Sub(oldEnd)).Format(layout)
	}
	var b strings.Builder
	w := csv.NewWriter(&b)
	w.Write(rec)
	w.Flush()
	return b.String()
}

// readCorpusAMI reads the recorded AMI stream and gives each event a time
// on the corpus clock (Timestamp / EventTV / CEL EventTime / Uniqueid,
// never going backwards).
func readCorpusAMI(t *testing.T) []replayItem {
	t.Helper()
	msgs, err := ami.ReadCapture(filepath.Join(corpusDir(t), "asterisk-20", "ami", "ami-events.raw.gz"))
	if err != nil {
		t.Fatalf("corpus AMI stream: %v", err)
	}
	var out []replayItem
	var last time.Time
	for _, m := range msgs {
		if !m.IsEvent() || m.Event() == "Shutdown" {
			continue // the recording client's login answer; Asterisk's shutdown at the end
		}
		if ts, ok := calls.MessageTime(m, time.UTC); ok && ts.After(last) {
			last = ts
		}
		out = append(out, replayItem{at: last, msg: m})
	}
	return out
}

// fraudLab is the daemon in its namespace with the fake AMI server.
type fraudLab struct {
	ns  *Netns
	dir string
	srv *fakeAMI
	d   *daemonProc
}

func startFraudLab(t *testing.T, items []replayItem, winStart, winEnd time.Time, withCDR bool) *fraudLab {
	t.Helper()
	ns := newNetns(t, "fraud")
	dir := t.TempDir()
	var ln net.Listener
	if err := inNetns(t, ns.Name, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("fake AMI listener in %s: %v", ns.Name, err)
	}
	secret := filepath.Join(dir, "ami.secret")
	if err := os.WriteFile(secret, []byte(fraudAMIPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cdrPath := ""
	cdrLine := ""
	if withCDR {
		cdrPath = filepath.Join(dir, "Master.csv")
		if err := os.WriteFile(cdrPath, nil, 0o640); err != nil {
			t.Fatal(err)
		}
		cdrLine = "\n  cdr: " + cdrPath
	}
	top := fmt.Sprintf(`timezone: UTC
allowlist_asterisk_trunks: false
audit: {enabled: false}
fraud:
  country: US
  trunks: [carrier]
  ami: {addr: "%s", user: %s, secret_file: %s, md5: true}
  ban_for: 1h%s
`, ln.Addr(), fraudAMIUser, secret, cdrLine)
	srv := newFakeAMI(t, ln, items, winStart, winEnd, cdrPath)
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: "nftables", top: top})
	d := startDaemon(t, ns, dir, cfg)
	// The daemon is up; wait for its AMI login (and its CDR follower).
	deadline := time.Now().Add(10 * time.Second)
	for {
		in := srv.srv.LoggedIn() > 0
		log := d.out.String()
		if in && strings.Contains(log, "AMI listener started") && (!withCDR || followsFile(log, cdrPath)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not log in to the fake AMI (or follow the CDR file); log:\n%s", tail(log, 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &fraudLab{ns: ns, dir: dir, srv: srv, d: d}
}

// waitStream waits (bounded) until the replay is over, then a little more
// for the daemon's last answers.
func (l *fraudLab) waitStream(t *testing.T, limit time.Duration) {
	t.Helper()
	select {
	case <-l.srv.streamDone:
	case <-time.After(limit):
		t.Fatalf("replay not over after %v (%d of %d items sent)", limit, l.srv.sentItems, len(l.srv.items))
	}
	time.Sleep(time.Second)
	want := 0
	for _, it := range l.srv.items {
		if it.msg != nil || it.cdr != nil {
			want++
		}
	}
	l.srv.mu.Lock()
	defer l.srv.mu.Unlock()
	if l.srv.sentItems != want {
		t.Fatalf("replay sent %d of %d items", l.srv.sentItems, want)
	}
}

// containment is what the daemon did about the fraud, on the wall clock.
type containment struct {
	hangupAt, lockAt, banAt time.Time
	hangups                 []string
	ban                     daemon.BanInfo
}

func (c containment) done() time.Time {
	t := c.lockAt
	if c.banAt.After(t) {
		t = c.banAt
	}
	if c.hangupAt.After(t) {
		t = c.hangupAt
	}
	return t
}

// checkActions asserts that every response action concerns 1004 only and
// returns the first hang-up and lock instants.
func (l *fraudLab) checkActions(t *testing.T) containment {
	t.Helper()
	var c containment
	s := l.srv
	acts := s.actions()
	s.mu.Lock()
	defer s.mu.Unlock()
	kinds := map[string]int{}
	for _, a := range acts {
		act := a.msg.Get("Action")
		kinds[act]++
		switch act {
		case "Hangup", "PJSIPHangup":
			ch := a.msg.Get("Channel")
			if !strings.HasPrefix(ch, "PJSIP/"+fraudExt+"-") {
				t.Errorf("%s of %q: only 1004's channels may be hung up", act, ch)
				continue
			}
			sent, ok := s.newchan[ch]
			if !ok || sent.After(a.at) {
				t.Errorf("%s of %s, a channel the server had not announced", act, ch)
			}
			if end, ok := s.ended[ch]; ok && end.Before(a.at) && c.hangupAt.IsZero() {
				t.Errorf("first %s of %s, a channel already over (ended %s before)", act, ch, a.at.Sub(end))
			}
			if c.hangupAt.IsZero() {
				c.hangupAt = a.at
			}
			c.hangups = append(c.hangups, ch)
		case "DBPut":
			if a.msg.Get("Family") != fraud.LockFamily || a.msg.Get("Key") != fraudExt {
				t.Errorf("DBPut %s/%s: only the lock of 1004 may be written", a.msg.Get("Family"), a.msg.Get("Key"))
				continue
			}
			if c.lockAt.IsZero() {
				c.lockAt = a.at
			}
		case "DBDel":
			t.Errorf("DBDel %s/%s: nothing may be unlocked", a.msg.Get("Family"), a.msg.Get("Key"))
		}
		for _, ext := range legitExts {
			if strings.HasPrefix(a.msg.Get("Channel"), "PJSIP/"+ext+"-") && act != "Getvar" || a.msg.Get("Key") == ext {
				t.Errorf("action %s concerns legit extension %s: %v", act, ext, a.msg.Headers)
			}
		}
	}
	var getvars []string
	for _, a := range acts {
		if a.msg.Get("Action") == "Getvar" {
			getvars = append(getvars, a.msg.Get("Channel")+" "+a.msg.Get("Variable"))
		}
	}
	t.Logf("actions received by the fake AMI: %v; Getvar: %v", kinds, getvars)
	return c
}

// checkBans asserts that 203.0.113.159 is banned by jail fraud (in the
// daemon and in the kernel set) and that nothing else is.
func (l *fraudLab) checkBans(t *testing.T, c *containment) {
	t.Helper()
	bans := l.d.bans()
	found := false
	for _, b := range bans {
		switch {
		case b.Prefix == fraudAddr+"/32" && b.Jail == "fraud":
			found = true
			c.ban = b
			c.banAt = b.Since
		default:
			t.Errorf("unexpected ban %+v", b)
		}
	}
	if !found {
		t.Fatalf("%s not banned by jail fraud; bans %+v\ndaemon log:\n%s", fraudAddr, bans, tail(l.d.out.String(), 30))
	}
	if r := c.ban.Remaining; r < 3000 || r > 3600 {
		t.Errorf("ban of %s: %.0f s remaining, want about 1h (fraud.ban_for)", fraudAddr, r)
	}
	n, kernel := kernelCount(t, l.ns, "nftables")
	if r, ok := kernel[fraudAddr+"/32"]; n != 1 || !ok || r < 3000 {
		t.Errorf("kernel set holds %d entries %v, want only %s/32 with about 1h left", n, kernel, fraudAddr)
	}
	for _, a := range legitAddrs {
		if _, ok := kernel[a+"/32"]; ok {
			t.Errorf("legit address %s in the kernel set", a)
		}
	}
}

// checkIncidents stops the daemon and reads its store: incidents on 1004
// only, with the ban of 203.0.113.159 and no failed action.
func (l *fraudLab) checkIncidents(t *testing.T) []store.Incident {
	t.Helper()
	l.d.stop()
	st, err := store.Open(filepath.Join(l.dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	incs, err := st.Incidents(context.Background(), time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(incs) == 0 {
		t.Fatal("no incident in the store")
	}
	var contain *fraud.Incident
	for i := len(incs) - 1; i >= 0; i-- { // oldest first
		in := incs[i]
		var inc fraud.Incident
		if err := json.Unmarshal([]byte(in.Detail), &inc); err != nil {
			t.Fatalf("incident %d detail: %v\n%s", in.ID, err, in.Detail)
		}
		if in.Subject != fraudExt || inc.Extension != fraudExt {
			t.Errorf("incident on %q (%s): %s", in.Subject, in.Kind, inc.Reason)
		}
		for _, a := range inc.Addrs {
			if slices.Contains(legitAddrs, a.String()) {
				t.Errorf("incident %s names legit address %s", in.Kind, a)
			}
		}
		if contain == nil && slices.ContainsFunc(inc.Addrs, func(a netip.Addr) bool { return a.String() == fraudAddr }) {
			contain = &inc
		}
	}
	if contain == nil {
		t.Fatalf("no incident names %s: %d incidents, first %s %s", fraudAddr, len(incs), incs[len(incs)-1].Kind, incs[len(incs)-1].Detail)
	}
	t.Logf("containing incident: %s %s severity %s: %s", contain.Rule, contain.Extension, contain.Severity, contain.Reason)
	for _, a := range contain.Actions {
		t.Logf("  action %s %s at %s err=%q", a.Kind, a.Target, a.Time.Format("15:04:05.000"), a.Error)
		if a.Kind != "alert" && !a.OK() {
			t.Errorf("containing incident: action %s %s failed: %s", a.Kind, a.Target, a.Error)
		}
	}
	return incs
}

// corpusCallTimes finds the corpus time of 1004's first call (its
// Newchannel) and that of 1001's international call.
func corpusCallTimes(t *testing.T, items []replayItem) (firstFraud, legitIntl time.Time) {
	t.Helper()
	for _, it := range items {
		if it.msg == nil || it.msg.Event() != "Newchannel" {
			continue
		}
		ch := it.msg.Get("Channel")
		if firstFraud.IsZero() && strings.HasPrefix(ch, "PJSIP/"+fraudExt+"-") {
			firstFraud = it.at
		}
		if x := it.msg.Get("Exten"); legitIntl.IsZero() && strings.HasPrefix(ch, "PJSIP/1001-") && (strings.HasPrefix(x, "011") || strings.HasPrefix(x, "00")) {
			legitIntl = it.at
		}
	}
	if firstFraud.IsZero() || legitIntl.IsZero() {
		t.Fatalf("corpus: first fraud call %v, 1001's international call %v", firstFraud, legitIntl)
	}
	return firstFraud, legitIntl
}

// TestFraudAMIReplayIntoDaemon: issue 5 "Show" point 1 over AMI. The whole
// corpus AMI stream goes into `pbxguard run`: real timing from 5 s before
// 1004's first fraudulent call to 10 s after it, compressed (gaps ≤ 2 ms)
// before and after, so that every legit call of 1001/1002/2001 is replayed
// too (1001's international call, to France, comes 27 s after the first
// fraudulent call: in the compressed tail).
func TestFraudAMIReplayIntoDaemon(t *testing.T) {
	requireE2E(t, "nft")
	items := readCorpusAMI(t)
	firstFraud, legitIntl := corpusCallTimes(t, items)
	winStart, winEnd := firstFraud.Add(-replayLead), firstFraud.Add(replayRealFor)
	t.Logf("corpus: %d AMI events; first fraudulent call %s; 1001's international call %s (+%.1f s: %s)",
		len(items), firstFraud.Format("15:04:05.000"), legitIntl.Format("15:04:05"), legitIntl.Sub(firstFraud).Seconds(),
		map[bool]string{true: "real-timed", false: "compressed tail"}[!legitIntl.After(winEnd)])
	l := startFraudLab(t, items, winStart, winEnd, false)
	l.waitStream(t, 45*time.Second)

	c := l.checkActions(t)
	l.checkBans(t, &c)
	if c.hangupAt.IsZero() || c.lockAt.IsZero() {
		t.Fatalf("no Hangup (%v) or no DBPut of %s/%s (%v) received", c.hangupAt, fraud.LockFamily, fraudExt, c.lockAt)
	}
	s := l.srv
	s.mu.Lock()
	first := s.fraudCalls[0]
	done := c.done()
	n := 0
	for _, at := range s.fraudCalls {
		if !at.After(done) {
			n++
		}
	}
	total := len(s.fraudCalls)
	firstCh := s.newchan["PJSIP/"+fraudExt+"-00000005"]
	s.mu.Unlock()
	if !firstCh.Equal(first) {
		t.Errorf("first fraudulent call announced at %v, PJSIP/1004-00000005 at %v", first, firstCh)
	}
	distinct := map[string]bool{}
	for _, ch := range c.hangups {
		distinct[ch] = true
	}
	t.Logf("hang-ups: %d actions on %d distinct channels of 1004 (a later finding, e.g. intl_rate, hangs up the live calls again)", len(c.hangups), len(distinct))
	// The hang-ups worked: the channel is gone, ended by the daemon's
	// action and not by the replay's own Hangup later (amitest keeps the
	// replayed channels). The first one was up when it was hung up.
	byAction := 0
	for ch := range distinct {
		if s.srv.HasChannel(ch) {
			t.Errorf("%s still up after the daemon hung it up", ch)
		}
		if by := s.srv.HungUpBy(ch); strings.HasPrefix(by, "Hangup ") || strings.HasPrefix(by, "PJSIPHangup ") {
			byAction++
		}
	}
	if by := s.srv.HungUpBy(c.hangups[0]); by != "Hangup 21" {
		t.Errorf("first hung-up channel %s ended by %q, want the daemon's Hangup 21", c.hangups[0], by)
	}
	t.Logf("of the %d channels hung up, %d were ended by the daemon's action (the others had ended meanwhile)", len(distinct), byAction)
	took := done.Sub(first)
	t.Logf("AMI → daemon: 1004 contained after %d fraudulent calls, %.3f s after its first (hang-up +%.3f s of %v, lock +%.3f s, ban +%.3f s); %d fraudulent calls replayed in all, %d hang-ups",
		n, took.Seconds(), c.hangupAt.Sub(first).Seconds(), c.hangups[0], c.lockAt.Sub(first).Seconds(), c.banAt.Sub(first).Seconds(), total, len(c.hangups))
	if n > 3 || took > 5*time.Second {
		t.Errorf("containment took %d fraudulent calls and %v, want ≤ 3 calls and ≤ 5 s", n, took)
	}
	if total != 40 {
		t.Errorf("%d fraudulent calls replayed, want the corpus's 40", total)
	}
	legit := 0
	s.mu.Lock()
	for ch := range s.newchan {
		for _, ext := range legitExts {
			if strings.HasPrefix(ch, "PJSIP/"+ext+"-") || strings.HasPrefix(ch, "SIP/"+ext+"-") {
				legit++
			}
		}
	}
	_, france := s.newchan["PJSIP/1001-0000003f"]
	s.mu.Unlock()
	if !france {
		t.Error("1001's international call (PJSIP/1001-0000003f to 0033170189999) was not replayed")
	}
	t.Logf("legit channels of 1001/1002/2001 replayed: %d (1001's call to France included: %v)", legit, france)
	l.checkIncidents(t)
}

// followsFile reports whether the daemon log says a source follows path.
func followsFile(log, path string) bool {
	for _, line := range strings.Split(log, "\n") {
		if (strings.Contains(line, "source: following") || strings.Contains(line, "source: resuming")) && strings.Contains(line, path) {
			return true
		}
	}
	return false
}

// readCorpusCDR reads the corpus Master.csv rows, each at its hang-up
// (end) time: that is when Asterisk writes it.
func readCorpusCDR(t *testing.T) []replayItem {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir(t), "asterisk-20", "log", "cdr-csv", "Master.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatalf("corpus CDR: %v", err)
	}
	var out []replayItem
	for _, rec := range recs {
		if len(rec) < 17 {
			t.Fatalf("corpus CDR row with %d fields: %q", len(rec), rec)
		}
		end, err := time.ParseInLocation("2006-01-02 15:04:05", rec[11], time.UTC)
		if err != nil {
			t.Fatalf("corpus CDR end %q: %v", rec[11], err)
		}
		out = append(out, replayItem{at: end, cdr: rec})
	}
	return out
}

// TestFraudCDRReplayIntoDaemon: issue 5 "Show" point 1 with the CDR CSV
// source. The daemon follows fraud.cdr; the test appends the corpus rows
// one by one at their hang-up time (real timing from 5 s before 1004's
// first fraudulent call started to 10 s after, compressed outside), with
// the times in each row moved to the wall clock. CDR rows carry no
// address: the daemon learns 1004's from the AMI SuccessfulAuth security
// events, which the fake AMI server streams on the same clock (security
// events only: no call events, so no row is skipped as "seen by AMI").
// Rows arrive at hang-up, when the call is over: containment is the lock
// and the ban (nothing live is left to hang up), measured in rows.
func TestFraudCDRReplayIntoDaemon(t *testing.T) {
	requireE2E(t, "nft")
	var items []replayItem
	for _, it := range readCorpusAMI(t) {
		if ami.IsSecurity(it.msg) {
			items = append(items, it)
		}
	}
	nSec := len(items)
	rows := readCorpusCDR(t)
	items = append(items, rows...)
	var firstStart time.Time
	for _, it := range rows {
		if strings.HasPrefix(it.cdr[5], "PJSIP/"+fraudExt+"-") {
			firstStart, _ = time.ParseInLocation("2006-01-02 15:04:05", it.cdr[9], time.UTC)
			break
		}
	}
	if firstStart.IsZero() {
		t.Fatal("corpus CDR: no row of 1004")
	}
	items = append(items, replayItem{at: firstStart, marker: "first-fraud-start"})
	slices.SortStableFunc(items, func(a, b replayItem) int { return a.at.Compare(b.at) })
	winStart, winEnd := firstStart.Add(-replayLead), firstStart.Add(replayRealFor)
	t.Logf("corpus: %d AMI security events, %d CDR rows; 1004's first fraudulent call started %s", nSec, len(rows), firstStart.Format("15:04:05"))
	l := startFraudLab(t, items, winStart, winEnd, true)
	l.waitStream(t, 45*time.Second)

	c := l.checkActions(t)
	l.checkBans(t, &c)
	if c.lockAt.IsZero() {
		t.Fatalf("no DBPut of %s/%s received", fraud.LockFamily, fraudExt)
	}
	s := l.srv
	s.mu.Lock()
	start := s.markers["first-fraud-start"]
	firstRow := s.fraudCalls[0]
	done := c.done()
	n := 0
	for _, at := range s.fraudCalls {
		if !at.After(done) {
			n++
		}
	}
	total := len(s.fraudCalls)
	s.mu.Unlock()
	t.Logf("CDR → daemon: 1004 contained at its CDR row %d, %.3f s after its first fraudulent call started (%.3f s after that call's row; lock +%.3f s, ban +%.3f s); %d rows of 1004 in all, %d hang-ups (rows arrive when the call is over)",
		n, done.Sub(start).Seconds(), done.Sub(firstRow).Seconds(), c.lockAt.Sub(start).Seconds(), c.banAt.Sub(start).Seconds(), total, len(c.hangups))
	if n > 3 {
		t.Errorf("containment took %d rows of 1004, want ≤ 3", n)
	}
	if total != 40 {
		t.Errorf("%d rows of 1004 replayed, want the corpus's 40", total)
	}
	if len(rows)-total != 10 {
		t.Errorf("%d legit rows replayed, want the corpus's 10 (1001/2001 calls, 1001's call to France included, and an inbound carrier call to 1002)", len(rows)-total)
	}
	l.checkIncidents(t)
}

// TestFraudRealUserNotBanned: issue 11.1 and 11.2 end to end. The fake
// manager is amitest (it answers as Asterisk 22 does: PJSIPHangup leaves
// an answered call up). Replayed through `pbxguard run` from AMI events:
// the office phone of 1004 (198.51.100.22, registered) makes one ordinary
// call to 011442079460349; then the attacker (203.0.113.177) authenticates
// as 1004 and dials the same number as 011… (answered by the carrier) and
// 00… (ringing). Only the attacker is banned; both attacker channels are
// gone (the answered one by Hangup, the ringing one by PJSIPHangup 403);
// the office address is named as spared in the incident; the incident log
// (fraud.incident_log) is written.
func TestFraudRealUserNotBanned(t *testing.T) {
	requireE2E(t, "nft")
	const office, attacker = "198.51.100.22", "203.0.113.177"
	ns := newNetns(t, "fraudusr")
	dir := t.TempDir()
	var ln net.Listener
	if err := inNetns(t, ns.Name, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("fake AMI listener in %s: %v", ns.Name, err)
	}
	srv := amitest.NewServerListener(ln, amitest.Config{Username: fraudAMIUser, Secret: fraudAMIPass, Write: []string{"system", "call"}})
	defer srv.Close()
	secret := filepath.Join(dir, "ami.secret")
	if err := os.WriteFile(secret, []byte(fraudAMIPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	incLog := filepath.Join(dir, "incidents.jsonl")
	top := fmt.Sprintf(`timezone: UTC
allowlist_asterisk_trunks: false
audit: {enabled: false}
fraud:
  country: US
  trunks: [carrier]
  ami: {addr: "%s", user: %s, secret_file: %s, md5: true}
  ban_for: 1h
  pjsip_hangup: true
  incident_log: %s
`, ln.Addr(), fraudAMIUser, secret, incLog)
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: "nftables", top: top})
	d := startDaemon(t, ns, dir, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for srv.LoggedIn() == 0 || !strings.Contains(d.out.String(), "AMI listener started") {
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not log in to the fake AMI; log:\n%s", tail(d.out.String(), 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the monitor's subscription is read
	auth := func(addr string) {
		srv.Emit("Event", "SuccessfulAuth", "Privilege", "security,all", "EventTV", time.Now().Format("2006-01-02T15:04:05.000-0700"),
			"Severity", "Informational", "Service", "PJSIP", "EventVersion", "1", "AccountID", fraudExt, "SessionID", "x",
			"LocalAddress", "IPV4/UDP/192.0.2.1/5060", "RemoteAddress", "IPV4/UDP/"+addr+"/5060", "UsingPassword", "1")
	}
	// The office: registered, one ordinary call to London, over.
	auth(office)
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000001", Exten: "011442079460349", RemoteAddr: office + ":5060"})
	srv.Answer("PJSIP/1004-00000001")
	time.Sleep(100 * time.Millisecond)
	srv.EndCall("PJSIP/1004-00000001")
	time.Sleep(100 * time.Millisecond)
	// The attacker, with 1004's cracked password.
	auth(attacker)
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000002", Exten: "011442079460349", RemoteAddr: attacker + ":5062"})
	srv.Answer("PJSIP/1004-00000002")
	time.Sleep(100 * time.Millisecond)
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000003", Exten: "00442079460349", RemoteAddr: attacker + ":5062"})

	d.waitBans("the attacker's ban", 10*time.Second, func(bs []daemon.BanInfo) bool { return len(bs) > 0 })
	deadline = time.Now().Add(10 * time.Second)
	for srv.HasChannel("PJSIP/1004-00000002") || srv.HasChannel("PJSIP/1004-00000003") {
		if time.Now().After(deadline) {
			t.Fatalf("attacker channels still up: %v; hung up by %q %q; warnings %v", srv.Channels(),
				srv.HungUpBy("PJSIP/1004-00000002"), srv.HungUpBy("PJSIP/1004-00000003"), srv.Warnings())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if by := srv.HungUpBy("PJSIP/1004-00000002"); !strings.HasPrefix(by, "Hangup ") {
		t.Errorf("answered attacker call ended by %q, want the plain Hangup (PJSIPHangup leaves an answered call up)", by)
	}
	if by := srv.HungUpBy("PJSIP/1004-00000003"); by != "PJSIPHangup 403" {
		t.Errorf("ringing attacker call ended by %q, want PJSIPHangup 403", by)
	}
	if w := strings.Join(srv.Warnings(), "; "); strings.Contains(w, "out of range") {
		t.Errorf("PJSIPHangup sent an out-of-range response code: %s", w)
	}
	if v, ok := srv.DB(fraud.LockFamily, fraudExt); !ok {
		t.Error("1004 not locked")
	} else {
		t.Logf("lock: %s", v)
	}
	bans := d.bans()
	for _, b := range bans {
		if b.Prefix != attacker+"/32" {
			t.Errorf("unexpected ban %+v", b)
		}
	}
	n, kernel := kernelCount(t, ns, "nftables")
	if _, ok := kernel[attacker+"/32"]; n != 1 || !ok {
		t.Errorf("kernel set holds %d entries %v, want only %s/32", n, kernel, attacker)
	}
	if _, ok := kernel[office+"/32"]; ok {
		t.Errorf("the office %s is banned in the kernel", office)
	}
	// The incident log (fraud.incident_log, issue 11.5) has what happened.
	deadline = time.Now().Add(10 * time.Second)
	var incs []fraud.Incident
	for {
		incs = incs[:0]
		data, _ := os.ReadFile(incLog)
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var inc fraud.Incident
			if json.Unmarshal([]byte(line), &inc) == nil && inc.Rule == fraud.RulePrefixGuessing {
				incs = append(incs, inc)
			}
		}
		if len(incs) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(incs) != 1 {
		t.Fatalf("%d prefix_guessing incidents in %s", len(incs), incLog)
	}
	inc := incs[0]
	if len(inc.Addrs) != 1 || inc.Addrs[0].String() != attacker || len(inc.Spared) != 1 || inc.Spared[0].Addr.String() != office {
		t.Errorf("incident addrs %v spared %+v", inc.Addrs, inc.Spared)
	}
	results := map[string]string{}
	for _, a := range inc.Actions {
		t.Logf("  action %s %s: %s (%.1f ms, %d attempts) %s %s", a.Kind, a.Target, a.Result, a.TookMS, len(a.Attempts), a.Note, a.Error)
		results[a.Kind+" "+a.Target] = a.Result
	}
	want := map[string]string{
		"ban " + attacker: fraud.ResultOK, "ban " + office: fraud.ResultSkipped, "lock " + fraudExt: fraud.ResultOK,
		"hangup PJSIP/1004-00000002": fraud.ResultOK, "hangup PJSIP/1004-00000003": fraud.ResultOK,
	}
	for k, v := range want {
		if results[k] != v {
			t.Errorf("action %s: %q, want %q", k, results[k], v)
		}
	}
}
