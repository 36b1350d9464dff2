package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// runCmd runs the CLI and returns its output and exit code.
func runCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String() + ee.Error(), ee.code
	}
	return out.String() + err.Error(), exitUsage
}

func TestBanCommands(t *testing.T) {
	dir, err := os.MkdirTemp("", "pbg") // short: a socket path is at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	sock := filepath.Join(dir, "ctl.sock")
	d, err := daemon.New(daemon.Options{Store: st, Backend: firewall.NewDryRun(firewall.Options{}), ControlSocket: sock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for i := 0; ; i++ {
		if _, err := daemon.NewClient(sock).Status(ctx); err == nil {
			break
		}
		if i > 500 {
			t.Fatal("daemon not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if out, code := runCmd(t, "ban", "203.0.113.5", "--for", "permanent", "--socket", sock); code != exitOK || !strings.Contains(out, "banned 203.0.113.5/32 (jail manual) permanently") {
		t.Fatalf("ban --for permanent: %d %q", code, out)
	}
	if out, code := runCmd(t, "ban", "203.0.113.5", "--for", "10m", "--socket", sock); code != exitOK || !strings.Contains(out, "stays banned permanently") {
		t.Fatalf("shorter ban over a permanent one: %d %q", code, out)
	}
	out, code := runCmd(t, "bans", "--socket", sock)
	if code != exitOK || !strings.Contains(out, "permanent") {
		t.Fatalf("bans: %d %q", code, out)
	}
	out, code = runCmd(t, "ban", "203.0.113.6", "--jail", "nope", "--socket", sock)
	if code != exitUsage || !strings.Contains(out, `unknown jail "nope"`) || !strings.Contains(out, "valid: manual, fraud") {
		t.Fatalf("ban --jail nope: %d %q, want exit 2 listing the valid jails", code, out)
	}
	if _, code := runCmd(t, "ban", "203.0.113.6", "--for", "forever", "--socket", sock); code != exitUsage {
		t.Fatalf("ban --for forever: exit %d", code)
	}
	if _, code := runCmd(t, "ban", "203.0.113.7", "--for", "1h", "--socket", sock); code != exitOK {
		t.Fatalf("ban: exit %d", code)
	}
	if out, code := runCmd(t, "unban", "--all", "203.0.113.7", "--socket", sock); code != exitUsage {
		t.Fatalf("unban --all ADDR: %d %q", code, out)
	}
	out, code = runCmd(t, "unban", "--all", "--socket", sock)
	if code != exitOK || strings.Count(out, "unbanned ") != 2 {
		t.Fatalf("unban --all: %d %q", code, out)
	}
	if out, _ := runCmd(t, "bans", "--socket", sock); !strings.Contains(out, "no active bans") {
		t.Fatalf("bans after unban --all: %q", out)
	}
}
