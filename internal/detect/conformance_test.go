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

const sharedDir = "../../../shared"

// f2bCase is one "# failJSON:" expectation of fail2ban's sample logs.
type f2bCase struct {
	lineNo  int
	line    string
	match   bool
	host    string
	time    string
	options map[string]any // last "# filterOptions:" in effect
	desc    string
	attempt int
}

// readF2B reads a fail2ban test log: "# failJSON: {...}" describes the next
// log line; "# filterOptions: [...]" switches modes for what follows.
func readF2B(t *testing.T, path string) []f2bCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v (the shared conformance data must be at %s)", path, err, sharedDir)
	}
	defer f.Close()
	var out []f2bCase
	var pending *f2bCase
	var opts map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "# failJSON:"):
			var j struct {
				Time     string `json:"time"`
				Match    bool   `json:"match"`
				Host     any    `json:"host"`
				Desc     string `json:"desc"`
				Attempts int    `json:"attempts"`
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
			pending = &f2bCase{match: j.Match, host: host, time: j.Time, options: opts, desc: j.Desc, attempt: j.Attempts}
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
	cases := readF2B(t, sharedDir+"/conformance/fail2ban-1.0.2/asterisk")
	if len(cases) < 40 {
		t.Fatalf("only %d cases read", len(cases))
	}
	d, err := New("asterisk", f2bOptions())
	if err != nil {
		t.Fatal(err)
	}
	pass := 0
	for _, c := range cases {
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
				if g := ev.Time.In(time.UTC).Format("2006-01-02T15:04:05"); g != c.time[:19] {
					t.Errorf("line %d: time %s, want %s: %s", c.lineNo, g, c.time, line)
					continue
				}
			}
		}
		pass++
	}
	t.Logf("fail2ban-1.0.2/asterisk: %d/%d failJSON lines conform", pass, len(cases))
}
