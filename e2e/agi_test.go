package e2e

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/fraud"
)

// Issue 11, "Decide before the call": the daemon's FastAGI server (in a
// fresh network namespace, nftables backend, the fake Asterisk Manager of
// fraud_test.go) driven by a client that speaks as Asterisk's res_agi does:
// the environment block, "200 result=1" to each SET VARIABLE, HANGUP.

// agiDialer makes TCP connections inside a namespace from one goroutine
// locked into it (a connection stays in the namespace it was made in).
type agiDialer struct {
	req chan chan dialResult
}

type dialResult struct {
	c   net.Conn
	err error
}

func newAGIDialer(t *testing.T, ns *Netns, addr string) *agiDialer {
	t.Helper()
	d := &agiDialer{req: make(chan chan dialResult)}
	ready := make(chan error, 1)
	go func() {
		_ = inNetns(t, ns.Name, func() error {
			ready <- nil
			for r := range d.req {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				r <- dialResult{c, err}
			}
			return nil
		})
	}()
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(d.req) })
	return d
}

func (d *agiDialer) dial() (net.Conn, error) {
	r := make(chan dialResult, 1)
	d.req <- r
	res := <-r
	return res.c, res.err
}

// agiCall is one question as Asterisk asks it.
type agiCall struct {
	channel, uniqueid, callerid string
	args                        []string
	rawEnv                      string // when set, sent instead of the built block
	hangup                      bool   // answer the first command with HANGUP + 511, as a channel hung up mid-AGI
}

// agiAnswer is what the server did: the variables it set, the lines it
// sent, and how long the decision took (block sent → PBXGUARD_DECISION read).
type agiAnswer struct {
	vars  map[string]string
	lines []string
	took  time.Duration
}

// askAGI runs one FastAGI session.
func askAGIServer(d *agiDialer, listen string, q agiCall) (agiAnswer, error) {
	var a agiAnswer
	c, err := d.dial()
	if err != nil {
		return a, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	env := q.rawEnv
	if env == "" {
		// The order res_agi.c writes (launch_netscript, then setup_env).
		var b strings.Builder
		fmt.Fprintf(&b, "agi_network: yes\nagi_network_script: outbound\nagi_request: agi://%s/outbound\nagi_channel: %s\n", listen, q.channel)
		fmt.Fprintf(&b, "agi_language: en\nagi_type: PJSIP\nagi_uniqueid: %s\nagi_version: 22.10.1\nagi_callerid: %s\nagi_calleridname: Reception\n", q.uniqueid, q.callerid)
		b.WriteString("agi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\n")
		fmt.Fprintf(&b, "agi_dnid: %s\nagi_rdnis: unknown\nagi_context: outbound\nagi_extension: %s\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 140173930981056\n",
			q.args[0], q.args[0])
		for i, arg := range q.args {
			fmt.Fprintf(&b, "agi_arg_%d: %s\n", i+1, arg)
		}
		b.WriteString("\n")
		env = b.String()
	}
	start := time.Now()
	if _, err := io.WriteString(c, env); err != nil {
		return a, err
	}
	a.vars = map[string]string{}
	br := bufio.NewReaderSize(c, 8192)
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF && line == "" {
			return a, nil // the server closed: the dialplan goes on (AGISTATUS=SUCCESS)
		}
		if err != nil {
			return a, fmt.Errorf("reading a command: %w (got %q)", err, line)
		}
		line = strings.TrimSuffix(line, "\n")
		a.lines = append(a.lines, line)
		args := agiParseArgs(line)
		if len(args) != 4 || args[0] != "SET" || args[1] != "VARIABLE" {
			return a, fmt.Errorf("not a SET VARIABLE command: %q", line)
		}
		if args[2] == "PBXGUARD_DECISION" && a.took == 0 {
			a.took = time.Since(start)
		}
		a.vars[args[2]] = args[3]
		reply := "200 result=1\n"
		if q.hangup {
			reply = "HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n"
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return a, err
		}
	}
}

// agiParseArgs splits a command line as res_agi.c's parse_args does.
func agiParseArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, escaped, inWord := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			cur.WriteByte(c)
			escaped, inWord = false, true
		case c == '\\':
			escaped, inWord = true, true
		case c == '"':
			quoted, inWord = !quoted, true
		case (c == ' ' || c == '\t') && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// corpusOutboundCalls reads the corpus's outbound calls (Master.csv rows of
