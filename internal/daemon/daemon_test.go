package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

// fakeBackend is an in-memory kernel.
type fakeBackend struct {
	mu    sync.Mutex
	set   map[netip.Prefix]time.Time
	adds  int
	fail  bool
	inits int
	// lastAdd is the last Add's entries, as given.
	lastAdd []firewall.Ban
}

func newFakeBackend() *fakeBackend { return &fakeBackend{set: map[netip.Prefix]time.Time{}} }

func (f *fakeBackend) Name() string                 { return "fake" }
func (f *fakeBackend) Init(context.Context) error   { f.inits++; return nil }
func (f *fakeBackend) Close() error                 { return nil }
func (f *fakeBackend) Remove(context.Context) error { return nil }
func (f *fakeBackend) Add(_ context.Context, bans []firewall.Ban) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("kernel says no")
	}
	f.adds++
	f.lastAdd = append([]firewall.Ban(nil), bans...)
	for _, b := range bans {
		if b.Timeout <= 0 {
			return fmt.Errorf("timeout %v", b.Timeout)
		}
		f.set[b.Prefix] = time.Now().Add(b.Timeout)
	}
	return nil
}
func (f *fakeBackend) Delete(_ context.Context, ps []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range ps {
		delete(f.set, p)
	}
	return nil
}
func (f *fakeBackend) List(context.Context) ([]firewall.Ban, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []firewall.Ban
	for p, until := range f.set {
		out = append(out, firewall.Ban{Prefix: p, Timeout: time.Until(until)})
	}
	return out, nil
}
func (f *fakeBackend) has(p string) (time.Duration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.set[netip.MustParsePrefix(p)]
	return time.Until(u), ok
}

// chanSource hands on lines written to its channel; positions count lines.
type chanSource struct {
	lines chan string
	start int64
}

func (c *chanSource) Run(ctx context.Context, handle func(Line) error) error {
	off := c.start
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-c.lines:
			off++
			if err := handle(Line{Data: []byte(s), Pos: store.Position{Position: source.Position{Path: "/fake", Offset: off}}, Received: time.Now()}); err != nil {
				return err
			}
		}
	}
}

// wordDetector: "FAIL <addr>" is an auth failure, "OK <addr>" a success.
type wordDetector struct{}

func (wordDetector) Name() string { return "word" }
func (wordDetector) Detect(line []byte, ev *event.Event) bool {
	f := strings.Fields(string(line))
	if len(f) != 2 {
		return false
	}
	a, err := netip.ParseAddr(f[1])
	if err != nil {
		return false
	}
	ev.Addr, ev.Detector = a, "word"
	switch f[0] {
	case "FAIL":
		ev.Kind = event.AuthFailure
	case "OK":
		ev.Kind = event.AuthSuccess
	default:
		return false
	}
	return true
}

// countJudge bans at the maxretry-th failure.
type countJudge struct {
	max    int
	counts map[netip.Addr]int
	forgot []netip.Addr
}

func (j *countJudge) Observe(ev *event.Event) (Decision, bool) {
	if !ev.Kind.IsFailure() {
		return Decision{}, false
	}
	j.counts[ev.Addr]++
	if j.counts[ev.Addr] != j.max {
		return Decision{}, false
	}
	now := time.Now()
	return Decision{Addr: ev.Addr, Prefix: netip.PrefixFrom(ev.Addr, ev.Addr.BitLen()), At: now, Duration: time.Hour,
		Until: now.Add(time.Hour), BanCount: 1, Reason: fmt.Sprintf("%d failures", j.max), Failures: j.max}, true
}
func (j *countJudge) Tick(time.Time) []Decision { return nil }
func (j *countJudge) Forget(a netip.Addr)       { delete(j.counts, a); j.forgot = append(j.forgot, a) }

type harness struct {
	t      *testing.T
	dir    string
	st     *store.Store
	fw     *fakeBackend
	src    *chanSource
	judge  *countJudge
	d      *Daemon
	cancel context.CancelFunc
	done   chan error
	sock   string
	client *Client
}

func allowlist(prefixes ...string) func(netip.Prefix) (netip.Prefix, bool) {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	return func(p netip.Prefix) (netip.Prefix, bool) {
		for _, a := range ps {
			if a.Overlaps(p) {
				return a, true
			}
		}
		return netip.Prefix{}, false
	}
}

