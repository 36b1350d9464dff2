package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/store"
)

// askAGI plays Asterisk's side of one FastAGI session: the environment
// block, then "200 result=1" to each SET VARIABLE; it returns the
// variables set.
func askAGI(t *testing.T, addr, channel string, args ...string) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "agi_network: yes\nagi_network_script: outbound\nagi_request: agi://%s/outbound\nagi_channel: %s\nagi_uniqueid: 1795579390.6\nagi_callerid: 1004\nagi_context: outbound\n", addr, channel)
	for i, a := range args {
		fmt.Fprintf(&b, "agi_arg_%d: %s\n", i+1, a)
	}
	b.WriteString("\n")
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return vars // the server closed: the session is over
		}
		rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "SET VARIABLE ")
		if !ok {
			t.Fatalf("unexpected command %q", line)
		}
		name, val, _ := strings.Cut(rest, " ")
		vars[name] = strings.ReplaceAll(strings.Trim(val, `"`), `\"`, `"`)
		fmt.Fprint(c, "200 result=1\n")
	}
}

// fakeManagerDB is fakeManager with an AstDB: DBPut stores, DBDel
// deletes, DBGet answers as Asterisk does (a DBGetResponse event list, or
// "Database entry not found").
// fakeManagerDB is a fake AMI with an AstDB; db reports whether key is
// set and, with del, deletes it (as "pbxguard incident unlock" would).
func fakeManagerDB(t *testing.T, events []string) (addr string, astDB func(key string, del bool) bool) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	db := map[string]string{}
	go func() {
		for i := 0; i < 10; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "Asterisk Call Manager/7.0.3\r\n")
				br := bufio.NewReader(c)
				sent := false
				for {
					h := map[string]string{}
					for {
						_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						l = strings.TrimRight(l, "\r\n")
						if l == "" {
							break
						}
						k, v, _ := strings.Cut(l, ": ")
						h[strings.ToLower(k)] = v
					}
					id, action := h["actionid"], strings.ToLower(h["action"])
					key := h["family"] + "/" + h["key"]
					mu.Lock()
					switch action {
					case "dbput":
						db[key] = h["val"]
					case "dbdel":
						delete(db, key)
					}
					val, found := db[key]
					mu.Unlock()
					switch {
					case action == "dbget" && !found:
						fmt.Fprintf(c, "Response: Error\r\nActionID: %s\r\nMessage: Database entry not found\r\n\r\n", id)
					case action == "dbget":
						fmt.Fprintf(c, "Response: Success\r\nActionID: %s\r\nEventList: start\r\nMessage: Result will follow\r\n\r\n"+
							"Event: DBGetResponse\r\nActionID: %s\r\nFamily: %s\r\nKey: %s\r\nVal: %s\r\n\r\n"+
							"Event: DBGetComplete\r\nActionID: %s\r\nEventList: Complete\r\nListItems: 1\r\n\r\n", id, id, h["family"], h["key"], val, id)
					default:
						fmt.Fprintf(c, "Response: Success\r\nActionID: %s\r\nMessage: ok\r\n\r\n", id)
					}
					if action == "login" && !sent {
						sent = true
						for _, e := range events {
							fmt.Fprint(c, e)
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), func(key string, del bool) bool {
		mu.Lock()
		defer mu.Unlock()
		_, had := db[key]
		if del {
			delete(db, key)
		}
		return had
	}
}

func agiPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAGIWorkerDecidesOnTheMonitorsState: the daemon's AGI server, the AMI
// worker's monitor (which learnt 1004's address from SuccessfulAuth), the
// prefix-guessing denial contained through it (lock and ban of the
// attacker), and every later call of 1004 refused as locked.
func TestAGIWorkerDecidesOnTheMonitorsState(t *testing.T) {
	auth := fmt.Sprintf("Event: SuccessfulAuth\r\nPrivilege: security,all\r\nEventTV: %s\r\nSeverity: Informational\r\nService: PJSIP\r\n"+
		"EventVersion: 1\r\nAccountID: 1004\r\nSessionID: x\r\nLocalAddress: IPV4/UDP/192.0.2.1/5060\r\nRemoteAddress: IPV4/UDP/203.0.113.177/5062\r\n"+
		"UsingPassword: 1\r\n\r\n", time.Now().Format("2006-01-02T15:04:05.000-0700"))
	amiAddr, astDB := fakeManagerDB(t, []string{auth})
	dir := t.TempDir()
	secret := filepath.Join(dir, "ami.secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := agiPort(t)
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(fmt.Sprintf("country: US\ntrunks: [carrier]\nami: {addr: %q, user: pbxguard, secret_file: %s, md5: false}\n"+
		"agi: {listen: %q}\n", amiAddr, secret, listen)), &node); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Fraud: node.Content[0], Location: time.UTC, Audit: config.Audit{TrustedEndpoints: []string{"1001", "1004"}}}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	amiW, err := amiWorker(cfg, st, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	agiW, _, err := agiWorker(cfg, log, nil)
	if err != nil || agiW == nil {
		t.Fatalf("agiWorker: %v %v", agiW, err)
	}
	fw := newFakeBackend()
	d, err := New(Options{Store: st, Backend: fw, Workers: []Worker{*amiW, *agiW}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, "the monitor learnt 1004's address", func() bool {
		m := d.fraudMon.get()
		if m == nil {
			return false
		}
		v, ok := m.DecideView("1004")
		return ok && v.Addr.String() == "203.0.113.177"
	})
	waitFor(t, "the AGI server listens", func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	steps := []struct {
		ch, num, want, rule string
	}{
		{"PJSIP/1001-00000002", "2125550142", "allow", "ok"},
		{"PJSIP/1004-00000005", "011442079460349", "allow", "ok"},
		{"PJSIP/1004-00000007", "00442079460349", "deny", "prefix_guessing"},
		{"PJSIP/1005-00000009", "0033170189999", "deny", "untrusted_endpoint"},
		{"PJSIP/1001-0000003f", "0033170189999", "allow", "ok"},
	}
	for _, s := range steps {
		v := askAGI(t, listen, s.ch, s.num)
		if v["PBXGUARD_DECISION"] != s.want || !strings.HasPrefix(v["PBXGUARD_REASON"], s.rule+": ") {
			t.Errorf("%s %s: %v, want %s %s", s.ch, s.num, v, s.want, s.rule)
		}
	}
	// Another script than outbound: denied, said why.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "agi_network: yes\nagi_network_script: inbound\nagi_channel: PJSIP/1001-00000003\nagi_arg_1: 2125550142\n\n")
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "SET VARIABLE PBXGUARD_DECISION \"deny\"\n" {
		t.Errorf("script inbound: %q", line)
	}
	waitFor(t, "the attacker banned through the monitor", func() bool { _, ok := fw.has("203.0.113.177/32"); return ok })
	waitFor(t, "the monitor's containment over", func() bool { v, ok := d.fraudMon.get().DecideView("1004"); return ok && v.Contained })
	v := askAGI(t, listen, "PJSIP/1004-0000000b", "2125550142")
	if v["PBXGUARD_DECISION"] != "deny" || !strings.HasPrefix(v["PBXGUARD_REASON"], "locked_extension: ") {
		t.Errorf("1004 after containment: %v", v)
	}
	got := map[string]float64{}
	mfs, _ := d.Metrics().Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "pbxguard_agi_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var dec, rule string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "decision":
					dec = lp.GetValue()
				case "rule":
					rule = lp.GetValue()
				}
			}
			got[dec+"/"+rule] = m.GetCounter().GetValue()
		}
	}
	if got["allow/ok"] != 3 || got["deny/prefix_guessing"] != 1 || got["deny/untrusted_endpoint"] != 1 || got["deny/locked_extension"] != 1 {
		t.Errorf("decision metrics = %v", got)
	}
	// "pbxguard incident unlock 1004" (another process) deletes the key:
	// the daemon notices within a second and judges its calls afresh.
	// pbxguard's own lock first (it runs after the ban, beside the hang-up).
	waitFor(t, "1004's lock in the AstDB", func() bool { return astDB("pbxguard/locked/1004", false) })
	astDB("pbxguard/locked/1004", true)
	waitFor(t, "1004 allowed after unlock", func() bool {
		time.Sleep(50 * time.Millisecond)
		return askAGI(t, listen, "PJSIP/1004-0000000d", "2125550142")["PBXGUARD_DECISION"] == "allow"
	})
}

