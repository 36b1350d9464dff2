package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/jail"
	"github.com/pbxguard/pbxguard/internal/store"
)

// storedBan is the store's active ban of p.
func storedBan(t *testing.T, st *store.Store, p string) store.Ban {
	t.Helper()
	b, ok, err := st.Ban(context.Background(), netip.MustParsePrefix(p))
	if err != nil || !ok {
		t.Fatalf("store has no ban of %s (%v)", p, err)
	}
	return b
}

// A jail's 1 h ban two milliseconds after a 24 h fraud ban leaves the
// fraud ban as it is, in the kernel and in the store; the history has both.
func TestJailBanNeverShortensFraudBan(t *testing.T) {
	fw := newFakeBackend()
	h := start(t, t.TempDir(), fw, 0)
	defer h.stop()
	ctx := context.Background()
	const ip = "203.0.113.77"
	if _, err := h.client.Ban(ctx, netip.MustParsePrefix(ip+"/32"), 24*time.Hour, "fraud", "fraud: satellite calls ext 1001"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.src.lines <- "FAIL " + ip
	}
	addr := netip.MustParseAddr(ip)
	waitFor(t, "the jail's decision in the history", func() bool { return h.st.PriorBans(addr) == 2 })
	if left, ok := fw.has(ip + "/32"); !ok || left < 23*time.Hour {
		t.Fatalf("kernel timeout after the jail's 1h ban = %v (present %v), want the fraud ban's ~24h", left, ok)
	}
	b := storedBan(t, h.st, ip+"/32")
	if left := time.Until(b.Until); left < 23*time.Hour || b.Jail != "fraud" || !strings.HasPrefix(b.Reason, "fraud:") {
		t.Fatalf("stored ban = %+v (left %v), want the fraud ban", b, left)
	}
	bans, err := h.client.Bans(ctx)
	if err != nil || len(bans) != 1 || bans[0].Jail != "fraud" || bans[0].Remaining < 23*3600 {
		t.Fatalf("bans = %+v, %v", bans, err)
	}
}

// `ban --for 10m` over a 1 h ban keeps the 1 h ban; `ban --for 2h` extends
// it; only unban shortens.
func TestManualBanNeverShortens(t *testing.T) {
	fw := newFakeBackend()
	h := start(t, t.TempDir(), fw, 0)
	defer h.stop()
	ctx := context.Background()
	p := netip.MustParsePrefix("203.0.113.78/32")
	if _, err := h.client.Ban(ctx, p, time.Hour, "", "first"); err != nil {
		t.Fatal(err)
	}
	bi, err := h.client.Ban(ctx, p, 10*time.Minute, "", "second")
	if err != nil {
		t.Fatal(err)
	}
	if !bi.Kept || bi.Reason != "first" || bi.Remaining < 3500 {
		t.Fatalf("answer to the shorter ban = %+v, want the 1h ban kept", bi)
	}
	if left, _ := fw.has(p.String()); left < 59*time.Minute {
		t.Fatalf("kernel timeout after ban --for 10m = %v, want ~1h", left)
	}
	if b := storedBan(t, h.st, p.String()); time.Until(b.Until) < 59*time.Minute || b.Reason != "first" {
		t.Fatalf("stored = %+v", b)
	}
	// Longer: extends, and its reason is the one shown.
	bi, err = h.client.Ban(ctx, p, 2*time.Hour, "", "third")
	if err != nil || bi.Kept || bi.Reason != "third" {
		t.Fatalf("longer ban = %+v, %v", bi, err)
	}
	if left, _ := fw.has(p.String()); left < 119*time.Minute {
		t.Fatalf("kernel timeout after ban --for 2h = %v", left)
	}
	if b := storedBan(t, h.st, p.String()); time.Until(b.Until) < 119*time.Minute || b.Reason != "third" || b.Count != 3 {
		t.Fatalf("stored = %+v", b)
	}
	// Unban, then a short ban is short.
	if _, err := h.client.Unban(ctx, p); err != nil {
		t.Fatal(err)
	}
	if bi, err = h.client.Ban(ctx, p, 10*time.Minute, "", "after unban"); err != nil || bi.Kept {
		t.Fatalf("ban after unban = %+v, %v", bi, err)
	}
	if left, _ := fw.has(p.String()); left > 11*time.Minute {
		t.Fatalf("kernel timeout after unban and ban 10m = %v", left)
	}
}

// Two decisions for one prefix in the same batch: the longer one is the ban.
func TestBatchKeepsLongerDecision(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw := newFakeBackend()
	d, err := New(Options{Store: st, Backend: fw})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.79")
	now := time.Now()
	d.apply([]pending{
		{d: Decision{Jail: "fraudish", Addr: a, At: now, Duration: 24 * time.Hour, Reason: "long"}},
		{d: Decision{Jail: "sip", Addr: a, At: now, Duration: time.Hour, Reason: "short"}},
	})
	if left, _ := fw.has("203.0.113.79/32"); left < 23*time.Hour {
		t.Fatalf("kernel timeout = %v, want the longer decision's 24h", left)
	}
	// And a later batch with a shorter decision leaves it.
	d.apply([]pending{{d: Decision{Jail: "sip", Addr: a, At: now, Duration: time.Hour, Reason: "later"}}})
	if left, _ := fw.has("203.0.113.79/32"); left < 23*time.Hour {
		t.Fatalf("kernel timeout after a later 1h decision = %v", left)
	}
	req := <-d.storeQ
	req2 := <-d.storeQ
	if len(req.rows) != 2 || len(req2.rows) != 1 {
		t.Fatalf("history rows queued = %d then %d, want every decision (2, 1)", len(req.rows), len(req2.rows))
	}
}