func start(t *testing.T, dir string, fw *fakeBackend, startOff int64) *harness {
	t.Helper()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, st: st, fw: fw, src: &chanSource{lines: make(chan string), start: startOff},
		judge: &countJudge{max: 3, counts: map[netip.Addr]int{}}, sock: filepath.Join(dir, "ctl.sock")}
	var logBuf bytes.Buffer
	d, err := New(Options{
		Logger:  slog.New(slog.NewTextHandler(io.MultiWriter(&logBuf), nil)),
		Store:   st,
		Backend: fw,
		Allowed: allowlist("127.0.0.0/8", "198.51.100.0/24"),
		Jails: []JailSpec{{Name: "asterisk", Judge: h.judge, BanTime: time.Hour,
			Sources: []SourceSpec{{Key: "asterisk:/fake", Name: "/fake", Source: h.src, Detector: wordDetector{}}}}},
		ControlSocket: h.sock,
		SaveEvery:     50 * time.Millisecond,
		TickEvery:     50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- d.Run(ctx) }()
	h.client = NewClient(h.sock)
	// Ready when the socket answers.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := h.client.Status(context.Background()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready; log:\n%s", logBuf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return h
}

func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("daemon did not stop")
	}
	h.st.Close()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestLinesToKernelAndControl(t *testing.T) {
	dir := t.TempDir()
	fw := newFakeBackend()
	h := start(t, dir, fw, 0)
	ctx := context.Background()

	fi, err := os.Stat(h.sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v", fi.Mode(), err)
	}
	for i := 0; i < 2; i++ {
		h.src.lines <- "FAIL 203.0.113.66"
	}
	h.src.lines <- "OK 203.0.113.66"
	h.src.lines <- "noise"
	if _, ok := fw.has("203.0.113.66/32"); ok {
		t.Fatal("banned before maxretry")
	}
	h.src.lines <- "FAIL 203.0.113.66"
	waitFor(t, "ban in kernel", func() bool { _, ok := fw.has("203.0.113.66/32"); return ok })
	waitFor(t, "ban in store", func() bool { b, _ := h.client.Bans(ctx); return len(b) == 1 })
	bans, err := h.client.Bans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := bans[0]
	if b.Addr != "203.0.113.66" || b.Jail != "asterisk" || b.Reason != "3 failures" || b.Remaining < 3590 || b.Count != 1 {
		t.Fatalf("ban = %+v", b)
	}
	st, err := h.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ActiveBans != 1 || len(st.Jails) != 1 || st.Jails[0].Lines != 5 || st.Jails[0].Events != 4 || st.Latency.Count != 1 {
		t.Fatalf("status = %+v", st)
	}

	// Manual ban of an allowlisted address: refused, never in the kernel.
	_, err = h.client.Ban(ctx, netip.MustParsePrefix("198.51.100.10/32"), time.Hour, "", "")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "allowlist (entry 198.51.100.0/24)") {
		t.Fatalf("ban allowlisted: %v", err)
	}
	if _, ok := fw.has("198.51.100.10/32"); ok {
		t.Fatal("allowlisted address reached the kernel")
	}
	// A prefix that contains an allowlisted address is refused too.
	if _, err := h.client.Ban(ctx, netip.MustParsePrefix("198.51.0.0/16"), time.Hour, "", ""); !errors.Is(err, ErrRefused) {
		t.Fatalf("ban covering prefix: %v", err)
	}
	// Manual ban of an IPv6 /64.
	bi, err := h.client.Ban(ctx, netip.MustParsePrefix("2001:db8:203::/64"), 10*time.Minute, "", "by hand")
	if err != nil || bi.Jail != "manual" || bi.Prefix != "2001:db8:203::/64" {
		t.Fatalf("manual ban: %+v %v", bi, err)
	}
	if left, ok := fw.has("2001:db8:203::/64"); !ok || left < 9*time.Minute {
		t.Fatalf("v6 ban in kernel: %v %v", left, ok)
	}
	// Unban by an address inside the /64.
	gone, err := h.client.Unban(ctx, netip.MustParsePrefix("2001:db8:203::bad:66/128"))
	if err != nil || len(gone) != 1 {
		t.Fatalf("unban: %+v %v", gone, err)
	}
	if _, ok := fw.has("2001:db8:203::/64"); ok {
		t.Fatal("unban left the kernel entry")
	}
	// Metrics: the latency histogram has the one automatic ban.
	var mb bytes.Buffer
	mfs, _ := h.d.Metrics().Registry.Gather()
	for _, mf := range mfs {
		fmt.Fprintln(&mb, mf.String())
	}
	if !strings.Contains(mb.String(), "pbxguard_ban_latency_seconds") || !strings.Contains(mb.String(), "sample_count:1 ") {
		t.Fatalf("metrics lack the latency sample:\n%s", mb.String())
	}
	h.stop()

	// Positions saved at shutdown: 5 lines read.
	st2, _ := store.Open(dir)
	pos, _ := st2.Positions(ctx)
	st2.Close()
	if p := pos["asterisk:/fake"]; p.Offset != 5 {
		t.Fatalf("saved position = %+v", pos)
	}
}

