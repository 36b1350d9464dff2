package jail

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/source"
)

const corpusDir = "../../testdata/corpus/asterisk-20"

type corpusTruth struct {
	Attackers []struct {
		IP        string   `json:"ip"`
		Scenarios []string `json:"scenarios"`
	} `json:"attackers"`
	Legit []struct {
		IP string `json:"ip"`
	} `json:"legit"`
}

// TestCorpusReplay runs the asterisk-20 messages and security logs through
// the reader source, the asterisk detector and a jail with the shipped
// defaults (maxretry 5, findtime 10m, challenge timeout 10s, IPv6 /64), in
// event-time order with a Tick every second of log time. Every attacker
// whose attack shows in these logs must be banned; no legitimate source
// may be. 203.0.113.159 (toll fraud) authenticates correctly: the logs hold
// no failure of it, the fraud rules (not the jail) catch it.
func TestCorpusReplay(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(corpusDir, "ground-truth.json"))
	if err != nil {
		t.Fatalf("corpus: %v", err)
	}
	var truth corpusTruth
	if err := json.Unmarshal(raw, &truth); err != nil {
		t.Fatal(err)
	}
	var evs []event.Event
	for _, name := range []string{"messages", "security"} {
		det, err := detect.New("asterisk", detect.Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) }})
		if err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(filepath.Join(corpusDir, "log", name))
		if err != nil {
			t.Fatal(err)
		}
		var ev event.Event
		err = source.NewReader(name, fh).Run(context.Background(), func(l source.Line) error {
			ev.Reset()
			if det.Detect(l.Data, &ev) && ev.Addr.IsValid() {
				evs = append(evs, ev)
			}
			return nil
		})
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.SliceStable(evs, func(i, k int) bool { return evs[i].Time.Before(evs[k].Time) })

	clk := &fakeClock{}
	allow := NewAllowlist([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")})
	j, err := New(Config{Name: "asterisk", ChallengeTimeout: 10 * time.Second, IPv6Prefix: 64}, allow, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	banned := map[netip.Addr]Decision{}
	record := func(d Decision) {
		if _, dup := banned[d.Addr]; dup {
			t.Errorf("%v decided twice", d.Addr)
		}
		banned[d.Addr] = d
	}
	var lastTick time.Time
	for i := range evs {
		ev := &evs[i]
		if ev.Time.Sub(lastTick) >= time.Second {
			clk.t = ev.Time
			for _, d := range j.Tick(ev.Time) {
				record(d)
			}
			lastTick = ev.Time
		}
		clk.t = ev.Time
		if d, ok := j.Observe(ev); ok {
			record(d)
		}
	}
	end := evs[len(evs)-1].Time.Add(time.Minute)
	clk.t = end
	for _, d := range j.Tick(end) {
		record(d)
	}

	var lines []string
	for addr, d := range banned {
		lines = append(lines, addr.String()+": "+d.Prefix.String()+" "+d.Reason)
	}
	slices.Sort(lines)
	t.Logf("%d events, %d decisions:\n%s", len(evs), len(banned), strings.Join(lines, "\n"))

	for _, a := range truth.Attackers {
		addr := netip.MustParseAddr(a.IP)
		_, ok := banned[addr]
		if a.IP == "203.0.113.159" {
			if ok {
				t.Logf("toll-fraud source %s banned by the jail too", a.IP)
			}
			continue
		}
		if !ok {
			t.Errorf("attacker %s (%v) not banned", a.IP, a.Scenarios)
		}
	}
	for _, l := range truth.Legit {
		if d, ok := banned[netip.MustParseAddr(l.IP)]; ok {
			t.Errorf("legitimate source %s banned: %s", l.IP, d.Reason)
		}
	}
}
