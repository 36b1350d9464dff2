package calls

import (
	"bufio"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

const corpus20 = "../../testdata/corpus/asterisk-20"

// readRawAMI parses a recorded AMI byte stream with the AMI client's reader.
func readRawAMI(t testing.TB, path string) []*ami.Message {
	t.Helper()
	msgs, err := ami.ReadCapture(path)
	if err != nil {
		t.Fatalf("corpus: %v", err)
	}
	return msgs
}

func TestTrackerCorpus(t *testing.T) {
	msgs := readRawAMI(t, corpus20+"/ami/ami-events.raw.gz")
	tr := NewTracker(Config{})
	var clock time.Time
	started := map[string]int{}
	ended := map[string]int{}
	addrs := map[string]map[netip.Addr]int{}
	var hungByAMI Call
	maxLive := 0
	for _, m := range msgs {
		if ts, ok := MessageTime(m, time.UTC); ok && ts.After(clock) {
			clock = ts
		}
		u, ok := tr.Handle(m, clock)
		if !ok {
			continue
		}
		switch u.Kind {
		case CallStarted:
			started[u.Call.Extension]++
			if addrs[u.Call.Extension] == nil {
				addrs[u.Call.Extension] = map[netip.Addr]int{}
			}
			addrs[u.Call.Extension][u.Call.SourceAddr]++
			if n := len(tr.Live("1004")); n > maxLive {
				maxLive = n
			}
		case CallEnded:
			ended[u.Call.Extension]++
			if u.Call.Channel == "PJSIP/1004-00000017" {
				hungByAMI = u.Call
			}
			if u.Call.End.Before(u.Call.Start) {
				t.Errorf("%s ends before it starts", u.Call.Channel)
			}
		}
	}
	// Ground truth: 1004 placed 40 calls from 203.0.113.159; 1001 made 2+3+2
	// calls from 198.51.100.21, 2001 2 calls; the carrier delivered 2 calls.
	if started["1004"] != 40 || ended["1004"] != 40 {
		t.Errorf("1004: started %d ended %d, want 40", started["1004"], ended["1004"])
	}
	if a := addrs["1004"]; len(a) != 1 || a[netip.MustParseAddr("203.0.113.159")] != 40 {
		t.Errorf("1004 addresses %v", a)
	}
	if a := addrs["1001"]; len(a) != 1 || a[netip.MustParseAddr("198.51.100.21")] == 0 {
		t.Errorf("1001 addresses %v", a)
	}
	if started["1001"] != 7 || started["2001"] != 2 {
		t.Errorf("started %v", started)
	}
	if maxLive < 3 || maxLive > 4 {
		t.Errorf("1004 had at most %d live calls, ground truth says ≤ 4 at once", maxLive)
	}
	if hungByAMI.Dialled != "+442079460958" || hungByAMI.Answer.IsZero() {
		t.Errorf("the call hung up over AMI: %+v", hungByAMI)
	}
	if len(tr.Live("")) != 0 {
		t.Errorf("calls still live at the end: %v", tr.Live(""))
	}
	st := tr.Stats()
	t.Logf("tracker: %d messages, %d started, %d ended, started per extension %v", st.Messages, st.Started, st.Ended, started)
}

func TestCDRReaderCorpus(t *testing.T) {
	f, err := os.Open(corpus20 + "/log/cdr-csv/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cr := NewCDRReader(f, time.UTC)
	per := map[string]int{}
	var first Call
	for {
		c, err := cr.Next()
		if err != nil {
			break
		}
		if first.ID == "" {
			first = c
		}
		per[c.Extension]++
	}
	if per["1004"] != 40 || per["1001"] != 7 || per["2001"] != 2 || per["carrier"] != 1 || cr.Skipped != 0 {
		t.Errorf("rows per extension %v, skipped %d", per, cr.Skipped)
	}
	want := Call{ID: "1795579236.0", Channel: "PJSIP/1001-00000000", Tech: "PJSIP", Extension: "1001", Dialled: "1002",
		Context: "from-internal", Start: time.Date(2026, 11, 25, 4, 0, 36, 0, time.UTC), Answer: time.Date(2026, 11, 25, 4, 0, 36, 0, time.UTC),
		End: time.Date(2026, 11, 25, 4, 0, 40, 0, time.UTC), Billsec: 4, Disposition: "ANSWERED", Source: SourceCDR}
	if first != want {
		t.Errorf("first row\n got %+v\nwant %+v", first, want)
	}
}

func TestParseCDRErrors(t *testing.T) {
	good := []string{"", "1001", "1002", "from-internal", "x", "PJSIP/1001-00000000", "", "Dial", "", "2026-11-25 04:00:36", "", "2026-11-25 04:00:40", "4", "0", "NO ANSWER", "DOCUMENTATION"}
	if c, ok, err := ParseCDR(good, nil); err != nil || !ok || !c.Answer.IsZero() {
		t.Errorf("good row: %+v %v %v", c, ok, err)
	}
	for i, mut := range []func([]string) []string{
		func(r []string) []string { return r[:5] },
		func(r []string) []string { r[cdrStart] = "yesterday"; return r },
		func(r []string) []string { r[cdrEnd] = ""; return r },
		func(r []string) []string { r[cdrBillsec] = "-1"; return r },
		func(r []string) []string { r[cdrAnswer] = "x"; return r },
	} {
		r := mut(append([]string(nil), good...))
		if _, _, err := ParseCDR(r, nil); err == nil {
			t.Errorf("mutation %d accepted", i)
		}
	}
	local := append([]string(nil), good...)
	local[cdrChannel] = "Local/1002@from-internal-00000001;1"
	if _, ok, err := ParseCDR(local, nil); ok || err != nil {
		t.Errorf("Local channel: ok=%v err=%v", ok, err)
	}
}

func TestParseSecurityLine(t *testing.T) {
	line := `[Nov 25 04:03:11] SECURITY[12729] res_security_log.c: SecurityEvent="SuccessfulAuth",EventTV="2026-11-25T04:03:11.664+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1004",SessionID="1-13201@203.0.113.159",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.159/5062",UsingPassword="1"`
	a, ok := ParseSecurityLine(line)
	if !ok || a.Account != "1004" || a.Service != "PJSIP" || a.Addr != netip.MustParseAddr("203.0.113.159") ||
		!a.Time.Equal(time.Date(2026, 11, 25, 4, 3, 11, 664e6, time.UTC)) {
		t.Errorf("%+v %v", a, ok)
	}
	// A Call-ID imitating a RemoteAddress must not move the address.
	inj := strings.Replace(line, `SessionID="1-13201@203.0.113.159"`, `SessionID="x",LocalAddress="IPV4/UDP/1.1.1.1/5060",RemoteAddress="IPV4/UDP/192.0.2.99/5060",UsingPassword="1"`, 1)
	if a, ok := ParseSecurityLine(inj); !ok || a.Addr != netip.MustParseAddr("203.0.113.159") {
		t.Errorf("injected: %+v %v", a, ok)
	}
	v6 := strings.Replace(line, "IPV4/UDP/203.0.113.159/5062", "IPV6/UDP/2001:db8:203::bad:66/5060", 1)
	if a, ok := ParseSecurityLine(v6); !ok || a.Addr != netip.MustParseAddr("2001:db8:203::bad:66") {
		t.Errorf("v6: %+v %v", a, ok)
	}
	syslogLine := `Nov 25 04:03:11 vm asterisk[12637]: SECURITY[12729]: res_security_log.c:114 in security_event_stasis_cb: SecurityEvent="SuccessfulAuth",EventTV="2026-11-25T04:03:11.664+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1004",SessionID="x",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.159/5062",UsingPassword="1"`
	if a, ok := ParseSecurityLine(syslogLine); !ok || a.Addr != netip.MustParseAddr("203.0.113.159") {
		t.Errorf("syslog form: %+v %v", a, ok)
	}
	for _, bad := range []string{
		strings.Replace(syslogLine, ":114 in security_event_stasis_cb: ", ": x: ", 1),
		strings.Replace(line, "res_security_log.c: ", "chan_sip.c: ", 1),
		strings.Replace(line, "SuccessfulAuth", "InvalidPassword", 1),
		strings.Replace(line, "IPV4/UDP/203.0.113.159/5062", "IPV4/UDP/2001:db8::1/5062", 1),
		strings.Replace(line, `EventTV="2026-11-25T04:03:11.664+0000"`, `EventTV="now"`, 1),
		line[:80], "", "garbage",
	} {
		if a, ok := ParseSecurityLine(bad); ok {
			t.Errorf("accepted %q: %+v", bad, a)
		}
	}
	// The corpus security log: 1004 authenticated from the cracker and the fraudster.
	f, err := os.Open(corpus20 + "/log/security")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	from := map[netip.Addr]int{}
	for sc.Scan() {
		if a, ok := ParseSecurityLine(sc.Text()); ok && a.Account == "1004" {
			from[a.Addr]++
		}
	}
	if from[netip.MustParseAddr("203.0.113.159")] != 41 || from[netip.MustParseAddr("203.0.113.101")] != 1 || len(from) != 2 {
		t.Errorf("1004 authenticated from %v", from)
	}
}

func TestMessageTime(t *testing.T) {
	m := func(kv ...string) *ami.Message {
		msg := &ami.Message{}
		for i := 0; i < len(kv); i += 2 {
			msg.Headers = append(msg.Headers, ami.Header{Key: kv[i], Value: kv[i+1]})
		}
		return msg
	}
	tests := []struct {
		msg  *ami.Message
		want time.Time
		ok   bool
	}{
		{m("Event", "Newchannel", "Uniqueid", "1795579390.6"), time.Unix(1795579390, 0), true},
		{m("Event", "Hangup", "Timestamp", "1795579390.123456"), time.Unix(1795579390, 123456000), true},
		{m("Event", "SuccessfulAuth", "EventTV", "2026-11-25T04:03:11.664+0000"), time.Date(2026, 11, 25, 4, 3, 11, 664e6, time.UTC), true},
		{m("Event", "CEL", "EventTime", "2026-11-25 04:03:10"), time.Date(2026, 11, 25, 4, 3, 10, 0, time.UTC), true},
		{m("Event", "Cdr", "StartTime", "2026-11-25 04:03:10", "EndTime", "2026-11-25 04:03:13"), time.Date(2026, 11, 25, 4, 3, 13, 0, time.UTC), true},
		{m("Event", "Newchannel", "Uniqueid", "asterisk-1.6"), time.Time{}, false},
		{m("Event", "Hangup"), time.Time{}, false},
	}
	for i, tt := range tests {
		got, ok := MessageTime(tt.msg, time.UTC)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("%d: %v %v, want %v %v", i, got, ok, tt.want, tt.ok)
		}
	}
}

func TestSplitChannel(t *testing.T) {
	for _, tt := range []struct {
		ch, tech, ext string
		ok            bool
	}{
		{"PJSIP/1004-00000017", "PJSIP", "1004", true},
		{"SIP/2001-00000000", "SIP", "2001", true},
		{"IAX2/5001-1234", "IAX2", "5001", true},
		{"PJSIP/my-phone-0000001", "PJSIP", "my-phone", true},
		{"Local/1002@from-internal-00000001;1", "Local", "1002@from-internal", false},
		{"garbage", "", "", false},
	} {
		tech, ext, ok := SplitChannel(tt.ch)
		if tech != tt.tech || ext != tt.ext || ok != tt.ok {
			t.Errorf("%s: %q %q %v", tt.ch, tech, ext, ok)
		}
	}
}

func FuzzParseSecurityLine(f *testing.F) {
	f.Add(`x res_security_log.c: SecurityEvent="SuccessfulAuth",EventTV="2026-11-25T04:03:11.664+0000",Severity="I",Service="PJSIP",EventVersion="1",AccountID="1004",SessionID="a",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.159/5062",UsingPassword="1"`)
	f.Fuzz(func(t *testing.T, s string) {
		if a, ok := ParseSecurityLine(s); ok && !a.Addr.IsValid() {
			t.Fatal("ok without an address")
		}
	})
}

func FuzzTrackerHandle(f *testing.F) {
	f.Add("Newchannel", "PJSIP/1004-00000005", "1795579390.6", "011442079460349", "6")
	f.Fuzz(func(t *testing.T, ev, ch, uid, exten, state string) {
		tr := NewTracker(Config{MaxLive: 4})
		for _, e := range []string{ev, "Newchannel", "DialBegin", "Newstate", "Hangup"} {
			tr.Handle(&ami.Message{Headers: []ami.Header{{Key: "Event", Value: e}, {Key: "Channel", Value: ch}, {Key: "Uniqueid", Value: uid},
				{Key: "Linkedid", Value: uid}, {Key: "Exten", Value: exten}, {Key: "ChannelState", Value: state}, {Key: "DialString", Value: exten}}}, time.Time{})
		}
		if len(tr.calls) > 4 {
			t.Fatal("unbounded")
		}
	})
}

func TestCDRRowsOfAMICallsSkipped(t *testing.T) {
	tr := NewTracker(Config{})
	for _, m := range readRawAMI(t, corpus20+"/ami/ami-events.raw.gz") {
		tr.Handle(m, time.Time{})
	}
	data, err := os.ReadFile(corpus20 + "/log/cdr-csv/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	passed := 0
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		rec, err := SplitCDRLine(line)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := tr.HandleCDR(rec, time.UTC); err != nil {
			t.Fatal(err)
		} else if ok {
			passed++
		}
	}
	if passed != 0 {
		t.Errorf("%d CDR rows of calls AMI already reported were counted again", passed)
	}
	// A fresh tracker (no AMI) takes them all.
	tr = NewTracker(Config{})
	rec, _ := SplitCDRLine(strings.Split(string(data), "\n")[3])
	if u, ok, err := tr.HandleCDR(rec, time.UTC); err != nil || !ok || u.Call.Extension != "1004" {
		t.Errorf("%+v %v %v", u, ok, err)
	}
}

func FuzzParseCDR(f *testing.F) {
	f.Add(`"","1004","011442079460349","outbound","""Reception"" <1004>","PJSIP/1004-00000005","PJSIP/carrier-00000006","Dial","PJSIP/011442079460349@carrier,30","2026-11-25 04:03:10","2026-11-25 04:03:10","2026-11-25 04:03:13",3,3,"ANSWERED","DOCUMENTATION","1795579390.6","outbound"`)
	f.Fuzz(func(t *testing.T, line string) {
		rec, err := SplitCDRLine(line)
		if err != nil {
			return
		}
		c, ok, err := ParseCDR(rec, time.UTC)
		if err == nil && ok && (c.Extension == "" || c.Dialled == "") {
			t.Fatalf("ok without extension or number: %+v", c)
		}
	})
}

func TestFullyBootedResets(t *testing.T) {
	tr := NewTracker(Config{})
	msg := func(kv ...string) *ami.Message {
		m := &ami.Message{}
		for i := 0; i < len(kv); i += 2 {
			m.Headers = append(m.Headers, ami.Header{Key: kv[i], Value: kv[i+1]})
		}
		return m
	}
	if u, ok := tr.Handle(msg("Event", "Newchannel", "Channel", "PJSIP/1004-00000005", "Uniqueid", "1.1", "Linkedid", "1.1", "Exten", "011442079460349"), time.Time{}); !ok || u.Kind != CallStarted {
		t.Fatalf("%+v %v", u, ok)
	}
	if len(tr.Live("1004")) != 1 {
		t.Fatal("not live")
	}
	if u, ok := tr.Handle(msg("Event", "FullyBooted"), time.Time{}); !ok || u.Kind != Reset || len(tr.Live("")) != 0 {
		t.Errorf("FullyBooted: %+v %v live %d", u, ok, len(tr.Live("")))
	}
}

func TestCELMessage(t *testing.T) {
	rec, _ := SplitCDRLine(`"CHAN_START","1795579390.665133","Reception","1004","","","","011442079460349","from-internal","PJSIP/1004-00000005","","","3","","1795579390.6","1795579390.6","","","",""`)
	m, at, ok, err := CELMessage(rec)
	if err != nil || !ok || m.Event() != "Newchannel" || m.Get("Exten") != "011442079460349" || m.Get("Channel") != "PJSIP/1004-00000005" ||
		!at.Equal(time.Unix(1795579390, 665133000)) {
		t.Fatalf("%v %v %v %v", m, at, ok, err)
	}
	tr := NewTracker(Config{})
	if u, ok := tr.Handle(m, at); !ok || u.Kind != CallStarted || u.Call.Extension != "1004" {
		t.Errorf("%+v %v", u, ok)
	}
	rec[celEventType] = "BRIDGE_ENTER"
	if _, _, ok, err := CELMessage(rec); ok || err != nil {
		t.Errorf("BRIDGE_ENTER: %v %v", ok, err)
	}
	rec[celEventTime] = "2026-11-25 04:03:10"
	if _, _, _, err := CELMessage(rec); err == nil {
		t.Error("a date as eventtime accepted")
	}
	if _, _, _, err := CELMessage(rec[:5]); err == nil {
		t.Error("short record accepted")
	}
}

func TestSecondSourceNotCountedTwice(t *testing.T) {
	tr := NewTracker(Config{})
	rec, _ := SplitCDRLine(`"CHAN_START","1795579390.665133","Reception","1004","","","","011442079460349","from-internal","PJSIP/1004-00000005","","","3","","1795579390.6","1795579390.6","","","",""`)
	m, at, _, _ := CELMessage(rec)
	if _, ok := tr.Handle(m, at); !ok {
		t.Fatal("first source ignored")
	}
	if u, ok := tr.Handle(m, at); ok {
		t.Errorf("second source counted: %+v", u)
	}
	tr.Handle(&ami.Message{Headers: []ami.Header{{Key: "Event", Value: "Hangup"}, {Key: "Uniqueid", Value: "1795579390.6"}}}, at)
	if u, ok := tr.Handle(m, at); ok {
		t.Errorf("late second source counted: %+v", u)
	}
}
