package detect

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// corpusDir is the project's own recording of a real Asterisk under attack
// (testdata/ at the top of the module).
const corpusDir = "../../testdata/corpus"

// conformanceDir is fail2ban's published test logs. They are fail2ban's,
// not ours: read in place from ../shared, never copied.
const conformanceDir = "../../../shared/conformance/fail2ban-1.0.2"

// needConformance skips (fails under PBXGUARD_E2E=1) when fail2ban's test
// logs are not beside the checkout.
func needConformance(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(conformanceDir); err != nil {
		if os.Getenv("PBXGUARD_E2E") == "1" {
			tb.Fatalf("fail2ban's conformance logs not found at %s (%v); PBXGUARD_E2E=1 requires them", conformanceDir, err)
		}
		tb.Skipf("fail2ban's conformance logs not found at %s: this test compares with fail2ban's own expectations and needs ../shared/conformance beside the checkout", conformanceDir)
	}
}

// conformanceLines returns the lines of fail2ban's test logs when they are
// present, and nothing otherwise (for seeds and allocation checks that
// only widen their input with them).
func conformanceLines(tb testing.TB, names ...string) [][]byte {
	tb.Helper()
	if _, err := os.Stat(conformanceDir); err != nil {
		return nil
	}
	var paths []string
	for _, n := range names {
		paths = append(paths, conformanceDir+"/"+n)
	}
	return readLines(tb, paths...)
}

// f2bCase is one "# failJSON:" expectation of fail2ban's sample logs.
type f2bCase struct {
	lineNo     int
	line       string
	match      bool
	host       string
	time       string
	options    map[string]any // last "# filterOptions:" in effect
	desc       string
	attempt    int
	constraint string
	before     []string // unannotated log lines since the previous case
}

