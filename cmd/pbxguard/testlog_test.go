package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

const testLogCorpus20 = "../../testdata/corpus/asterisk-20/log/"

func runTestLogCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"test-log"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestTestLogJSON(t *testing.T) {
	out, err := runTestLogCLI(t, "", "--format", "json", testLogCorpus20+"messages")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Lines   int            `json:"lines"`
		Matched int            `json:"matched"`
		ByAddr  map[string]int `json:"by_addr"`
		ByKind  map[string]int `json:"by_kind"`
		Seconds *float64       `json:"seconds"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Lines != 300 || r.Matched != 207 {
		t.Errorf("lines %d matched %d, want 300 207", r.Lines, r.Matched)
	}
	if r.ByAddr["203.0.113.101"] != 51 || r.ByAddr["2001:db8:203::bad:66"] != 30 || r.ByAddr["203.0.113.60"] != 1 {
		t.Errorf("by_addr = %v", r.ByAddr)
	}
	if r.ByKind["auth_failure"] != 102 || r.ByKind["call_rejected"] != 21 || r.Seconds == nil {
		t.Errorf("by_kind = %v, seconds %v", r.ByKind, r.Seconds)
	}
}

func TestTestLogJSONCountsOnlyFailuresPerAddress(t *testing.T) {
	out, err := runTestLogCLI(t, "", "--filter", "asterisk", "--format", "json", testLogCorpus20+"security")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		ByAddr map[string]int `json:"by_addr"`
		ByKind map[string]int `json:"by_kind"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	// The toll-fraud attacker only authenticated successfully (41 times):
	// by_kind shows it, by_addr does not count it.
	if _, ok := r.ByAddr["203.0.113.159"]; ok {
		t.Errorf("auth_success counted in by_addr: %v", r.ByAddr)
	}
	if r.ByKind["auth_success"] != 55 || r.ByKind["challenge_sent"] != 157 {
		t.Errorf("by_kind = %v", r.ByKind)
	}
}