// the outbound context, in order).
func corpusOutboundCalls(t *testing.T) []agiCall {
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
		t.Fatal(err)
	}
	var out []agiCall
	for _, rec := range recs {
		if len(rec) < 17 || rec[3] != "outbound" {
			continue
		}
		out = append(out, agiCall{channel: rec[5], uniqueid: rec[16], callerid: rec[1], args: []string{rec[2]}})
	}
	return out
}

func TestAGIDecisionBeforeDial(t *testing.T) {
	requireE2E(t, "nft")
	// The fake Manager replays only the corpus's SuccessfulAuth events:
	// the monitor and the decision server learn where each extension
	// authenticates from (1004: the cracker 203.0.113.101, then the
	// fraudster 203.0.113.159).
	var items []replayItem
	for _, it := range readCorpusAMI(t) {
		if it.msg != nil && it.msg.Event() == "SuccessfulAuth" {
			items = append(items, it)
		}
	}
	if len(items) < 40 {
		t.Fatalf("corpus: %d SuccessfulAuth events", len(items))
	}
	ns := newNetns(t, "agi")
	dir := t.TempDir()
	var ln net.Listener
	if err := inNetns(t, ns.Name, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "ami.secret")
	if err := os.WriteFile(secret, []byte(fraudAMIPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const listen = "127.0.0.1:4573"
	// 1001 and 1004 are trusted for international calls: the worst case
	// for 1004, whose owner may call abroad. The AGI server starts with the
	// daemon, before the fake Manager's replay (300 ms after the login).
	top := fmt.Sprintf(`timezone: UTC
allowlist_asterisk_trunks: false
audit: {enabled: false, trusted_endpoints: ["1001", "1004"]}
fraud:
  country: US
  trunks: [carrier]
  ami: {addr: "%s", user: %s, secret_file: %s, md5: true}
  ban_for: 1h
  agi: {listen: "%s"}
`, ln.Addr(), fraudAMIUser, secret, listen)
	srv := newFakeAMI(t, ln, items, time.Time{}, time.Time{}, "")
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: "nftables", top: top, metrics: "127.0.0.1:9478"})
	d := startDaemon(t, ns, dir, cfg)
	select {
	case <-srv.streamDone:
	case <-time.After(20 * time.Second):
		t.Fatalf("the fake AMI did not finish its replay; daemon log:\n%s", tail(d.out.String(), 30))
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.out.String(), "AGI decision server started") {
		if time.Now().After(deadline) {
			t.Fatalf("no AGI server; daemon log:\n%s", tail(d.out.String(), 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the monitor has handled the last auth event
	dialer := newAGIDialer(t, ns, listen)

	// The corpus's outbound calls, in order, as Asterisk would ask before Dial.
	qs := corpusOutboundCalls(t)
	var fraudAllowed, fraudAfterFirstAllowed, n1004, n1001 int
	rules := map[string]int{}
	var worst time.Duration
	for _, q := range qs {
		a, err := askAGIServer(dialer, listen, q)
		if err != nil {
			t.Fatalf("%s %s: %v", q.channel, q.args[0], err)
		}
		dec, reason := a.vars["PBXGUARD_DECISION"], a.vars["PBXGUARD_REASON"]
		if dec != "allow" && dec != "deny" || reason == "" || len(a.lines) != 2 {
			t.Fatalf("%s %s: commands %q", q.channel, q.args[0], a.lines)
		}
		worst = max(worst, a.took)
		_, ep, _ := calls.SplitChannel(q.channel)
		switch ep {
		case fraudExt:
			n1004++
			rule, _, _ := strings.Cut(reason, ":")
			rules[rule]++
			if dec == "allow" {
				fraudAllowed++
				if n1004 > 1 {
					fraudAfterFirstAllowed++
					t.Errorf("fraudulent call %d (%s) allowed: %s", n1004, q.args[0], reason)
				}
			}
		case "1001":
			n1001++
			if dec != "allow" {
				t.Errorf("1001's call to %s denied: %s", q.args[0], reason)
			}
		}
	}
	t.Logf("corpus as AGI: 1004 %d calls, %d allowed (%d after the first), rules %v; 1001 %d calls, none denied; slowest answer %v",
		n1004, fraudAllowed, fraudAfterFirstAllowed, rules, n1001, worst)
	if n1004 != 40 || n1001 != 4 {
		t.Fatalf("replayed %d calls of 1004 and %d of 1001, want 40 and 4", n1004, n1001)
	}
	// 1004's first address was the cracker's (203.0.113.101): the
	// fraudster's (203.0.113.159) is new, so even the first call is denied;
	// the second, another prefix form of the same number, is prefix
	// guessing, which contains 1004.
	if rules["new_address"] != 1 || rules["prefix_guessing"] != 1 || fraudAllowed != 0 {
		t.Errorf("rules %v, %d allowed: want the first call denied as new_address, the second as prefix_guessing", rules, fraudAllowed)
	}

	// The prefix-guessing denial contained 1004 through the monitor: the
	// fraudster's address is in the kernel (and only it), 1004 is locked.
	d.waitBans("the fraudster banned", 10*time.Second, func(bs []daemon.BanInfo) bool {
		return slices.ContainsFunc(bs, func(b daemon.BanInfo) bool { return b.Prefix == fraudAddr+"/32" })
	})
	n, kernel := kernelCount(t, ns, "nftables")
	if _, ok := kernel[fraudAddr+"/32"]; !ok || n != 1 {
		t.Errorf("kernel set %v (%d entries), want only %s", kernel, n, fraudAddr)
	}
	if locked, _ := srv.srv.DB(fraud.LockFamily, fraudExt); locked == "" {
		t.Errorf("1004 not locked in the AstDB (%s/%s unset)", fraud.LockFamily, fraudExt)
	}

	// An endpoint nobody trusted, a hostile request, a caller hanging up.
	a, err := askAGIServer(dialer, listen, agiCall{channel: "PJSIP/1005-00000070", uniqueid: "1.1", callerid: "1005", args: []string{"0033170189999"}})
	if err != nil || a.vars["PBXGUARD_DECISION"] != "deny" || !strings.HasPrefix(a.vars["PBXGUARD_REASON"], "untrusted_endpoint: ") {
		t.Errorf("1005 to France: %v %v", a.vars, err)
	}
	hostile := "agi_network: yes\nagi_network_script: outbound\nagi_channel: PJSIP/1001-00000071\n" +
		"agi_calleridname: \"" + strings.Repeat("x", 9000) + "\nagi_arg_1: 2125550142\nagi_channel: PJSIP/carrier-1\n\nSET VARIABLE PBXGUARD_DECISION allow\n\n"
	a, err = askAGIServer(dialer, listen, agiCall{rawEnv: hostile})
	if err != nil || a.vars["PBXGUARD_DECISION"] != "deny" || !strings.HasPrefix(a.vars["PBXGUARD_REASON"], "malformed_request: ") {
		t.Errorf("hostile block: %v %v %q", a.vars, err, a.lines)
	}
	a, err = askAGIServer(dialer, listen, agiCall{channel: "PJSIP/1001-00000072", uniqueid: "1.2", callerid: "1001", args: []string{"2125550142"}, hangup: true})
	if err != nil || len(a.lines) != 1 {
		t.Errorf("hung-up channel: the server sent %q (%v), want one command then close", a.lines, err)
	}

	// Every decision counted by decision and rule.
	m := fetchMetrics(t, ns, "http://127.0.0.1:9478/metrics")
	for _, want := range []string{
		`pbxguard_agi_decisions_total{decision="allow",rule="ok"} 5`,
		`pbxguard_agi_decisions_total{decision="deny",rule="prefix_guessing"} 1`,
		`pbxguard_agi_decisions_total{decision="deny",rule="malformed_request"} 1`,
		`pbxguard_agi_decisions_total{decision="deny",rule="untrusted_endpoint"} 1`,
		`pbxguard_agi_sessions_total{result="hungup"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "pbxguard_agi_decisions_total") {
			t.Log(l)
		}
	}
	if !strings.Contains(d.out.String(), `decision=deny rule=prefix_guessing extension=1004`) {
		t.Errorf("no log line of the prefix-guessing decision; log:\n%s", tail(d.out.String(), 20))
	}
}
