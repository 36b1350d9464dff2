package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

// syncBuf is a log buffer safe for the daemon's goroutines.

// bigJudge bans at the 3rd failure with a 20 KB reason: its rows need
// new database pages, which a capped store refuses as a full disk would.
type bigJudge struct{ countJudge }

func (j *bigJudge) Observe(ev *event.Event) (Decision, bool) {
	d, ok := j.countJudge.Observe(ev)
	if ok {
		d.Reason = strings.Repeat("r", 20000)
	}
	return d, ok
}

// run starts d; stop cancels it and returns how long Run took to return
// (failing the test when it does not within limit).
func run(t *testing.T, d *Daemon) (stop func(limit time.Duration) time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "daemon running", d.running.Load)
	var once sync.Once
	var took time.Duration
	stop = func(limit time.Duration) time.Duration {
		once.Do(func() {
			t0 := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(limit):
				t.Fatalf("Run did not return %v after cancel", limit)
			}
			took = time.Since(t0)
		})
		return took
	}
	t.Cleanup(func() { stop(10 * time.Second) })
	return stop
}

func gaugeValue(t *testing.T, m *Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mm := range mf.GetMetric() {
			for _, lp := range mm.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if mm.GetGauge() != nil {
				return mm.GetGauge().GetValue()
			}
			return mm.GetCounter().GetValue()
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

// TestStoreFullRetriedPositionsHeld: the store refuses writes (a full
// state directory). The ban reaches the kernel, the store write is
// retried (not dropped), the saved position never passes the line that
// made the ban, status and /metrics say so; once there is room, the ban is
// stored and the position moves on.
func TestStoreFullRetriedPositionsHeld(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	fw := newFakeBackend()
	src := &chanSource{lines: make(chan string)}
	var logs syncBuf
	d, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Store: st, Backend: fw,
		Jails: []JailSpec{{Name: "asterisk", Judge: &bigJudge{countJudge{max: 3, counts: map[netip.Addr]int{}}},
			Sources: []SourceSpec{{Key: "asterisk:/fake", Name: "/fake", Source: src, Detector: wordDetector{}}}}},
		SaveEvery: 20 * time.Millisecond, TickEvery: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, d)
	src.lines <- "noise"
	src.lines <- "noise"
	waitFor(t, "position 2 saved", func() bool { p, _ := st.Positions(ctx); return p["asterisk:/fake"].Offset == 2 })
	pages, _ := st.PageCount(ctx)
	if _, err := st.LimitPages(ctx, pages); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"FAIL 203.0.113.66", "FAIL 203.0.113.66", "FAIL 203.0.113.66", "noise", "noise"} {
		src.lines <- l // lines 3..7; the ban is decided at line 5
	}
	waitFor(t, "ban in kernel", func() bool { _, ok := fw.has("203.0.113.66/32"); return ok })
	waitFor(t, "two failed store writes", func() bool { return d.storeH.errors.Load() >= 2 })
	p, _ := st.Positions(ctx)
	if off := p["asterisk:/fake"].Offset; off > 4 {
		t.Fatalf("saved position %d is past line 5, whose ban is not stored", off)
	}
	s := d.Status().Store
	if s.OK || s.PendingBans != 1 || !strings.Contains(s.LastError, "full") {
		t.Fatalf("store status while full = %+v", s)
	}
	if v := gaugeValue(t, d.metrics, "pbxguard_store_ok", nil); v != 0 {
		t.Fatalf("pbxguard_store_ok = %v while full", v)
	}
	if v := gaugeValue(t, d.metrics, "pbxguard_store_errors_total", nil); v < 2 {
		t.Fatalf("pbxguard_store_errors_total = %v", v)
	}
	if bans, _ := st.ActiveBans(ctx, time.Now()); len(bans) != 0 {
		t.Fatalf("stored while full: %+v", bans)
	}

	// Room again: the retry stores the ban, the position moves on.
	if _, err := st.LimitPages(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ban stored by the retry", func() bool { b, _ := st.ActiveBans(ctx, time.Now()); return len(b) == 1 })
	waitFor(t, "position 7 saved", func() bool { p, _ := st.Positions(ctx); return p["asterisk:/fake"].Offset == 7 })
	if s := d.Status().Store; !s.OK || s.PendingBans != 0 || s.Errors < 2 {
		t.Fatalf("store status after recovery = %+v", s)
	}
	if v := gaugeValue(t, d.metrics, "pbxguard_store_ok", nil); v != 1 {
		t.Fatalf("pbxguard_store_ok = %v after recovery", v)
	}
	stop(10 * time.Second)
	if !strings.Contains(logs.String(), "retried") {
		t.Fatalf("the failure is not logged as retried:\n%s", logs.String())
	}
}

// TestStoreFullAtShutdown: bans still unsaved at shutdown leave the saved
// position before their lines, so the next start reads them again.
func TestStoreFullAtShutdown(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	src := &chanSource{lines: make(chan string)}
	d, err := New(Options{Store: st, Backend: newFakeBackend(),
		Jails: []JailSpec{{Name: "asterisk", Judge: &bigJudge{countJudge{max: 3, counts: map[netip.Addr]int{}}},
			Sources: []SourceSpec{{Key: "asterisk:/fake", Name: "/fake", Source: src, Detector: wordDetector{}}}}},
		SaveEvery: 20 * time.Millisecond, TickEvery: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, d)
	src.lines <- "noise"
	waitFor(t, "position 1 saved", func() bool { p, _ := st.Positions(ctx); return p["asterisk:/fake"].Offset == 1 })
	pages, _ := st.PageCount(ctx)
	st.LimitPages(ctx, pages)
	for _, l := range []string{"FAIL 192.0.2.7", "FAIL 192.0.2.7", "FAIL 192.0.2.7", "noise"} {
		src.lines <- l
	}
	waitFor(t, "a failed store write", func() bool { return d.storeH.errors.Load() >= 1 })
	took := stop(10 * time.Second)
	t.Logf("shutdown with an unsaved ban took %v", took)
	p, _ := st.Positions(ctx)
	if off := p["asterisk:/fake"].Offset; off != 1 {
		t.Fatalf("saved position %d, want 1 (before the lines of the unsaved ban)", off)
	}
}

// stuckSource ignores its context: Run never returns.
type stuckSource struct{ block chan struct{} }

func (s stuckSource) Run(context.Context, func(Line) error) error { <-s.block; return nil }

// TestShutdownBounded: a FIFO at one followed path (and a source that
// ignores its context, and an idle control client) neither stop the other
// source from banning nor hold the shutdown; status and /metrics show the
// FIFO source failing.
func TestShutdownBounded(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	fifo := filepath.Join(dir, "security.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fw := newFakeBackend()
	src := &chanSource{lines: make(chan string)}
	stuck := stuckSource{block: make(chan struct{})}
	defer close(stuck.block)
	var logs syncBuf
	file := sourceAdapter{source.NewFile(fifo, source.Position{}, source.FileOptions{StartAtEnd: true, Poll: 20 * time.Millisecond})}
	sock := filepath.Join(dir, "ctl.sock")
	d, err := New(Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Store: st, Backend: fw, ControlSocket: sock,
		Jails: []JailSpec{{Name: "asterisk", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}}, Sources: []SourceSpec{
			{Key: "asterisk:" + fifo, Name: fifo, Source: file, Detector: wordDetector{}},
			{Key: "asterisk:/fake", Name: "/fake", Source: src, Detector: wordDetector{}},
			{Key: "asterisk:/stuck", Name: "/stuck", Source: stuck, Detector: wordDetector{}},
		}}},
		SaveEvery: 20 * time.Millisecond, TickEvery: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, d)
	for range 3 {
		src.lines <- "FAIL 203.0.113.9"
	}
	waitFor(t, "the other source bans", func() bool { _, ok := fw.has("203.0.113.9/32"); return ok })
	var fifoState SourceStatus
	waitFor(t, "the FIFO source failing in status", func() bool {
		fifoState = d.Status().Jails[0].SourceStates[0]
		return fifoState.State == "failing"
	})
	if !strings.Contains(fifoState.Error, "FIFO") || fifoState.Since.IsZero() {
		t.Fatalf("FIFO source status = %+v", fifoState)
	}
	if s := d.Status().Jails[0].SourceStates[1]; s.State != "ok" {
		t.Fatalf("the other source = %+v", s)
	}
	if v := gaugeValue(t, d.metrics, "pbxguard_source_up", map[string]string{"source": fifo}); v != 0 {
		t.Fatalf("pbxguard_source_up{FIFO} = %v", v)
	}
	if v := gaugeValue(t, d.metrics, "pbxguard_source_up", map[string]string{"source": "/fake"}); v != 1 {
		t.Fatalf("pbxguard_source_up{/fake} = %v", v)
	}
	idle, err := net.Dial("unix", sock) // says nothing, keeps the connection
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond)
	took := stop(10 * time.Second)
	t.Logf("shutdown with a FIFO, a stuck source and an idle client took %v", took)
	if took > 6*time.Second {
		t.Fatalf("shutdown took %v (budget %v)", took, shutdownBudget)
	}
	if !strings.Contains(logs.String(), "source asterisk:/stuck") {
		t.Fatalf("the stuck source is not named:\n%s", logs.String())
	}
}

