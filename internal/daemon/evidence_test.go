package daemon

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/jail"
	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// TestWhyFromCorpus replays the asterisk-20 recording (messages and the
// security log, merged in time order as Asterisk wrote them) into the real
// pipeline and checks that each ban's evidence names lines that are
// really at that file:line, and that a NOTICE/SecurityEvent pair shows
// both, the structured one counted and its NOTICE twin not.
func TestWhyFromCorpus(t *testing.T) {
	const corpus = "../../testdata/corpus/asterisk-20/log/"
	dir := t.TempDir()
	names := []string{"messages", "security"}
	src := map[string][]string{}
	paths := map[string]string{}
	for _, n := range names {
		src[n] = readLines(t, corpus+n)
		paths[n] = filepath.Join(dir, n)
		if err := os.WriteFile(paths[n], nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgText := fmt.Sprintf(`state_dir: %[1]s/state
firewall: {backend: dry-run}
control: {socket: %[1]s/ctl.sock}
metrics: {listen: ""}
jails:
  asterisk:
    files: [%[2]s, %[3]s]
    maxretry: 5
    findtime: 8760h
    bantime: 10m
`, dir, paths["messages"], paths["security"])
	cfgPath := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(cfgPath, []byte(cfgText), 0o600)
	cfg, err := config.Load(cfgPath, config.Options{HostPrefixes: func() []netip.Prefix { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	b, err := Build(cfg, BuildOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), Backend: firewall.NewDryRun(firewall.Options{Prefixes: true})})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	waitFor(t, "both sources", func() bool { return strings.Count(logs.String(), "source: following") >= 2 })

	// Merge by the "[Nov 25 04:00:27]" stamp; within a second the security
	// log first (res_security_log writes the event before the NOTICE).
	stamp := func(l string) string {
		if len(l) > 17 && l[0] == '[' {
			return l[1:16]
		}
		return ""
	}
	idx := map[string]int{}
	var total uint64
	for idx["messages"] < len(src["messages"]) || idx["security"] < len(src["security"]) {
		pick := "security"
		mi, si := idx["messages"], idx["security"]
		if si >= len(src["security"]) || (mi < len(src["messages"]) && stamp(src["messages"][mi]) < stamp(src["security"][si])) {
			pick = "messages"
		}
		// the run of lines of that file up to the other's next stamp
		var chunk strings.Builder
		other := "messages"
		if pick == "messages" {
			other = "security"
		}
		for i := idx[pick]; i < len(src[pick]); i++ {
			if oi := idx[other]; oi < len(src[other]) && chunk.Len() > 0 {
				s, os := stamp(src[pick][i]), stamp(src[other][oi])
				if s > os || (pick == "messages" && s == os) {
					break
				}
			}
			chunk.WriteString(src[pick][i] + "\n")
			idx[pick]++
			total++
		}
		f, err := os.OpenFile(paths[pick], os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(chunk.String())
		f.Close()
		want := total
		waitFor(t, "the lines to be read", func() bool { return b.Status().Jails[0].Lines >= want })
	}
	waitFor(t, "bans", func() bool { bans, _ := b.Bans(ctx); return len(bans) >= 2 })
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	bans, err := b.Store.History(context.Background(), store.HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	sawTwin := false
	for _, h := range bans {
		w, err := LookupWhy(context.Background(), b.Store, h.Addr, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(w.Evidence) != 1 {
			t.Fatalf("%s: %d evidence records, want 1", h.Addr, len(w.Evidence))
		}
		e := w.Evidence[0]
		if e.Decision.MaxRetry != 5 || e.Decision.FindTime != "8760h0m0s" || len(e.Decision.Allowlist) != 3 {
			t.Fatalf("%s: decision %+v", h.Addr, e.Decision)
		}
		counted := 0
		for _, x := range e.Events {
			name := filepath.Base(x.Source)
			lines, ok := src[name]
			if !ok || x.Line < 1 || int(x.Line) > len(lines) {
				t.Fatalf("%s: event %+v: source %q line %d is not a corpus file:line", h.Addr, x, x.Source, x.Line)
			}
			if got := Escape([]byte(lines[x.Line-1])); got != x.Raw {
				t.Fatalf("%s: %s:%d is\n%q\nevidence says\n%q", h.Addr, name, x.Line, got, x.Raw)
			}
			if !strings.Contains(x.Raw, h.Addr.String()) {
				t.Fatalf("%s: evidence line does not name the address: %q", h.Addr, x.Raw)
			}
			if x.Counted {
				counted++
			}
			if !x.Structured && !x.Counted && strings.Contains(x.Note, "twin") {
				for _, y := range e.Events {
					if y.Structured && y.Counted && y.Time.Equal(x.Time) && name == "messages" && filepath.Base(y.Source) == "security" {
						sawTwin = true
					}
				}
			}
		}
		// The evidence counts what the reason says ("auth_failure×4
		// bad_request×1"), kind by kind, when nothing was dropped
		// (challenge_sent counts only if unanswered, scan weighs maxretry).
		if e.Decision.Dropped == 0 {
			for _, tok := range strings.Fields(e.Reason[strings.Index(e.Reason, ":")+1:]) {
				kind, n, ok := strings.Cut(tok, "×")
				if !ok || kind == "challenge_sent" || kind == "scan" {
					continue
				}
				got := 0
				for _, x := range e.Events {
					if x.Counted && x.Kind == kind {
						got++
					}
				}
				if fmt.Sprint(got) != n {
					t.Fatalf("%s: reason %q, but %d counted %s events in the evidence: %+v", h.Addr, e.Reason, got, kind, e.Events)
				}
			}
		}
		if counted == 0 {
			t.Fatalf("%s: no counted event in the evidence", h.Addr)
		}
		var out bytes.Buffer
		WriteWhy(&out, w)
		if !(strings.Contains(out.String(), "/security:") || strings.Contains(out.String(), "/messages:")) || !strings.Contains(out.String(), "rule:      maxretry 5") {
			t.Fatalf("why output lacks file:line or the rule:\n%s", out.String())
		}
		t.Logf("pbxguard why %s:\n%s", h.Addr, out.String())
	}
	if !sawTwin {
		t.Fatal("no ban shows a NOTICE twin (not counted) beside its counted SecurityEvent")
	}
}

// The evidence ring allocates nothing per event once made, for addresses
// old and new, with the ring wrapping.
func TestEvidenceZeroAllocs(t *testing.T) {
	j, err := jail.New(jail.Config{Name: "j", MaxRetry: 255, FindTime: time.Hour}, nil, nil, jail.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Store: mustStore(t), Backend: newFakeBackend(),
		Jails: []JailSpec{{Name: "j", Judge: jailJudge{j}}}})
	if err != nil {
		t.Fatal(err)
	}
	js := d.jails[0]
	line := []byte(strings.Repeat("x", 1500))
	pos := store.Position{Position: source.Position{Path: "/var/log/asterisk/messages", Offset: 100}}
	var addrs [4096]netip.Addr
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		if i >= 256 {
			addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}
	}
	ev := event.Event{Kind: event.AuthFailure, Service: event.ServicePJSIP, Account: "1001", Detector: "asterisk", Time: time.Now()}
	n := 0
	step := func() {
		ev.Addr = addrs[n%len(addrs)]
		n++
		d.observe(js, &ev, "messages", line, &pos)
	}
	for range 3 * ringRecords {
		step()
	}
	if a := testing.AllocsPerRun(20000, step); a != 0 {
		t.Fatalf("%v allocations per event, want 0", a)
	}
	recs, raw, _, _ := js.evidence.take(addrs[(n-1)%len(addrs)], 20)
	if len(recs) == 0 || len(raw[len(raw)-1]) != store.MaxEvidenceLine {
		t.Fatalf("took %d records, last raw %d bytes (want cut at %d)", len(recs), len(raw[len(raw)-1]), store.MaxEvidenceLine)
	}
}

func mustStore(t *testing.T) *store.Store {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain":              "plain",
		"a\nb\r\x00\x1b[31m": `a\x0ab\x0d\x00\x1b[31m`,
		`back\slash`:         `back\\slash`,
		"caf\xc3\xa9 \xff":   "café \\xff",
		"\u2028":             `\xe2\x80\xa8`,
	} {
		if got := Escape([]byte(in)); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// History, evidence and incidents older than the retention are pruned;
// active bans and newer rows stay; a second call within the hour does nothing.
func TestRetentionPrunes(t *testing.T) {
	ctx := context.Background()
	st := mustStore(t)
	now := time.Now()
	a := netip.MustParseAddr("203.0.113.66")
	p := netip.PrefixFrom(a, 32)
	for _, at := range []time.Time{now.Add(-40 * 24 * time.Hour), now.Add(-time.Hour)} {
		st.AddBans(ctx, []store.Ban{{Prefix: p, Addr: a, Jail: "j", Reason: "r", Since: at, Until: now.Add(time.Hour), Count: 1}})
		st.AddEvidence(ctx, []store.Evidence{{Prefix: p, Addr: a, Jail: "j", At: at, Until: now.Add(time.Hour)}})
		st.AddIncident(ctx, store.Incident{Time: at, Kind: "fraud/x"})
	}
	d, err := New(Options{Store: st, Backend: newFakeBackend(), Retention: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	d.maybePrune(ctx)
	d.waitEvidence()
	h, _ := st.History(ctx, store.HistoryFilter{})
	ev, _ := st.EvidenceFor(ctx, a, 0)
	in, _ := st.Incidents(ctx, time.Time{}, 0)
	act, _ := st.ActiveBans(ctx, now)
	if len(h) != 1 || len(ev) != 1 || len(in) != 1 || len(act) != 1 {
		t.Fatalf("after prune: history %d, evidence %d, incidents %d, active %d; want 1 each", len(h), len(ev), len(in), len(act))
	}
	st.AddIncident(ctx, store.Incident{Time: now.Add(-50 * 24 * time.Hour), Kind: "fraud/x"})
	d.maybePrune(ctx) // within the hour: nothing
	d.waitEvidence()
	if in, _ := st.Incidents(ctx, time.Time{}, 0); len(in) != 2 {
		t.Fatalf("pruned again within the hour: %d incidents", len(in))
	}
}

// BenchmarkObserve is the per-event cost of judging a failure under the
// jail lock: plain (the judge alone) and with evidence kept (d.observe),
// over 4096 rotating addresses with 300-byte lines.
func BenchmarkObserve(b *testing.B) {
	for _, keep := range []bool{false, true} {
		name := "plain"
		if keep {
			name = "evidence"
		}
		b.Run(name, func(b *testing.B) {
			j, err := jail.New(jail.Config{Name: "j", MaxRetry: 255, FindTime: time.Hour}, nil, nil, jail.SystemClock{})
			if err != nil {
				b.Fatal(err)
			}
			st, err := store.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			d, err := New(Options{Store: st, Backend: newFakeBackend(), Jails: []JailSpec{{Name: "j", Judge: jailJudge{j}}}})
			if err != nil {
				b.Fatal(err)
			}
			js := d.jails[0]
			line := []byte(strings.Repeat("x", 300))
			pos := store.Position{Position: source.Position{Path: "/var/log/asterisk/messages", Offset: 100}}
			ev := event.Event{Kind: event.AuthFailure, Service: event.ServicePJSIP, Account: "1001", Detector: "asterisk", Time: time.Now()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ev.Addr = netip.AddrFrom4([4]byte{203, 0, byte(i >> 8 & 15), byte(i)})
				if keep {
					d.observe(js, &ev, "messages", line, &pos)
				} else {
					js.mu.Lock()
					js.spec.Judge.Observe(&ev)
					js.mu.Unlock()
				}
			}
		})
	}
}

// An AMI security event (no log line) is kept as "AMI event" with a
// summary whose attacker text is escaped.
func TestEvidenceAMIEvent(t *testing.T) {
	st := mustStore(t)
	j, err := jail.New(jail.Config{Name: "ami", MaxRetry: 3}, nil, nil, jail.SystemClock{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Options{Store: st, Backend: newFakeBackend(), Jails: []JailSpec{{Name: "ami", Judge: jailJudge{j}}}})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("2001:db8::66")
	var dec Decision
	var ok bool
	for i := 0; i < 3; i++ {
		ev := event.Event{Time: time.Now(), Addr: a, Service: event.ServiceAMI, Kind: event.AuthFailure, Account: "admin\r\nEvent: Fake",
			Detail: "InvalidPassword", Detector: "ami", Structured: true}
		dec, ok = d.observe(d.jails[0], &ev, "AMI", nil, nil)
	}
	if !ok {
		t.Fatal("no decision after 3 failures")
	}
	d.keepEvidence([]store.Ban{{Prefix: dec.Prefix, Addr: a, Jail: "ami", Reason: dec.Reason, Since: dec.At, Until: dec.Until, Count: 1}})
	d.waitEvidence()
	evs, err := st.EvidenceFor(context.Background(), a, 0)
	if err != nil || len(evs) != 1 || len(evs[0].Events) != 3 {
		t.Fatalf("evidence %+v, %v", evs, err)
	}
	x := evs[0].Events[2]
	if x.Source != "AMI event" || !x.Counted || !x.Structured || strings.ContainsAny(x.Raw+x.Account, "\r\n") ||
		!strings.Contains(x.Raw, "AMI security event auth_failure") || x.Account != `admin\x0d\x0aEvent: Fake` {
		t.Fatalf("AMI evidence event %+v", x)
	}
}
