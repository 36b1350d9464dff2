package daemon

import (
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
	"github.com/pbxguard/pbxguard/internal/firewall"
)

// TestBuildWholePipeline runs the real stages (file follower, asterisk
// detector, jail, dry-run backend, SQLite store) in-process, restarts, and
// checks that bans are restored and no line is read twice.
func TestBuildWholePipeline(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "messages.log")
	if err := os.WriteFile(logPath, []byte("[Nov 25 04:00:00] NOTICE[1] old line before the start\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := fmt.Sprintf(`state_dir: %[1]s/state
firewall: {backend: dry-run}
control: {socket: %[1]s/ctl.sock}
metrics: {listen: ""}
jails:
  asterisk:
    files: [%[2]s]
    maxretry: 3
    bantime: 10m
`, dir, logPath)
	cfgPath := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(cfgPath, []byte(cfgText), 0o600)
	cfg, err := config.Load(cfgPath, config.Options{HostPrefixes: func() []netip.Prefix { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	line := func(addr string, i int) string {
		return fmt.Sprintf("[%s] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"%d\" <sip:%d@192.0.2.1>' failed for '%s:5060' (callid: %d) - No matching endpoint found\n",
			time.Now().Format("Jan _2 15:04:05"), 1000+i, 1000+i, addr, i)
	}
	appendLog := func(s string) {
		f, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	start := func() (*Built, firewall.Backend, func()) {
		fw := firewall.NewDryRun(firewall.Options{Prefixes: true})
		logs := &lockedBuffer{}
		b, err := Build(cfg, BuildOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), Backend: fw})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		c := NewClient(cfg.Control.Socket)
		waitFor(t, "ready", func() bool { _, err := c.Status(ctx); return err == nil })
		// The file is open (at its end, or at the saved position) before
		// the test writes to it.
		waitFor(t, "the source", func() bool {
			s := logs.String()
			return strings.Contains(s, "source: following") || strings.Contains(s, "source: resuming")
		})
		return b, fw, func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			b.Close()
		}
	}

	b, fw, stop := start()
	c := NewClient(cfg.Control.Socket)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		appendLog(line("203.0.113.66", i))
	}
	waitFor(t, "ban", func() bool { bans, _ := c.Bans(ctx); return len(bans) == 1 })
	list, _ := fw.List(ctx)
	if len(list) != 1 || list[0].Prefix.String() != "203.0.113.66/32" {
		t.Fatalf("kernel (dry-run) = %+v", list)
	}
	mfs, err := b.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "pbxguard_jail_tracked_addresses" && mf.GetMetric()[0].GetGauge().GetValue() == 1 {
			found = true
		}
	}
	if !found {
		t.Fatal("pbxguard_jail_tracked_addresses{jail=asterisk} is not 1")
	}
	st := b.Status()
	if st.Jails[0].Lines != 3 {
		t.Fatalf("lines read = %d, want 3 (the line present at start is not read)", st.Jails[0].Lines)
	}
	stop()

	// While stopped: two more lines for another address.
	appendLog(line("203.0.113.77", 10) + line("203.0.113.77", 11))
	b, fw, stop = start()
	defer stop()
	list, _ = fw.List(ctx)
	if len(list) != 1 || list[0].Prefix.String() != "203.0.113.66/32" || list[0].Timeout < 9*time.Minute {
		t.Fatalf("restored (dry-run) = %+v", list)
	}
	waitFor(t, "the 2 lines written while down", func() bool { return b.Status().Jails[0].Lines == 2 })
	appendLog(line("203.0.113.77", 12))
	waitFor(t, "second ban", func() bool { bans, _ := c.Bans(ctx); return len(bans) == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := b.Status().Jails[0].Lines; n != 3 {
		t.Fatalf("lines read after restart = %d, want 3 (none twice)", n)
	}
}
