package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
)

func TestPrintStatusAudit(t *testing.T) {
	st := daemon.Status{Started: time.Now(), Backend: "nftables", Jails: []daemon.JailStatus{{Name: "asterisk"}},
		Audit: &daemon.AuditStatus{Enabled: true, Dir: "/etc/asterisk",
			Findings: map[string]int{"critical": 2, "high": 1, "medium": 3, "low": 8, "info": 0}}}
	var b bytes.Buffer
	printStatus(&b, st)
	want := "asterisk config audit of /etc/asterisk: 2 critical, 1 high, 3 medium, 8 low, 0 info (details: pbxguard audit --asterisk-dir /etc/asterisk)\n"
	if !strings.Contains(b.String(), want) {
		t.Fatalf("status:\n%s\nwant a line %q", b.String(), want)
	}

	st.Audit = &daemon.AuditStatus{Enabled: true, Dir: "/etc/asterisk", Error: "asterisk configuration directory cannot be read: no such file"}
	b.Reset()
	printStatus(&b, st)
	if !strings.Contains(b.String(), "asterisk config audit: not run: asterisk configuration directory cannot be read: no such file\n") {
		t.Fatalf("status:\n%s", b.String())
	}

	st.Audit = &daemon.AuditStatus{Enabled: false}
	b.Reset()
	printStatus(&b, st)
	if strings.Contains(b.String(), "audit") {
		t.Fatalf("audit off, yet shown:\n%s", b.String())
	}
}

// TestPrintStatusKernel: status says whether the kernel holds the bans it
// lists (it said "N active ban(s)" with the table gone).
func TestPrintStatusKernel(t *testing.T) {
	since := time.Date(2026, 12, 5, 8, 0, 0, 0, time.Local)
	st := daemon.Status{Started: since, Backend: "nftables", ActiveBans: 3,
		Kernel: daemon.KernelStatus{Checked: true, OutOfSyncSince: since, Missing: []string{"table inet pbxguard"},
			LastError: "firewall nftables: init: permission denied", LastErrAt: since}}
	var b bytes.Buffer
	printStatus(&b, st)
	for _, want := range []string{
		"kernel: OUT OF SYNC since 2026-12-05 08:00:00: table inet pbxguard; the bans listed are NOT all enforced\n",
		"last firewall error (2026-12-05 08:00:00): firewall nftables: init: permission denied\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("status:\n%s\nwant %q", b.String(), want)
		}
	}
	st.Kernel = daemon.KernelStatus{Checked: true, InSync: true, Heals: 2, LastHeal: since}
	b.Reset()
	printStatus(&b, st)
	if !strings.Contains(b.String(), "kernel: in sync with the store (restored 2 time(s), last 2026-12-05 08:00:00)\n") {
		t.Fatalf("status:\n%s", b.String())
	}
	st.Backend, st.Kernel = "dry-run", daemon.KernelStatus{}
	b.Reset()
	printStatus(&b, st)
	if !strings.Contains(b.String(), "kernel: not checked (firewall dry-run)\n") {
		t.Fatalf("status:\n%s", b.String())
	}
}

// Issue 16: --for 18446744074 (seconds) overflowed into a 288 ms ban; every
// out-of-range duration is a usage error before the daemon is asked.
func TestBanForOutOfRange(t *testing.T) {
	for _, d := range []string{"18446744074", "3651d", "-1h", "0"} {
		if code := run([]string{"ban", "--socket", "/nonexistent/pbxguard.sock", "--for", d, "192.0.2.7"}); code != exitUsage {
			t.Errorf("ban --for %s: exit %d, want %d", d, code, exitUsage)
		}
	}
}

func TestPrintStatusWorkers(t *testing.T) {
	since := time.Date(2026, 12, 5, 8, 0, 0, 0, time.Local)
	var b bytes.Buffer
	printStatus(&b, daemon.Status{Backend: "nftables", Workers: []daemon.WorkerStatus{{Name: "ami", Since: since, LastError: "dial tcp 127.0.0.1:5038: connection refused"}}})
	if want := "AMI (fraud monitoring, source: ami jails): DOWN since 2026-12-05 08:00:00: dial tcp 127.0.0.1:5038: connection refused\n"; !strings.Contains(b.String(), want) {
		t.Fatalf("status:\n%s\nwant %q", b.String(), want)
	}
	b.Reset()
	printStatus(&b, daemon.Status{Backend: "nftables", Workers: []daemon.WorkerStatus{{Name: "ami", Up: true, Since: since}}})
	if want := "AMI (fraud monitoring, source: ami jails): connected since 2026-12-05 08:00:00\n"; !strings.Contains(b.String(), want) {
		t.Fatalf("status:\n%s\nwant %q", b.String(), want)
	}
}

// Every duration flag reads like the config (issue 16): no wrap-around, no
// negative value, at most ten years; a bad one is a usage error (exit 2).
func TestDurationFlags(t *testing.T) {
	var d time.Duration
	v := &durationValue{d: &d, min: time.Second}
	for in, want := range map[string]time.Duration{"90s": 90 * time.Second, "1d": 24 * time.Hour, "3600": time.Hour} {
		if err := v.Set(in); err != nil || d != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"18446744074", "100000h", "-1h", "0", "500ms", "soon"} {
		if err := v.Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %v", in, d)
		}
	}
	for _, args := range [][]string{
		{"incident", "--ban-for", "100000h", "--once"},
		{"firewall", "apply", "--confirm-within", "-1m"},
	} {
		root := newRootCmd()
		root.SetArgs(args)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		err := root.Execute()
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), "is not a duration from") {
			t.Errorf("%v: %v, want a usage error about the duration", args, err)
		}
	}
}