func TestRestartReconciles(t *testing.T) {
	dir := t.TempDir()
	fw := newFakeBackend()
	h := start(t, dir, fw, 0)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		h.src.lines <- "FAIL 203.0.113.77"
	}
	waitFor(t, "ban", func() bool { b, _ := h.client.Bans(ctx); return len(b) == 1 })
	h.stop()

	// While down: the kernel lost the ban (reboot) and gained one we do not know.
	fw2 := newFakeBackend()
	fw2.set[netip.MustParsePrefix("192.0.2.99/32")] = time.Now().Add(time.Hour)
	h = start(t, dir, fw2, 3)
	defer h.stop()
	if _, ok := fw2.has("192.0.2.99/32"); ok {
		t.Fatal("unknown kernel entry kept")
	}
	left, ok := fw2.has("203.0.113.77/32")
	if !ok || left < 3590*time.Second || left > time.Hour {
		t.Fatalf("restored ban: %v %v", left, ok)
	}
	if fw2.inits != 1 {
		t.Fatalf("Init called %d times", fw2.inits)
	}
}

func TestKernelFailureRetried(t *testing.T) {
	dir := t.TempDir()
	fw := newFakeBackend()
	fw.fail = true
	h := start(t, dir, fw, 0)
	defer h.stop()
	for i := 0; i < 3; i++ {
		h.src.lines <- "FAIL 203.0.113.45"
	}
	waitFor(t, "ban stored", func() bool { b, _ := h.client.Bans(context.Background()); return len(b) == 1 })
	fw.mu.Lock()
	fw.fail = false
	fw.mu.Unlock()
	waitFor(t, "retry reaches the kernel", func() bool { _, ok := fw.has("203.0.113.45/32"); return ok })
}

func TestUnreachable(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "is pbxguard running?") {
		t.Fatalf("err = %v", err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	m := NewMetrics()
	m.lines.WithLabelValues("asterisk", "/var/log/asterisk/messages").Add(7)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := m.ServeListener(ln, slog.New(slog.DiscardHandler))
	defer stop()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `pbxguard_lines_total{jail="asterisk",source="/var/log/asterisk/messages"} 7`) {
		t.Fatalf("metrics:\n%s", body)
	}
}

// failingSource hands on its lines, then fails.
type failingSource struct {
	lines []string
	start int64
}

func (f *failingSource) Run(ctx context.Context, handle func(Line) error) error {
	off := f.start
	for _, s := range f.lines {
		off++
		if err := handle(Line{Data: []byte(s), Pos: store.Position{Position: source.Position{Path: "/fake", Offset: off}}, Received: time.Now()}); err != nil {
			return err
		}
	}
	return errors.New("journalctl stopped: exit status 1")
}

func TestFailedSourceIsReopenedAtItsPosition(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw := newFakeBackend()
	var reopenedAt []int64
	var mu sync.Mutex
	src := &failingSource{lines: []string{"FAIL 203.0.113.5", "FAIL 203.0.113.5"}}
	d, err := New(Options{Store: st, Backend: fw, Jails: []JailSpec{{Name: "sshd", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}},
		Sources: []SourceSpec{{Key: "sshd:journal", Name: "journal", Source: src, Detector: wordDetector{},
			Reopen: func(pos store.Position) Source {
				mu.Lock()
				reopenedAt = append(reopenedAt, pos.Offset)
				mu.Unlock()
				return &failingSource{lines: []string{"FAIL 203.0.113.5"}, start: pos.Offset}
			}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "ban after the reopened source's line", func() bool { _, ok := fw.has("203.0.113.5/32"); return ok })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v (a reopenable source must not stop the daemon)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reopenedAt) == 0 || reopenedAt[0] != 2 {
		t.Fatalf("reopened at %v, want first at offset 2", reopenedAt)
	}
}
