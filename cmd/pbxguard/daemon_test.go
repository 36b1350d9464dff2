package main

import (
	"bytes"
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