// TestControlRequestCapped: a request without newline is cut at
// MaxRequest with a clear error, the connection closed; an idle client
// does not hold Close.
func TestControlRequestCapped(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d, err := New(Options{Store: st, Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	s, err := listenControl(sock, d, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		chunk := bytes.Repeat([]byte("x"), 16<<10)
		for range 64 { // 1 MiB, no newline
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}()
	var resp Response
	if err := json.NewDecoder(bufio.NewReader(c)).Decode(&resp); err != nil {
		t.Fatalf("no answer to an over-long request: %v", err)
	}
	if resp.OK || !strings.Contains(resp.Error, "longer than 65536 bytes") {
		t.Fatalf("answer = %+v", resp)
	}
	c.Close()

	// A normal request still works; an idle one does not hold Close.
	if _, err := NewClient(sock).Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(20 * time.Millisecond)
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for an idle client")
	}
}

// TestStartPositionStoredAtOnce: a followed file without a saved position
// has its starting point stored before any line is read, so lines written
// while pbxguard is down (restart, reload) are read after it.
func TestStartPositionStoredAtOnce(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	log := filepath.Join(dir, "messages.log")
	old := "noise 1\nnoise 2\n"
	if err := os.WriteFile(log, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	key := "asterisk:" + log
	open := fileOpener(log, source.FileOptions{StartAtEnd: true, Poll: 20 * time.Millisecond})
	mk := func(start store.Position) (*Daemon, *fakeBackend) {
		fw := newFakeBackend()
		d, err := New(Options{Store: st, Backend: fw,
			Jails: []JailSpec{{Name: "asterisk", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}},
				Sources: []SourceSpec{{Key: key, Name: log, Source: open(start), Detector: wordDetector{}, Reopen: open, start: start}}}},
			SaveEvery: 20 * time.Millisecond, TickEvery: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return d, fw
	}
	d, _ := mk(store.Position{})
	stop := run(t, d)
	waitFor(t, "starting position stored", func() bool { p, _ := st.Positions(ctx); return p[key].Offset == int64(len(old)) })
	stop(10 * time.Second)

	// Down: an attack is logged. Restarted at the stored position.
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("FAIL 203.0.113.5\nFAIL 203.0.113.5\nFAIL 203.0.113.5\n")
	f.Close()
	pos, _ := st.Positions(ctx)
	d2, fw2 := mk(pos[key])
	run(t, d2)
	waitFor(t, "the attack written while down is banned", func() bool { _, ok := fw2.has("203.0.113.5/32"); return ok })
}

func TestLineStamp(t *testing.T) {
	loc := time.UTC
	now := func() time.Time { return time.Date(2026, 1, 1, 0, 5, 0, 0, loc) }
	stamp := lineStamp(loc, now)
	for _, tc := range []struct {
		line string
		want time.Time
	}{
		{"[Dec 31 23:59:58] NOTICE[1] x", time.Date(2025, 12, 31, 23, 59, 58, 0, loc)},
		{"[Jan  1 00:04:00] NOTICE[1] x", time.Date(2026, 1, 1, 0, 4, 0, 0, loc)},
		{"Jan  1 00:04:01 pbx sshd[1]: x", time.Date(2026, 1, 1, 0, 4, 1, 0, loc)},
		{"[2026-01-01 00:03:00.123] x", time.Date(2026, 1, 1, 0, 3, 0, 0, loc)},
		{"2026-01-01T00:02:00.5+01:00 pbx x", time.Date(2025, 12, 31, 23, 2, 0, 500000000, loc)},
	} {
		got, ok := stamp([]byte(tc.line))
		if !ok || !got.Equal(tc.want) {
			t.Errorf("%q: %v %v, want %v", tc.line, got, ok, tc.want)
		}
	}
	for _, bad := range []string{"", "  continuation", "[not a stamp]", "Foo  1 00:00:00 x"} {
		if _, ok := stamp([]byte(bad)); ok {
			t.Errorf("%q has a stamp?", bad)
		}
	}
}

// TestCorruptStoreRebuiltFromKernel: the store file is garbage at start.
// The daemon starts (no protection gap), the kernel's entries are adopted
// with their remaining time instead of being deleted as unknown, and the
// Error log, status and /metrics say so.
func TestCorruptStoreRebuiltFromKernel(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, store.FileName), bytes.Repeat([]byte("not sqlite "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatalf("store.Open of a corrupt file: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	fw := newFakeBackend()
	fw.set[netip.MustParsePrefix("192.0.2.99/32")] = time.Now().Add(40 * time.Minute)
	fw.set[netip.MustParsePrefix("2001:db8:5::/64")] = time.Now().Add(2 * time.Hour)
	fw.set[netip.MustParsePrefix("198.51.100.7/32")] = time.Now().Add(time.Hour) // allowlisted now: goes
	var logs syncBuf
	d, err := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Store: st, Backend: fw,
		Allowed: allowlist("198.51.100.0/24"),
		Jails:   []JailSpec{{Name: "asterisk", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}}}}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, d)
	ctx := context.Background()
	bans, err := st.ActiveBans(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]time.Duration{}
	for _, b := range bans {
		got[b.Prefix.String()] = b.Remaining(time.Now())
	}
	if len(got) != 2 || got["192.0.2.99/32"] < 39*time.Minute || got["192.0.2.99/32"] > 40*time.Minute ||
		got["2001:db8:5::/64"] < 119*time.Minute {
		t.Fatalf("adopted bans = %v", got)
	}
	if _, ok := fw.has("192.0.2.99/32"); !ok {
		t.Fatal("kernel entry deleted")
	}
	if _, ok := fw.has("198.51.100.7/32"); ok {
		t.Fatal("allowlisted kernel entry adopted")
	}
	s := d.Status()
	if !strings.Contains(s.Store.Recovered, store.FileName+".corrupt-") || s.ActiveBans != 2 {
		t.Fatalf("status = %+v", s)
	}
	if v := gaugeValue(t, d.metrics, "pbxguard_store_recovered", nil); v != 1 {
		t.Fatalf("pbxguard_store_recovered = %v", v)
	}
	if !strings.Contains(logs.String(), "level=ERROR msg=\"STORE WAS CORRUPT") {
		t.Fatalf("not said loudly:\n%s", logs.String())
	}
}
