package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// losingBackend is a fake kernel that can lose its table (like `nft flush
// ruleset`) and tell so through firewall.Checker.
type losingBackend struct {
	*fakeBackend
	mu       sync.Mutex
	lost     bool
	initFail bool
	count    bool // report Entries (like ipset), else -1 (like nftables)
	checks   int
}

func (l *losingBackend) lose() {
	l.mu.Lock()
	l.lost = true
	l.mu.Unlock()
	l.fakeBackend.mu.Lock()
	clear(l.fakeBackend.set)
	l.fakeBackend.mu.Unlock()
}

func (l *losingBackend) Init(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.initFail {
		return errors.New("kernel says no")
	}
	l.lost = false
	return l.fakeBackend.Init(ctx)
}

func (l *losingBackend) Add(ctx context.Context, bans []firewall.Ban) error {
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost {
		return syscall.ENOENT // what netlink answers for a missing set
	}
	return l.fakeBackend.Add(ctx, bans)
}

func (l *losingBackend) Check(context.Context) (firewall.Health, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.checks++
	h := firewall.Health{Entries: -1}
	if l.count {
		l.fakeBackend.mu.Lock()
		h.Entries = len(l.fakeBackend.set)
		l.fakeBackend.mu.Unlock()
	}
	if l.lost {
		h.Missing = []string{"table inet pbxguard"}
	}
	return h, nil
}

type healHarness struct {
	fw     *losingBackend
	d      *Daemon
	st     *store.Store
	log    *syncBuf
	cancel context.CancelFunc
	done   chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHeal runs a daemon on fw with the given active bans in its store.
func startHeal(t *testing.T, fw *losingBackend, bans ...store.Ban) *healHarness {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddBans(context.Background(), bans); err != nil {
		t.Fatal(err)
	}
	h := &healHarness{fw: fw, st: st, log: &syncBuf{}, done: make(chan error, 1)}
	h.d, err = New(Options{
		Logger:     slog.New(slog.NewTextHandler(h.log, nil)),
		Store:      st,
		Backend:    firewall.WithAllowlist(fw, func(netip.Prefix) bool { return false }),
		CheckEvery: 20 * time.Millisecond,
		TickEvery:  time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.d.Run(ctx) }()
	waitFor(t, "reconcile", func() bool { return h.d.kernel.get().Checked })
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		st.Close()
	})
	return h
}

func activeBans(now time.Time, prefixes ...string) []store.Ban {
	var out []store.Ban
	for i, p := range prefixes {
		pfx := netip.MustParsePrefix(p)
		out = append(out, store.Ban{Prefix: pfx, Addr: pfx.Addr(), Jail: "asterisk", Reason: "test", Since: now,
			Until: now.Add(time.Duration(i+1) * time.Hour), Count: 1})
	}
	return out
}

// TestHealAfterTableLoss: the kernel loses the table (nft flush ruleset);
// the daemon notices, puts every active ban back with its remaining time,
// and status/metrics say it was out of sync and is in sync again.
func TestHealAfterTableLoss(t *testing.T) {
	now := time.Now()
	bans := activeBans(now, "203.0.113.1/32", "203.0.113.2/32", "2001:db8::/64")
	fw := &losingBackend{fakeBackend: newFakeBackend()}
	h := startHeal(t, fw, bans...)
	if st := h.d.Status().Kernel; !st.InSync || st.Heals != 0 {
		t.Fatalf("after start: %+v", st)
	}
	fw.mu.Lock()
	fw.initFail = true // the first heals fail: status must say so
	fw.mu.Unlock()
	fw.lose()
	waitFor(t, "out of sync in status", func() bool {
		st := h.d.Status().Kernel
		return !st.InSync && st.LastError != ""
	})
	st := h.d.Status().Kernel
	if st.OutOfSyncSince.IsZero() || len(st.Missing) != 1 || st.Missing[0] != "table inet pbxguard" || !strings.Contains(st.LastError, "kernel says no") {
		t.Fatalf("out-of-sync status: %+v", st)
	}
	if v := metricValue(t, h.d, "pbxguard_kernel_in_sync"); v != 0 {
		t.Fatalf("pbxguard_kernel_in_sync = %v while the table is gone", v)
	}
	if v := metricValue(t, h.d, "pbxguard_kernel_out_of_sync_since_seconds"); v < float64(now.Unix()) {
		t.Fatalf("pbxguard_kernel_out_of_sync_since_seconds = %v", v)
	}
	// No hot loop: with a 20 ms check period, 700 ms of failures are a
	// handful of attempts (pause doubling), and one error line.
	time.Sleep(700 * time.Millisecond)
	fw.mu.Lock()
	checks := fw.checks
	fw.initFail = false
	fw.mu.Unlock()
	if checks > 10 {
		t.Errorf("%d checks in 700 ms while healing fails: no backoff", checks)
	}
	if n := strings.Count(h.log.String(), "restoring the kernel state failed"); n != 1 {
		t.Errorf("heal failure logged %d times, want once:\n%s", n, h.log.String())
	}
	waitFor(t, "healed", func() bool { return h.d.Status().Kernel.InSync })
	for _, b := range bans {
		rem, ok := fw.has(b.Prefix.String())
		if !ok {
			t.Fatalf("%s not back in the kernel", b.Prefix)
		}
		if want := time.Until(b.Until); rem < want-2*time.Second || rem > want+time.Second {
			t.Errorf("%s back with %v, want its remaining %v", b.Prefix, rem, want)
		}
	}
	st = h.d.Status().Kernel
	if st.Heals != 1 || st.LastHeal.IsZero() || !st.OutOfSyncSince.IsZero() {
		t.Fatalf("healed status: %+v", st)
	}
	if v := metricValue(t, h.d, "pbxguard_kernel_heals_total"); v != 1 {
		t.Fatalf("pbxguard_kernel_heals_total = %v", v)
	}
	if v := metricValue(t, h.d, "pbxguard_kernel_in_sync"); v != 1 {
		t.Fatalf("pbxguard_kernel_in_sync = %v after the heal", v)
	}
}

