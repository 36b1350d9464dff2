package fraud

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/calls"
	"go.yaml.in/yaml/v3"
)

// streamServer streams the corpus events through an amitest manager
// (paced by their own times, sped up) once the client has logged in, and
// notes when it announced each of 1004's calls, so that each action the
// server received can be placed among them.
type streamServer struct {
	srv  *amitest.Server
	msgs []*ami.Message

	mu      sync.Mutex
	callsAt []time.Time // when each Newchannel of PJSIP/1004-… was sent
	done    chan struct{}
}

type receivedAction struct {
	msg       *ami.Message
	callsSent int
}

func (s *streamServer) stream(speedup float64, maxGap time.Duration) {
	defer close(s.done)
	for deadline := time.Now().Add(10 * time.Second); s.srv.LoggedIn() == 0; {
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	var last time.Time
	for _, m := range s.msgs {
		if !m.IsEvent() {
			continue // the recording client's own login answer
		}
		if ts, ok := calls.MessageTime(m, time.UTC); ok {
			if !last.IsZero() && ts.After(last) {
				gap := time.Duration(float64(ts.Sub(last)) / speedup)
				time.Sleep(min(gap, maxGap))
			}
			if ts.After(last) {
				last = ts
			}
		}
		if m.Event() == "Newchannel" && strings.HasPrefix(m.Get("Channel"), "PJSIP/1004-") {
			s.mu.Lock()
			s.callsAt = append(s.callsAt, time.Now())
			s.mu.Unlock()
		}
		s.srv.EmitMessage(m)
	}
	time.Sleep(200 * time.Millisecond) // let the last answers go out
	s.srv.DropConnections()            // the stream ends: the client sees EOF
}

// received returns the actions with the number of 1004's calls announced
// before each arrived.
func (s *streamServer) received() []receivedAction {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []receivedAction
	for _, r := range s.srv.Received() {
		n := 0
		for _, at := range s.callsAt {
			if !at.After(r.At) {
				n++
			}
		}
		out = append(out, receivedAction{r.Msg, n})
	}
	return out
}

// TestLiveAMIReplay streams the corpus over a real socket into the AMI
// client and the monitor built from settings, which answers with real
// Hangup and DBPut actions on the same connection.
func TestLiveAMIReplay(t *testing.T) {
	msgs := readRawAMI(t, corpus20+"/ami/ami-events.raw.gz")
	srv := &streamServer{srv: amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "x", Write: []string{"system", "call"}}),
		msgs: msgs, done: make(chan struct{})}
	defer srv.srv.Close()
	go srv.stream(20, 20*time.Millisecond)

	var node yaml.Node
	if err := yaml.Unmarshal([]byte("country: US\ntrunks: [carrier]\nban_for: 1h\n"), &node); err != nil {
		t.Fatal(err)
	}
	set, err := ParseSettings(&node)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := ami.Dial(ctx, ami.Config{Addr: srv.srv.Addr(), Username: "pbxguard", Secret: "x", PingInterval: -1, Backoff: [2]time.Duration{time.Hour, time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var bmu sync.Mutex
	var bans []netip.Addr
	var banDur time.Duration
	mon, err := NewMonitor(set, Deps{AMI: client, Banner: BanFunc(func(_ context.Context, a netip.Addr, d time.Duration, _ string) error {
		bmu.Lock()
		defer bmu.Unlock()
		bans = append(bans, a)
		banDur = d
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	mon.EventTime = true
	var incidents []*Incident
	mon.OnIncident = func(i *Incident) { incidents = append(incidents, i) }
	runDone := make(chan error, 1)
	go func() { runDone <- mon.Run(ctx, client.Events()) }()
	// Wait until the client has delivered every event it got and the
	// monitor has read them all (the stream ends with Shutdown and EOF).
	deadline := time.After(55 * time.Second)
	for {
		st := client.Stats()
		if st.Events > 5000 && mon.Stats().Messages == st.Events && !st.Connected {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("monitor saw %d messages, client delivered %+v", mon.Stats().Messages, client.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Logf("client: %+v", client.Stats())
	cancel()
	<-runDone

	received := srv.received()
	var firstHangup, firstLock *receivedAction
	puts := 0
	for i := range received {
		ra := &received[i]
		switch ra.msg.Get("Action") {
		case "Hangup":
			if !strings.HasPrefix(ra.msg.Get("Channel"), "PJSIP/1004-") || ra.msg.Get("Cause") != "21" {
				t.Errorf("Hangup %v", ra.msg.Headers)
			}
			if firstHangup == nil {
				firstHangup = ra
			}
		case "DBPut":
			if ra.msg.Get("Family") != LockFamily || ra.msg.Get("Key") != "1004" {
				t.Errorf("DBPut %v", ra.msg.Headers)
			}
			if firstLock == nil {
				firstLock = ra
			}
			puts++
		}
	}
	if firstHangup == nil || firstLock == nil {
		t.Fatalf("no hangup/lock received: %d actions", len(received))
	}
	if puts != 1 {
		t.Errorf("%d DBPut, want 1 (the lock holds: later findings neither re-lock nor release)", puts)
	}
	// The first fraud call (…05), or the second (…07) when the first had
	// already ended by the time the monitor's worker acted (a loaded
	// machine): a channel of the cracked extension, never another's.
	if ch := firstHangup.msg.Get("Channel"); ch != "PJSIP/1004-00000005" && ch != "PJSIP/1004-00000007" {
		t.Errorf("first hangup %s, want one of 1004's first fraud calls (PJSIP/1004-00000005 or -07)", ch)
	}
	bmu.Lock()
	defer bmu.Unlock()
	if len(bans) == 0 || bans[0] != netip.MustParseAddr("203.0.113.159") || banDur != time.Hour {
		t.Errorf("bans %v for %s", bans, banDur)
	}
	for _, inc := range incidents {
		if inc.Extension != "1004" {
			t.Errorf("incident on %q: %s", inc.Extension, inc.Reason)
		}
	}
	t.Logf("over a socket (events paced 20× faster, gaps ≤ 20 ms): first Hangup arrived after %d of 1004's calls were announced, DBPut after %d; %d actions, %d incidents, bans %v",
		firstHangup.callsSent, firstLock.callsSent, len(received), len(incidents), bans)
}

func TestParseSettings(t *testing.T) {
	good := `
country: gb
access_code: "9"
trunks: [carrier, trunk2]
ami: {addr: "127.0.0.1:5038", user: guard, secret_file: /etc/pbxguard/ami.secret, md5: false}
window: 15m
intl_per_window: 8
prefix_forms: 3
high_risk_countries: [CU, SO]
business_hours: {start: "08:00", end: "19:30", days: [mon, fri], timezone: Europe/London}
never_ban: [198.51.100.0/24, 203.0.113.250]
ban_for: 2h
responses: {high_risk_country: [alert, ban], off_hours: [none]}
alerts:
  webhook: {url: "https://hooks.example.org/x", headers: {Authorization: "Bearer t"}}
  syslog: {tag: pbxg}
incident_log: /tmp/x.jsonl
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(good), &n); err != nil {
		t.Fatal(err)
	}
	s, err := ParseSettings(&n)
	if err != nil {
		t.Fatal(err)
	}
	e := s.Engine
	if s.Country != "GB" || s.AccessCode != "9" || len(s.Trunks) != 2 || s.AMIUser != "guard" || s.AMIMD5 ||
		e.Window != 15*time.Minute || e.IntlPerWindow != 8 || e.PrefixForms != 3 || len(e.HighRiskCountries) != 2 ||
		e.Hours == nil || e.Hours.End != 19*time.Hour+30*time.Minute || len(e.Hours.Days) != 2 || e.Hours.Location.String() != "Europe/London" ||
		len(e.NeverBan) != 2 || e.NeverBan[1] != netip.MustParsePrefix("203.0.113.250/32") || s.BanFor != 2*time.Hour ||
		e.Responses[RuleHighRiskCountry] != (Response{Alert: true, Ban: true}) || e.Responses[RuleOffHours] != (Response{}) ||
		s.Webhook == nil || s.Webhook.Header["Authorization"] != "Bearer t" || s.Syslog == nil || s.Syslog.Tag != "pbxg" ||
		len(s.Alerters()) != 2 || e.CountryOf == nil {
		t.Errorf("settings %+v engine %+v", s, e)
	}
	bad := `
country: XX
window: 10 minutes
intl_per_window: many
responses: {prefix_guesing: [hangup], satellite: [explode]}
never_ban: [office]
business_hours: {start: "8am", end: "19:00"}
alerts: {webhook: {url: "ftp://x"}, pager: {}}
colour: blue
`
	if err := yaml.Unmarshal([]byte(bad), &n); err != nil {
		t.Fatal(err)
	}
	_, err = ParseSettings(&n)
	if err == nil {
		t.Fatal("bad settings accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`line 2: fraud.country: "XX"`, `line 3: fraud.window: "10 minutes" is not a duration`, `line 4: fraud.intl_per_window`,
		`fraud.responses.prefix_guesing: unknown key`, `fraud.responses.satellite: "explode" is not an action`,
		`line 6: fraud.never_ban: "office"`, `line 7: fraud.business_hours.start`, `fraud.alerts.webhook.url: "ftp://x"`,
		`fraud.alerts.pager: unknown key`, `line 9: fraud.colour: unknown key`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if err := yaml.Unmarshal([]byte("trunks: [a]\n"), &n); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSettings(&n); err == nil || !strings.Contains(err.Error(), "fraud.country: missing") {
		t.Errorf("missing country: %v", err)
	}
}

func TestSettingsAMIConfig(t *testing.T) {
	secret := t.TempDir() + "/ami.secret"
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("country: US\nami: {addr: \"127.0.0.1:5039\", user: guard, secret_file: "+secret+"}\n"), &n); err != nil {
		t.Fatal(err)
	}
	s, err := ParseSettings(&n)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.AMIConfig(nil)
	if err != nil || c.Addr != "127.0.0.1:5039" || c.Username != "guard" || c.Secret != "s3cret" || !c.UseMD5 || c.Events != "system,call,security" {
		t.Errorf("%+v %v", c, err)
	}
	s.AMISecretFile = secret + ".missing"
	if _, err := s.AMIConfig(nil); err == nil || !strings.Contains(err.Error(), "secret_file") {
		t.Errorf("missing secret: %v", err)
	}
}
