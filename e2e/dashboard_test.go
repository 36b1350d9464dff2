package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// TestE2EDashboard drives the dashboard in a real headless Chromium while
// the daemon (dry-run firewall, loopback only) reads attack lines: the ban
// appears on the open overview without a reload, its evidence page shows
// the line with file:line, and an account name carrying <script> renders
// as text (the script never runs). Screenshots are kept in a temp dir.
func TestE2EDashboard(t *testing.T) {
	requireE2E(t, "chromium")
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tokenFile := filepath.Join(dir, "dashboard.token")
	os.WriteFile(tokenFile, []byte("e2e-token-0123456789abcdef\n"), 0o600)
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: "dry-run",
		top: fmt.Sprintf("dashboard: {listen: %q, token_file: %s}", addr, tokenFile)})
	d := startDaemon(t, nil, dir, cfg)

	shots, err := os.MkdirTemp("", "pbxguard-dashboard-shots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", shots)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("chromium"), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.WindowSize(1200, 900))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var buf []byte
			if err := chromedp.FullScreenshot(&buf, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	base := "http://" + addr
	var rows0 int
	// The dashboard worker starts with the daemon; wait until it answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard at %s never answered: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#bans", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("#bans tbody tr").length`, &rows0),
		chromedp.Evaluate(`window.__loaded = 1`, nil), // gone if the page reloads
		shot("overview-empty"),
	); err != nil {
		t.Fatal(err)
	}
	if rows0 != 0 {
		t.Fatalf("%d ban rows before any attack", rows0)
	}

	const hostile = `<script>window.__xss=1</script>`
	f, err := os.OpenFile(filepath.Join(dir, "messages.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Format("Jan _2 15:04:05")
	for i := 0; i < 5; i++ {
		fmt.Fprintf(f, "[%s] NOTICE[1297%d] manager.c: 203.0.113.45 failed to authenticate as '%s'\n", now, i, hostile)
	}
	f.Close()

	var rowText string
	var loaded, xss any
	if err := chromedp.Run(ctx,
		chromedp.WaitVisible(`#bans tbody tr.new`, chromedp.ByQuery),
		chromedp.Text(`#bans tbody tr.new`, &rowText, chromedp.ByQuery),
		chromedp.Evaluate(`window.__loaded`, &loaded),
		shot("overview-live-ban"),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rowText, "203.0.113.45") || loaded != float64(1) {
		t.Fatalf("live row %q, page reloaded: %v", rowText, loaded != float64(1))
	}

	var account, raw, src string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/ban?addr=203.0.113.45"),
		chromedp.WaitVisible(`table.lines`, chromedp.ByQuery),
		chromedp.Text(`table.lines td.account`, &account, chromedp.ByQuery),
		chromedp.Text(`table.lines code.raw`, &raw, chromedp.ByQuery),
		chromedp.Text(`table.lines tbody tr td:nth-child(5)`, &src, chromedp.ByQuery),
		chromedp.Evaluate(`window.__xss === undefined ? "none" : String(window.__xss)`, &xss),
		shot("ban-evidence"),
	); err != nil {
		t.Fatal(err)
	}
	if account != hostile || !strings.Contains(raw, hostile) || xss != "none" {
		t.Fatalf("account %q raw %q: attacker text must render as text and never run (window.__xss=%v)", account, raw, xss)
	}
	if !strings.HasSuffix(src, "messages.log:1") {
		t.Fatalf("evidence source %q, want …/messages.log:1", src)
	}
	var scripts int
	chromedp.Run(ctx, chromedp.Evaluate(`document.querySelectorAll("main script").length`, &scripts))
	if scripts != 0 {
		t.Fatalf("%d script elements inside the page body", scripts)
	}

	// Unban: without the token the page offers no button, and a forged
	// POST (no session, no CSRF token) is refused; after logging in with
	// the token the button works and the daemon drops the ban.
	var buttons int
	var status string
	if err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/bans"),
		chromedp.WaitVisible("#bans", chromedp.ByQuery),
		chromedp.Evaluate(`document.querySelectorAll("form[action='/unban'] button").length`, &buttons),
		chromedp.Evaluate(`fetch("/unban", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
			body: "prefix=203.0.113.45/32"}).then(r => String(r.status))`, &status, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
			return p.WithAwaitPromise(true)
		}),
	); err != nil {
		t.Fatal(err)
	}
	if buttons != 0 || status != "403" || len(d.bans()) != 1 {
		t.Fatalf("without the token: %d unban buttons, forged POST answered %s, bans %v", buttons, status, d.bans())
	}
	if err := chromedp.Run(ctx,
		chromedp.SendKeys("#token", "e2e-token-0123456789abcdef", chromedp.ByQuery),
		chromedp.Submit("#token", chromedp.ByQuery),
		chromedp.WaitVisible(`form[action='/unban'] button`, chromedp.ByQuery),
		chromedp.Navigate(base+"/bans"),
		chromedp.WaitVisible(`form[action='/unban'] button`, chromedp.ByQuery),
		shot("bans-logged-in"),
		chromedp.Click(`form[action='/unban'] button`, chromedp.ByQuery),
		chromedp.WaitVisible(`p.msg`, chromedp.ByQuery),
		chromedp.Text(`p.msg`, &status, chromedp.ByQuery),
		shot("bans-after-unban"),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "unbanned 203.0.113.45/32") || len(d.bans()) != 0 {
		t.Fatalf("after unban with the token: message %q, bans %v", status, d.bans())
	}
}