// readF2B reads a fail2ban test log: "# failJSON: {...}" describes the next
// log line; "# filterOptions: [...]" switches modes for what follows.
func readF2B(t *testing.T, path string) []f2bCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	var out []f2bCase
	var pending *f2bCase
	var opts map[string]any
	var before []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "# failJSON:"):
			var j struct {
				Time       string `json:"time"`
				Match      bool   `json:"match"`
				Host       any    `json:"host"`
				Desc       string `json:"desc"`
				Attempts   int    `json:"attempts"`
				Constraint string `json:"constraint"`
			}
			if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(l, "# failJSON:"))), &j); err != nil {
				t.Fatalf("%s:%d: %v", path, n, err)
			}
			host := ""
			switch h := j.Host.(type) {
			case string:
				host = h
			case []any:
				if len(h) > 0 {
					host, _ = h[0].(string)
				}
			}
			pending = &f2bCase{match: j.Match, host: host, time: j.Time, options: opts, desc: j.Desc, attempt: j.Attempts, constraint: j.Constraint, before: before}
			before = nil
		case strings.HasPrefix(l, "# filterOptions:"):
			var o []map[string]any
			raw := strings.TrimSpace(strings.TrimPrefix(l, "# filterOptions:"))
			if err := json.Unmarshal([]byte(raw), &o); err != nil {
				// a single object is allowed too
				var one map[string]any
				if err2 := json.Unmarshal([]byte(raw), &one); err2 != nil {
					t.Fatalf("%s:%d: filterOptions: %v", path, n, err)
				}
				o = []map[string]any{one}
			}
			opts = nil
			if len(o) > 0 {
				opts = o[0]
			}
		case strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "":
		default:
			if pending != nil {
				pending.lineNo, pending.line = n, l
				out = append(out, *pending)
				pending = nil
			} else {
				before = append(before, l)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// fail2ban's test suite runs with its clock at 2005-08-14 12:00 local time
// (MyTime.setTime(1124013600), TZ=Europe/Zurich); its failJSON "time" is the
// line's wall-clock time in that zone. Year-less stamps are resolved against
// that "now", and we compare wall-clock text in a fixed zone.
var f2bNow = time.Date(2005, 8, 14, 12, 0, 0, 0, time.UTC)

func f2bOptions() Options {
	return Options{Location: time.UTC, Now: func() time.Time { return f2bNow }}
}

func TestConformanceFail2banAsterisk(t *testing.T) {
	needConformance(t)
	cases := readF2B(t, conformanceDir+"/asterisk")
	if len(cases) < 40 {
		t.Fatalf("only %d cases read", len(cases))
	}
	pass := 0
	for _, c := range cases {
		// fail2ban's sample mixes every header form; a detector locks to
		// the form of its source, so each sample line is its own source.
		d, err := New("asterisk", f2bOptions())
		if err != nil {
			t.Fatal(err)
		}
		line := c.line
		if p, ok := c.options["test.prefix-line"].(string); ok {
			line = p + line
		}
		var ev event.Event
		got := d.Detect([]byte(line), &ev) && ev.Kind.IsFailure() && ev.Addr.IsValid()
		if got != c.match {
			t.Errorf("line %d: match=%v, want %v (kind %v): %s", c.lineNo, got, c.match, ev.Kind, line)
			continue
		}
		if c.match {
			want, err := netip.ParseAddr(c.host)
			if err != nil {
				t.Fatalf("line %d: bad host %q", c.lineNo, c.host)
			}
			if ev.Addr != want {
				t.Errorf("line %d: addr %v, want %v: %s", c.lineNo, ev.Addr, want, line)
				continue
			}
			if c.time != "" {
				want := c.time[:19]
				// fail2ban's clock stands at 2005-08-14; a line stamped
				// 2012 is in its future, and pbxguard replaces a time
				// beyond now+24h by the receive time (parse.go futureSlack).
				if lt, err := time.Parse("2006-01-02T15:04:05", want); err == nil && lt.After(f2bNow.Add(futureSlack)) {
					want = f2bNow.Format("2006-01-02T15:04:05")
				}
				if g := ev.Time.In(time.UTC).Format("2006-01-02T15:04:05"); g != want {
					t.Errorf("line %d: time %s, want %s: %s", c.lineNo, g, want, line)
					continue
				}
			}
		}
		pass++
	}
	t.Logf("fail2ban-1.0.2/asterisk: %d/%d failJSON lines conform", pass, len(cases))
}

// TestConformanceFail2banSSHD checks every normal-mode failJSON line of
// fail2ban's sshd sample log. Skipped, by design (see the report):
//   - sections in ddos/extra mode and lines constrained to aggressive mode;
//   - lines whose expectation depends on fail2ban's multi-line "attempts"
//     bookkeeping (a success that cancels earlier PAM failures, failures
//     released later by "Connection closed");
//   - hosts that are names, not addresses (pbxguard never resolves DNS;
//     "192.030.0.6" with a leading zero is refused as ambiguous): the line
//     must then yield no address.
func TestConformanceFail2banSSHD(t *testing.T) {
	needConformance(t)
	cases := readF2B(t, conformanceDir+"/sshd")
	zurich, err := time.LoadLocation("Europe/Zurich")
	if err != nil {
		t.Fatal(err)
	}
	d, err := New("sshd", Options{Location: zurich, Now: func() time.Time { return time.Date(2005, 8, 14, 12, 0, 0, 0, zurich) }})
	if err != nil {
		t.Fatal(err)
	}
	var ran, pass, skippedMode, skippedAttempts, names, deviations int
	for _, c := range cases {
		var ev event.Event
		for _, l := range c.before {
			d.Detect([]byte(l), &ev)
		}
		mode, _ := c.options["mode"].(string)
		if mode != "" && mode != "normal" || strings.Contains(c.constraint, "== 'aggressive'") {
			d.Detect([]byte(c.line), &ev)
			skippedMode++
			continue
		}
		ok := d.Detect([]byte(c.line), &ev)
		got := ok && ev.Kind.IsFailure() && ev.Addr.IsValid()
		if c.attempt > 0 {
			skippedAttempts++
			t.Logf("attempts semantics (not asserted) line %d: fail2ban match=%v attempts=%d; pbxguard match=%v %v %v", c.lineNo, c.match, c.attempt, got, ev.Kind, ev.Addr)
			continue
		}
		ran++
		if strings.HasSuffix(c.line, "ssh2: from 10.10.1.2 port 55555 ssh2") {
			// fail2ban expects 127.0.0.1, but OpenSSH logs no auth info
			// after a password failure: this line is what a user named
			// "test from 127.0.0.1 port 58946 ssh2:" connecting from
			// 10.10.1.2 writes, so the line is read from its end.
			if ev.Kind != event.UnknownAccount || ev.Addr != netip.MustParseAddr("10.10.1.2") {
				t.Errorf("line %d: %v %v, want unknown_account 10.10.1.2 (read from the end)", c.lineNo, ev.Kind, ev.Addr)
			} else {
				pass++
				deviations++
			}
			continue
		}
		want, perr := netip.ParseAddr(c.host)
		if c.match && c.host != "" && perr != nil {
			names++
			if ev.Addr.IsValid() {
				t.Errorf("line %d: host %q is a name, got address %v", c.lineNo, c.host, ev.Addr)
			} else {
				pass++
			}
			continue
		}
		if got != c.match {
			t.Errorf("line %d: match=%v, want %v (kind %v addr %v): %s", c.lineNo, got, c.match, ev.Kind, ev.Addr, c.line)
			continue
		}
		if c.match {
			if ev.Addr != want.Unmap() {
				t.Errorf("line %d: addr %v, want %v", c.lineNo, ev.Addr, want)
				continue
			}
			if c.time != "" {
				want := c.time[:19]
				f2bClock := time.Date(2005, 8, 14, 12, 0, 0, 0, zurich)
				// a stamp in fail2ban's future gets the receive time (see above)
				if lt, err := time.ParseInLocation("2006-01-02T15:04:05", want, zurich); err == nil && lt.After(f2bClock.Add(futureSlack)) {
					want = f2bClock.Format("2006-01-02T15:04:05")
				}
				if g := ev.Time.In(zurich).Format("2006-01-02T15:04:05"); g != want {
					t.Errorf("line %d: time %s, want %s", c.lineNo, g, want)
					continue
				}
			}
		}
		pass++
	}
	t.Logf("fail2ban-1.0.2/sshd normal mode: %d/%d lines as expected (%d with a host name → no address, %d deliberate deviations); not asserted: %d other-mode, %d attempts-semantics", pass, ran, names, deviations, skippedMode, skippedAttempts)
}
