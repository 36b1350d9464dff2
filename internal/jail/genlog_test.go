package jail_test

// TestGenlog reads a genlog.py file (security and NOTICE lines in one file,
// as a `messages => notice,warning,error,security` channel writes them)
// through the asterisk detector and a default jail, and checks the bans
// against genlog's truth: every address with >= maxretry attack lines is
// banned, and every other ban is explained by a kind weight (scan). It
// runs only when PBXGUARD_GENLOG names the log (the truth is LOG.truth.json):
//
//	/work/shared/tools/bench/genlog.py -n 3000000 --rate 50000 --attackers 20000 --seed 7 -o /tmp/g7.log
//	PBXGUARD_GENLOG=/tmp/g7.log go test -count=1 -run TestGenlog -v ./internal/jail/

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/jail"
)

func TestGenlog(t *testing.T) {
	path := os.Getenv("PBXGUARD_GENLOG")
	if path == "" {
		t.Skip("set PBXGUARD_GENLOG to a genlog.py log (LOG.truth.json next to it)")
	}
	var truth struct {
		Attackers map[string]int `json:"attackers"`
	}
	tb, err := os.ReadFile(path + ".truth.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(tb, &truth); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	det, err := detect.New("asterisk", detect.Options{Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	clk := &typoClock{}
	j, err := jail.New(jail.Config{Name: "asterisk"}, jail.NewAllowlist(nil), nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	maxRetry := j.Config().MaxRetry
	banned := map[netip.Addr]string{}
	var byKind [event.NumKinds]int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev event.Event
	var last time.Time
	lines := 0
	for sc.Scan() {
		lines++
		ev.Reset()
		if !det.Detect(sc.Bytes(), &ev) {
			continue
		}
		byKind[ev.Kind]++
		clk.t = ev.Time
		if d, ok := j.Observe(&ev); ok {
			banned[d.Addr] = d.Reason
		}
		if ev.Time.Sub(last) >= time.Second {
			for _, d := range j.Tick(ev.Time) {
				banned[d.Addr] = d.Reason
			}
			last = ev.Time
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, d := range j.Tick(last.Add(time.Minute)) {
		banned[d.Addr] = d.Reason
	}
	want, got := 0, 0
	var missed []string
	for a, n := range truth.Attackers {
		if n < maxRetry {
			continue
		}
		want++
		if _, ok := banned[netip.MustParseAddr(a)]; ok {
			got++
		} else {
			missed = append(missed, a)
		}
	}
	unexplained := 0
	for a, reason := range banned {
		if truth.Attackers[a.String()] >= maxRetry {
			continue
		}
		if !strings.Contains(reason, event.Scan.String()) {
			unexplained++
			if unexplained <= 10 {
				t.Errorf("%s banned with %d attack lines: %s", a, truth.Attackers[a.String()], reason)
			}
		}
	}
	st := j.Stats()
	t.Logf("%d lines, events by kind %v; stats %+v", lines, byKind, st)
	t.Logf("addresses with >= %d attack lines: %d, banned %d; bans in all %d, below maxretry without a scan: %d",
		maxRetry, want, got, len(banned), unexplained)
	sort.Strings(missed)
	for i, a := range missed {
		if i == 10 {
			break
		}
		t.Errorf("not banned: %s with %d attack lines", a, truth.Attackers[a])
	}
	if got != want || unexplained != 0 {
		t.Fatalf("%d of %d addresses with >= %d attack lines banned, %d bans unexplained", got, want, maxRetry, unexplained)
	}
}
