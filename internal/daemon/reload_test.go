package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/firewall"
)

// TestReload: a reload keeps bans (store and kernel) and positions (no line
// lost or read twice), keeps the counters of a jail whose settings did not
// change (sshd), restarts the one whose settings changed (asterisk), and a
// broken file leaves the running daemon as it was.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	astLog, sshLog := filepath.Join(dir, "messages.log"), filepath.Join(dir, "auth.log")
	for _, f := range []string{astLog, sshLog} {
		os.WriteFile(f, nil, 0o600)
	}
	cfgPath := filepath.Join(dir, "pbxguard.yaml")
	metricsListen := ""
	writeCfg := func(astMaxRetry int) {
		text := fmt.Sprintf(`state_dir: %[1]s/state
firewall: {backend: dry-run}
control: {socket: %[1]s/ctl.sock}
metrics: {listen: "%[5]s"}
audit: {enabled: false}
allowlist_asterisk_trunks: false
jails:
  asterisk:
    files: [%[2]s]
    maxretry: %[4]d
    bantime: 10m
  sshd:
    detector: sshd
    files: [%[3]s]
    maxretry: 3
    bantime: 10m
`, dir, astLog, sshLog, astMaxRetry, metricsListen)
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	opts := config.Options{HostPrefixes: func() []netip.Prefix { return nil }}
	load := func() (*config.Config, error) { return config.Load(cfgPath, opts) }
	writeCfg(3)
	cfg, err := load()
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	fw := firewall.NewDryRun(firewall.Options{Prefixes: true})
	b, err := Build(cfg, BuildOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), Backend: fw})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- b.Serve(ctx, reload, load) }()
	c := NewClient(cfg.Control.Socket)
	waitFor(t, "ready", func() bool { _, err := c.Status(ctx); return err == nil })
	// Both files opened (at their end) before anything is written to them.
	waitFor(t, "the sources", func() bool { return strings.Count(logs.String(), `msg="source: following"`) == 2 })

	appendTo := func(path, s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	i := 0
	astFail := func(addr string) {
		i++
		appendTo(astLog, fmt.Sprintf("[%s] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"%d\" <sip:%d@192.0.2.1>' failed for '%s:5060' (callid: %d) - No matching endpoint found\n",
			time.Now().Format("Jan _2 15:04:05"), 1000+i, 1000+i, addr, i))
	}
	sshFail := func(addr string) {
		i++
		appendTo(sshLog, fmt.Sprintf("%s h sshd[%d]: Failed password for root from %s port 4%04d ssh2\n", time.Now().Format("Jan _2 15:04:05"), i, addr, i))
	}
	lines := func(d *Daemon, jail string) uint64 {
		for _, j := range d.Status().Jails {
			if j.Name == jail {
				return j.Lines
			}
		}
		return 0
	}
	astFail("203.0.113.10")
	astFail("203.0.113.10")
	sshFail("203.0.113.20")
	sshFail("203.0.113.20")
	if _, err := c.Ban(ctx, netip.MustParsePrefix("203.0.113.30/32"), time.Hour, "", "by hand"); err != nil {
		t.Fatal(err)
	}
	first := b.Current()
	waitFor(t, "4 lines", func() bool { return lines(first.Daemon, "asterisk") == 2 && lines(first.Daemon, "sshd") == 2 })

	// asterisk: maxretry 3 -> 4 (changed); sshd unchanged.
	writeCfg(4)
	reload <- struct{}{}
	waitFor(t, "the reloaded daemon", func() bool {
		if b.Current() == first {
			return false
		}
		_, err := c.Status(ctx)
		return err == nil
	})
	cur := b.Current().Daemon
	sshFail("203.0.113.20") // third sshd failure: its counter survived the reload
	astFail("203.0.113.10") // third asterisk failure: the jail started afresh (1 of 4)
	waitFor(t, "the sshd ban", func() bool { bans, _ := c.Bans(ctx); return hasBanInfo(bans, "203.0.113.20/32") })
	waitFor(t, "2 new lines", func() bool { return lines(cur, "asterisk") == 1 && lines(cur, "sshd") == 1 })
	time.Sleep(50 * time.Millisecond)
	bans, _ := c.Bans(ctx)
	if hasBanInfo(bans, "203.0.113.10/32") || !hasBanInfo(bans, "203.0.113.30/32") || len(bans) != 2 {
		t.Fatalf("bans after reload = %+v, want the manual ban kept and sshd's new one only", bans)
	}
	if l := lines(cur, "asterisk") + lines(cur, "sshd"); l != 2 {
		t.Fatalf("lines read after reload = %d, want 2 (none read twice)", l)
	}
	kernel, _ := fw.List(ctx)
	if len(kernel) != 2 {
		t.Fatalf("kernel after reload = %+v", kernel)
	}
	out := logs.String()
	if !strings.Contains(out, `msg="reload: jail (re)opened with new settings" jail=asterisk`) || strings.Contains(out, `jail=sshd msg="reload: jail`) ||
		strings.Count(out, "reload: jail (re)opened") != 1 {
		t.Fatalf("reload log:\n%s", out)
	}

	// A configuration that builds but cannot start (its metrics port is
	// taken): back to the previous one, bans still there.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	metricsListen = taken.Addr().String()
	writeCfg(5)
	reload <- struct{}{}
	waitFor(t, "the way back", func() bool {
		if !strings.Contains(logs.String(), "reload: the new configuration does not start; going back to the previous one") {
			return false
		}
		_, err := c.Status(ctx)
		return err == nil
	})
	if bans, _ := c.Bans(ctx); len(bans) != 2 {
		t.Fatalf("bans after the way back = %+v", bans)
	}
	cur = b.Current().Daemon

	// A broken file: logged, the running daemon stays.
	os.WriteFile(cfgPath, []byte("jails:\n  asterisk:\n    bantime: 1hr\n"), 0o600)
	reload <- struct{}{}
	waitFor(t, "the refusal", func() bool { return strings.Contains(logs.String(), "reload: the configuration has errors") })
	if b.Current().Daemon != cur {
		t.Fatal("a broken configuration replaced the running daemon")
	}
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("daemon unreachable after a refused reload: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func hasBanInfo(bans []BanInfo, prefix string) bool {
	for _, b := range bans {
		if b.Prefix == prefix {
			return true
		}
	}
	return false
}