func TestDialplanSafe(t *testing.T) {
	for in, want := range map[string]string{
		"untrusted_endpoint: 1005 is not trusted for international calls (trusted_endpoints)":               "untrusted_endpoint: 1005 is not trusted for international calls ?trusted_endpoints?",
		`prefix_guessing: +442079460349 dialled with 2 prefixes within 10m0s (011442079460349, 0044"${X}")`: "prefix_guessing: +442079460349 dialled with 2 prefixes within 10m0s ?011442079460349? 0044???X???",
		"a,b;c\\d[e]é": "a?b?c?d?e???",
	} {
		if got := dialplanSafe(in); got != want {
			t.Errorf("dialplanSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAGIWorkerNotConfigured(t *testing.T) {
	var node yaml.Node
	_ = yaml.Unmarshal([]byte("country: US\n"), &node)
	if w, _, err := agiWorker(&config.Config{Fraud: node.Content[0]}, slog.New(slog.DiscardHandler), nil); w != nil || err != nil {
		t.Errorf("without fraud.agi: %v %v", w, err)
	}
	if w, _, err := agiWorker(&config.Config{}, slog.New(slog.DiscardHandler), nil); w != nil || err != nil {
		t.Errorf("without fraud: %v %v", w, err)
	}
}

// TestAGIWorkerKeptAcrossReload: a reload that leaves fraud: and the
// trusted endpoints unchanged keeps the decider (its holds and the
// addresses it learnt); any change makes a new one.
func TestAGIWorkerKeptAcrossReload(t *testing.T) {
	mk := func(src string, trusted ...string) *config.Config {
		var node yaml.Node
		if err := yaml.Unmarshal([]byte(src), &node); err != nil {
			t.Fatal(err)
		}
		return &config.Config{Fraud: node.Content[0], Audit: config.Audit{TrustedEndpoints: trusted}}
	}
	log := slog.New(slog.DiscardHandler)
	src := "country: US\nagi: {listen: \"127.0.0.1:4573\"}\n"
	_, first, err := agiWorker(mk(src, "1001"), log, nil)
	if err != nil || first == nil {
		t.Fatal(err)
	}
	_, same, _ := agiWorker(mk(src, "1001"), log, first)
	_, trust, _ := agiWorker(mk(src, "1001", "1004"), log, first)
	_, window, _ := agiWorker(mk("country: US\nwindow: 5m\nagi: {listen: \"127.0.0.1:4573\"}\n", "1001"), log, first)
	if same.dec != first.dec || trust.dec == first.dec || window.dec == first.dec {
		t.Errorf("kept: same %v, trust changed %v, window changed %v; want true false false", same.dec == first.dec, trust.dec == first.dec, window.dec == first.dec)
	}
}

// TestMonitorSlotTeachesAddresses: the AMI worker's authentications (AMI
// SuccessfulAuth of an extension, the log's auth_success) reach the
// decider; AMI logins and SSH do not.
func TestMonitorSlotTeachesAddresses(t *testing.T) {
	var node yaml.Node
	if err := yaml.Unmarshal([]byte("country: US\nagi: {listen: \"127.0.0.1:4573\"}\n"), &node); err != nil {
		t.Fatal(err)
	}
	set, err := fraud.ParseSettings(node.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	dec, err := set.Decider([]string{"1004", "1005"})
	if err != nil {
		t.Fatal(err)
	}
	var slot monitorSlot
	slot.observeMessage(&ami.Message{}) // no decider yet: nothing happens
	slot.dec.Store(dec)
	auth := func(svc, acct, addr string) *ami.Message {
		m := &ami.Message{}
		m.Set("Event", "SuccessfulAuth")
		m.Set("Service", svc)
		m.Set("AccountID", acct)
		m.Set("RemoteAddress", "IPV4/UDP/"+addr+"/5060")
		return m
	}
	slot.observeMessage(auth("AMI", "1004", "192.0.2.50"))      // an AMI login: ignored
	slot.observeMessage(auth("PJSIP", "1004", "198.51.100.22")) // the office: baseline
	slot.observeEvent(event.Event{Kind: event.AuthSuccess, Service: event.ServiceSSH, Account: "1004", Addr: netip.MustParseAddr("192.0.2.51")})
	slot.observeEvent(event.Event{Kind: event.AuthSuccess, Service: event.ServicePJSIP, Account: "1004", Addr: netip.MustParseAddr("203.0.113.177")})
	// 1005 is taught by a log event only: its baseline, then a new address.
	slot.observeEvent(event.Event{Kind: event.AuthSuccess, Service: event.ServicePJSIP, Account: "1005", Addr: netip.MustParseAddr("198.51.100.30")})
	slot.observeEvent(event.Event{Kind: event.AuthSuccess, Service: event.ServicePJSIP, Account: "1005", Addr: netip.MustParseAddr("203.0.113.178")})
	now := time.Now()
	for _, c := range []struct{ ep, addr, want string }{
		{"1004", "198.51.100.22", "allow"}, // the baseline: the AMI login before it taught nothing
		{"1004", "203.0.113.177", "deny"},
		{"1004", "192.0.2.50", "deny"},
		{"1005", "198.51.100.30", "allow"},
		{"1005", "203.0.113.178", "deny"},
	} {
		d := dec.Decide(fraud.DecideRequest{Channel: "PJSIP/" + c.ep + "-1", Dialled: "0033170189999", Addr: netip.MustParseAddr(c.addr)}, now)
		if d.Value() != c.want {
			t.Errorf("%s from %s: %s %s (%s)", c.ep, c.addr, d.Value(), d.Rule, d.Reason)
		}
		now = now.Add(time.Second)
	}
}