func TestTestLogEventsAndStdin(t *testing.T) {
	in := `[Nov 25 04:01:42] NOTICE[12721] chan_sip.c: Registration from '"2002" <sip:2002@198.51.100.10>' failed for '203.0.113.101:5060' - Wrong password
noise
[Nov 25 04:02:42] NOTICE[12973] manager.c: 203.0.113.222 failed to authenticate as 'a"b\` + "\xff" + `'
[Nov 25 04:00:51] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'INVITE' from '<sip:x' failed for '6.6.6.6' (callid: @1.1.1.1>' failed for '203.0.113.5:5060' (callid: abc) - Failed to authenticate
`
	out, err := runTestLogCLI(t, in, "--format", "events", "-")
	if err != nil {
		t.Fatal(err)
	}
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %v: %s", err, sc.Text())
		}
		evs = append(evs, m)
	}
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3: %s", len(evs), out)
	}
	e := evs[0]
	if e["file"] != "-" || e["line"] != 1.0 || e["addr"] != "203.0.113.101" || e["port"] != 5060.0 ||
		e["kind"] != "auth_failure" || e["account"] != "2002" || e["detector"] != "asterisk" {
		t.Errorf("event 1 = %v", e)
	}
	if !strings.HasSuffix(e["time"].(string), "T04:01:42Z") && !strings.Contains(e["time"].(string), "T04:01:42") {
		t.Errorf("time = %v", e["time"])
	}
	if _, ok := evs[1]["port"]; ok {
		t.Errorf("port should be omitted when unknown: %v", evs[1])
	}
	if evs[1]["line"] != 3.0 || evs[1]["account"] != "a\"b\\\ufffd" {
		t.Errorf("event 2 = %v", evs[1])
	}
	if evs[2]["kind"] != "injection_suspect" || evs[2]["addr"] != nil {
		t.Errorf("event 3 = %v", evs[2])
	}
}

func TestTestLogAddrsAndText(t *testing.T) {
	out, err := runTestLogCLI(t, "", "--format", "addrs", testLogCorpus20+"messages")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "203.0.113.101 51\n") || !strings.Contains(out, "2001:db8:203::bad:66 30\n") {
		t.Errorf("addrs output:\n%s", out)
	}
	out, err = runTestLogCLI(t, "", "--missed", testLogCorpus20+"messages")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"lines:     300", "matched:   207", "auth_failure       102", "203.0.113.101", "lines/s", "missed "} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
}

func TestTestLogSSHDAndAuto(t *testing.T) {
	in := "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT from 194.117.26.69 port 50273 ssh2\n" +
		"[Nov 25 04:02:42] NOTICE[12973] manager.c: 203.0.113.222 failed to authenticate as 'x'\n"
	out, err := runTestLogCLI(t, in, "--detector", "auto", "--format", "addrs", "-")
	if err != nil {
		t.Fatal(err)
	}
	if out != "194.117.26.69 1\n203.0.113.222 1\n" {
		t.Errorf("auto: %q", out)
	}
	out, _ = runTestLogCLI(t, in, "--detector", "sshd", "--format", "addrs", "-")
	if out != "194.117.26.69 1\n" {
		t.Errorf("sshd: %q", out)
	}
}

func TestTestLogUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"test-log"},
		{"test-log", "/nonexistent/log"},
		{"test-log", "--format", "xml", "-"},
		{"test-log", "--detector", "kamailio", "-"},
		{"test-log", "--bogus", "-"},
		{"test-log", "/"},
	} {
		if code := run(args); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// TestTestLogParallelMatchesSequential: the chunked parallel counter gives
// the same numbers as the line-by-line path, across chunk boundaries, an
// over-long line and a last line without a newline.
func TestTestLogParallelMatchesSequential(t *testing.T) {
	msgs, err := os.ReadFile(testLogCorpus20 + "messages")
	if err != nil {
		t.Fatal(err)
	}
	sec, err := os.ReadFile(testLogCorpus20 + "security")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for b.Len() < 5<<20 {
		b.Write(msgs)
		b.Write(sec)
		if b.Len() > 2<<20 && b.Len() < 3<<20 {
			b.WriteString("[Nov 25 04:00:00] NOTICE[1] manager.c: 192.0.2.99 failed to authenticate as '" + strings.Repeat("x", 3<<20) + "'\n")
		}
	}
	b.WriteString("[Nov 25 04:02:42] NOTICE[12973] manager.c: 203.0.113.222 failed to authenticate as 'last'") // no newline
	path := t.TempDir() + "/big.log"
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	decode := func(out string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%v: %.200s", err, out)
		}
		delete(m, "seconds")
		return m
	}
	par, err := runTestLogCLI(t, "", "--format", "json", path)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := runTestLogCLI(t, "", "--format", "json", "--missed", path) // --missed forces the ordered path
	if err != nil {
		t.Fatal(err)
	}
	p, s := decode(par), decode(seq)
	if fmt.Sprint(p) != fmt.Sprint(s) {
		t.Errorf("parallel %v\nsequential %v", p, s)
	}
	if p["lines"].(float64) < 1000 {
		t.Errorf("lines = %v", p["lines"])
	}
}

// TestTestLogMissedEscapes: --missed prints attacker text; control bytes
// (terminal escapes) come out as \xNN.
func TestTestLogMissedEscapes(t *testing.T) {
	in := "[Nov 25 04:00:00] NOTICE[1] app_x.c: Wrong password \x1b[2J\x07\tx\\y\n"
	out, err := runTestLogCLI(t, in, "--missed", "-")
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("control bytes in output: %q", out)
	}
	if !strings.Contains(out, `Wrong password \x1b[2J\x07\tx\\y`) {
		t.Errorf("missed line not escaped as expected:\n%s", out)
	}
}