// --for permanent: no kernel timeout, shown as permanent, never shortened
// by a jail, restored after a restart, listed by unban --all.
func TestPermanentBan(t *testing.T) {
	dir := t.TempDir()
	fw := newFakeBackend()
	h := start(t, dir, fw, 0)
	ctx := context.Background()
	const ip = "203.0.113.81"
	bi, err := h.client.Ban(ctx, netip.MustParsePrefix(ip+"/32"), store.Permanent, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if !bi.Permanent || bi.Remaining != -1 || bi.Jail != "manual" {
		t.Fatalf("answer = %+v", bi)
	}
	if left, _ := fw.has(ip + "/32"); left < 100*365*24*time.Hour {
		t.Fatalf("kernel timeout = %v, want none (Permanent)", left)
	}
	for range 3 {
		h.src.lines <- "FAIL " + ip
	}
	waitFor(t, "the jail's decision in the history", func() bool { return h.st.PriorBans(netip.MustParseAddr(ip)) == 2 })
	if left, _ := fw.has(ip + "/32"); left < 100*365*24*time.Hour {
		t.Fatalf("kernel timeout after a jail's 1h ban = %v, want still permanent", left)
	}
	h.stop()
	// The kernel lost it (flush) while pbxguard was down: restored permanent.
	fw.Delete(ctx, []netip.Prefix{netip.MustParsePrefix(ip + "/32")})
	fw.mu.Lock()
	fw.lastAdd = nil
	fw.mu.Unlock()
	h = start(t, dir, fw, 0)
	defer h.stop()
	fw.mu.Lock()
	restored := fw.lastAdd
	fw.mu.Unlock()
	if len(restored) != 1 || restored[0].Timeout != firewall.Permanent {
		t.Fatalf("restored = %+v, want one entry with timeout firewall.Permanent", restored)
	}
	bans, err := h.client.Bans(ctx)
	if err != nil || len(bans) != 1 || !bans[0].Permanent || bans[0].Jail != "manual" {
		t.Fatalf("bans after restart = %+v, %v", bans, err)
	}
}

func TestUnbanAllAndJailNames(t *testing.T) {
	fw := newFakeBackend()
	h := start(t, t.TempDir(), fw, 0)
	defer h.stop()
	ctx := context.Background()
	for _, b := range []struct{ ip, jail string }{{"203.0.113.90", "manual"}, {"203.0.113.91", "asterisk"}, {"203.0.113.92", "asterisk"}, {"2001:db8::5", "fraud"}} {
		if _, err := h.client.Ban(ctx, netip.MustParsePrefix(b.ip+"/"+map[bool]string{true: "128", false: "32"}[strings.Contains(b.ip, ":")]), time.Hour, b.jail, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, err := h.client.Ban(ctx, netip.MustParsePrefix("203.0.113.93/32"), time.Hour, "asterik", "")
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "valid: asterisk, manual, fraud") {
		t.Fatalf("ban --jail asterik: %v, want a usage error listing the jails", err)
	}
	if _, ok := fw.has("203.0.113.93/32"); ok {
		t.Fatal("a ban into an unknown jail reached the kernel")
	}
	if _, err := h.client.UnbanAll(ctx, "nope"); !errors.Is(err, ErrUsage) {
		t.Fatalf("unban --all --jail nope: %v", err)
	}
	gone, err := h.client.UnbanAll(ctx, "asterisk")
	if err != nil || len(gone) != 2 {
		t.Fatalf("unban --all --jail asterisk = %+v, %v", gone, err)
	}
	if _, ok := fw.has("203.0.113.91/32"); ok {
		t.Fatal("unban --all --jail left a kernel entry")
	}
	if _, ok := fw.has("203.0.113.90/32"); !ok {
		t.Fatal("unban --all --jail asterisk removed a manual ban")
	}
	gone, err = h.client.UnbanAll(ctx, "")
	if err != nil || len(gone) != 2 {
		t.Fatalf("unban --all = %+v, %v", gone, err)
	}
	if l, _ := fw.List(ctx); len(l) != 0 {
		t.Fatalf("kernel after unban --all: %v", l)
	}
	if bans, _ := h.client.Bans(ctx); len(bans) != 0 {
		t.Fatalf("bans after unban --all: %v", bans)
	}
	if st := h.d.Status(); st.ActiveBans != 0 {
		t.Fatalf("status active bans = %d", st.ActiveBans)
	}
}

// A decision the kernel refused is retried as the ban stands at the retry:
// a longer ban made meanwhile is not shortened by the retry, an unbanned
// prefix is not put back.
func TestRetryNeverShortensOrResurrects(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw := newFakeBackend()
	d, err := New(Options{Store: st, Backend: fw})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := netip.MustParseAddr("203.0.113.83"), netip.MustParseAddr("203.0.113.84")
	fw.fail = true
	now := time.Now()
	d.apply([]pending{{d: Decision{Jail: "sip", Addr: a, At: now, Duration: time.Hour}}, {d: Decision{Jail: "sip", Addr: b, At: now, Duration: time.Hour}}})
	fw.fail = false
	if _, err := d.Ban(ctx, netip.PrefixFrom(a, 32), 24*time.Hour, "fraud", "fraud"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Unban(ctx, netip.PrefixFrom(b, 32)); err != nil {
		t.Fatal(err)
	}
	d.tick(ctx)
	if left, ok := fw.has("203.0.113.83/32"); !ok || left < 23*time.Hour {
		t.Fatalf("after the retry: %v (present %v), want the 24h ban", left, ok)
	}
	if _, ok := fw.has("203.0.113.84/32"); ok {
		t.Fatal("the retry put an unbanned prefix back")
	}
}

// One value means permanent everywhere: the jail's decision, the config's
// bantime, the store's Remaining and the kernel's Timeout.
func TestPermanentIsOneValue(t *testing.T) {
	if config.Permanent != store.Permanent || jail.Permanent != store.Permanent || firewall.Permanent != store.Permanent {
		t.Fatalf("permanent differs: config %d, jail %d, store %d, firewall %d", config.Permanent, jail.Permanent, store.Permanent, firewall.Permanent)
	}
	now := time.Now()
	if u := decisionUntil(Decision{At: now, Duration: jail.Permanent, Until: now.Add(jail.Permanent)}, now); !u.Equal(store.Forever) {
		t.Fatalf("a jail's permanent decision ends %v, want store.Forever", u)
	}
}

// bantime: permanent in a jail, through the real stages: the jail's ban
// reaches the kernel with no timeout and is listed as permanent.
func TestJailBanTimePermanent(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "messages.log")
	os.WriteFile(logPath, nil, 0o600)
	cfgPath := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("state_dir: %[1]s/state\nfirewall: {backend: dry-run}\ncontrol: {socket: %[1]s/ctl.sock}\nmetrics: {listen: \"\"}\n"+
		"allowlist_asterisk_trunks: false\njails:\n  asterisk:\n    files: [%[2]s]\n    maxretry: 2\n    bantime: permanent\n", dir, logPath)), 0o600)
	cfg, err := config.Load(cfgPath, config.Options{HostPrefixes: func() []netip.Prefix { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	fw := newFakeBackend()
	logs := &lockedBuffer{}
	b, err := Build(cfg, BuildOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), Backend: fw})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := NewClient(cfg.Control.Socket)
	waitFor(t, "ready", func() bool { _, err := c.Status(ctx); return err == nil })
	waitFor(t, "the source", func() bool { return strings.Contains(logs.String(), "source: following") })
	f, _ := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
	for i := range 2 {
		fmt.Fprintf(f, "[%s] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"%d\" <sip:%d@192.0.2.1>' failed for '203.0.113.85:5060' (callid: %d) - No matching endpoint found\n",
			time.Now().Format("Jan _2 15:04:05"), 1000+i, 1000+i, i)
	}
	f.Close()
	waitFor(t, "ban", func() bool { bans, _ := c.Bans(ctx); return len(bans) == 1 })
	bans, _ := c.Bans(ctx)
	if !bans[0].Permanent || bans[0].Jail != "asterisk" {
		t.Fatalf("ban = %+v, want permanent in jail asterisk", bans[0])
	}
	fw.mu.Lock()
	added := fw.lastAdd
	fw.mu.Unlock()
	if len(added) != 1 || added[0].Timeout != firewall.Permanent {
		t.Fatalf("kernel add = %+v, want Timeout firewall.Permanent", added)
	}
	if !strings.Contains(logs.String(), `msg="banned by jail asterisk"`) || strings.Contains(logs.String(), "banned by hand") {
		t.Fatalf("log wording:\n%s", logs.String())
	}
}

// The log of a kept decision names the jail that decided it and the ban
// that stays.
func TestKeptDecisionLog(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logs lockedBuffer
	d, err := New(Options{Store: st, Backend: newFakeBackend(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.86")
	if _, err := d.Ban(context.Background(), netip.PrefixFrom(a, 32), 24*time.Hour, "fraud", "fraud: ext 1001"); err != nil {
		t.Fatal(err)
	}
	d.apply([]pending{{d: Decision{Jail: "sip", Addr: a, At: time.Now(), Duration: time.Hour, Reason: "5 failures"}}})
	out := logs.String()
	for _, want := range []string{`msg="banned for toll fraud"`, `msg="jail sip decided a ban; a longer ban is in force and stays"`, `in_force_jail=fraud`, `reason="5 failures"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "banned by hand") {
		t.Errorf("a fraud ban logged as by hand:\n%s", out)
	}
}