// TestHealShortCount: the sets are there but emptied (ipset flush): the
// entry count gives it away.
func TestHealShortCount(t *testing.T) {
	bans := activeBans(time.Now(), "203.0.113.1/32", "203.0.113.2/32")
	fw := &losingBackend{fakeBackend: newFakeBackend(), count: true}
	h := startHeal(t, fw, bans...)
	fw.fakeBackend.mu.Lock()
	clear(fw.fakeBackend.set)
	fw.fakeBackend.mu.Unlock()
	waitFor(t, "healed", func() bool {
		_, ok1 := fw.has("203.0.113.1/32")
		_, ok2 := fw.has("203.0.113.2/32")
		return ok1 && ok2
	})
	waitFor(t, "heal counted", func() bool { return h.d.Status().Kernel.Heals == 1 })
}

// TestManualBanHealsFirst: `pbxguard ban` while the table is gone heals and
// bans, instead of returning a raw netlink error.
func TestManualBanHealsFirst(t *testing.T) {
	bans := activeBans(time.Now(), "203.0.113.1/32")
	fw := &losingBackend{fakeBackend: newFakeBackend()}
	h := startHeal(t, fw, bans...)
	fw.lose()
	if _, err := h.d.Ban(context.Background(), netip.MustParsePrefix("203.0.113.9/32"), time.Hour, "", ""); err != nil {
		t.Fatalf("ban while the table is gone: %v", err)
	}
	for _, p := range []string{"203.0.113.1/32", "203.0.113.9/32"} {
		if _, ok := fw.has(p); !ok {
			t.Fatalf("%s not in the kernel after the ban", p)
		}
	}
	// A heal that fails gives a clear error.
	fw.mu.Lock()
	fw.initFail = true
	fw.mu.Unlock()
	fw.lose()
	_, err := h.d.Ban(context.Background(), netip.MustParsePrefix("203.0.113.10/32"), time.Hour, "", "")
	if err == nil || !strings.Contains(err.Error(), "lost pbxguard's table inet pbxguard") {
		t.Fatalf("ban with a failing heal: %v", err)
	}
}

// metricValue reads an unlabelled gauge or counter from the registry.
func metricValue(t *testing.T, d *Daemon, name string) float64 {
	t.Helper()
	mfs, err := d.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestRefusedBansBackOff: a ban the kernel refuses is retried with a
// growing pause, not every tick forever, and status says the kernel is
// not in sync until it is in.
func TestRefusedBansBackOff(t *testing.T) {
	fw := &losingBackend{fakeBackend: newFakeBackend()}
	h := startHeal(t, fw)
	fw.fakeBackend.mu.Lock()
	fw.fakeBackend.fail = true
	fw.fakeBackend.mu.Unlock()
	now := time.Now()
	h.d.apply([]pending{{d: Decision{Jail: "asterisk", Addr: netip.MustParseAddr("203.0.113.45"), Duration: time.Hour, Reason: "t"}}})
	ctx := context.Background()
	// 40 ticks over 2 s of fake time: the pause doubles (1 s, 2 s).
	for i := 0; i < 40; i++ {
		h.d.retryRefused(ctx, now.Add(time.Duration(i)*50*time.Millisecond))
	}
	fw.fakeBackend.mu.Lock()
	adds := fw.fakeBackend.adds
	fw.fakeBackend.mu.Unlock()
	if adds != 0 {
		t.Fatalf("fake counted %d successful adds while failing", adds)
	}
	h.d.kernel.mu.Lock()
	pause := h.d.kernel.retryPause
	h.d.kernel.mu.Unlock()
	if pause != 2*time.Second {
		t.Fatalf("after 2 s of refusals the retry pause is %v, want 2s (1 s, then doubled): retried too often", pause)
	}
	waitFor(t, "status out of sync", func() bool {
		st := h.d.Status().Kernel
		return !st.InSync && len(st.Missing) == 1 && strings.Contains(st.Missing[0], "refused") && st.LastError != ""
	})
	fw.fakeBackend.mu.Lock()
	fw.fakeBackend.fail = false
	fw.fakeBackend.mu.Unlock()
	h.d.retryRefused(ctx, now.Add(time.Minute))
	if _, ok := fw.has("203.0.113.45/32"); !ok {
		t.Fatal("the refused ban is not in after the retry")
	}
	waitFor(t, "status in sync", func() bool { return h.d.Status().Kernel.InSync })
}
