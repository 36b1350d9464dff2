package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
)

// TestSecondInstanceTouchesNothing: a second `pbxguard run` on the same
// state directory exits 3 naming the PID of the first, before it opens the
// store or the kernel backend. Before the lock came first, the second
// daemon reconciled the kernel with the store (deleting every entry the
// store does not know, here 198.51.100.9) and only then refused.
func TestSecondInstanceTouchesNothing(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "inst")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{})
	first := startDaemon(t, ns, dir, cfg)
	if out, code := first.cli("ban", "203.0.113.7", "--for", "1h"); code != 0 {
		t.Fatalf("ban: exit %d\n%s", code, out)
	}
	// An entry the store does not know: a reconcile would delete it.
	ns.Run(t, "nft", "add", "element", "inet", firewall.NftTable, firewall.NftSet4, "{ 198.51.100.9 timeout 1h }")
	elements := func() string {
		out := ns.Run(t, "nft", "list", "set", "inet", firewall.NftTable, firewall.NftSet4)
		var got []string
		for _, a := range []string{"203.0.113.7", "198.51.100.9"} {
			if strings.Contains(out, a) {
				got = append(got, a)
			}
		}
		return strings.Join(got, " ")
	}
	before := elements()
	if before != "203.0.113.7 198.51.100.9" {
		t.Fatalf("kernel set before the second start: %q", before)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, pbxguardBin, "run", "--config", cfg)
	out, err := second.CombinedOutput()
	if after := elements(); after != before {
		t.Fatalf("kernel set after the second start: %q, want %q (untouched)", after, before)
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 {
		t.Fatalf("second run: %v, want exit 3\n%s", err, out)
	}
	want := fmt.Sprintf("another pbxguard (PID %d) is already running on this state directory: it holds %s",
		first.cmd.Process.Pid, filepath.Join(dir, "state", "pbxguard.lock"))
	if !strings.Contains(string(out), want) {
		t.Fatalf("second run says:\n%s\nwant %q", out, want)
	}
	if strings.Contains(string(out), "kernel reconciled") || strings.Contains(string(out), "nftables: ready") {
		t.Fatalf("the second daemon touched the kernel:\n%s", out)
	}
	// The first one runs on, undisturbed.
	if st := first.status(); st.ActiveBans != 1 {
		t.Fatalf("first daemon: %d active bans, want 1", st.ActiveBans)
	}
}
