package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
)

// TestNotifyReadyAfterRestore plays systemd for a Type=notify start: the
// kernel lost pbxguard's table (a reboot), the store holds three bans, and
// READY=1 must reach $NOTIFY_SOCKET only when the kernel lists all three
// (Before=asterisk.service then means protected from the first packet).
// Its stderr is "the journal" ($JOURNAL_STREAM names it): every line has a
// <N> priority prefix and no timestamp of its own.
func TestNotifyReadyAfterRestore(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "notify")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{})
	first := startDaemon(t, ns, dir, cfg)
	addrs := []string{"203.0.113.7", "203.0.113.8", "198.51.100.66"}
	for _, a := range addrs {
		if out, code := first.cli("ban", a, "--for", "1h"); code != 0 {
			t.Fatalf("ban %s: exit %d\n%s", a, code, out)
		}
	}
	first.stop()
	ns.Run(t, "nft", "delete", "table", "inet", firewall.NftTable) // the reboot

	sockPath := filepath.Join(dir, "notify.sock")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	journal, err := os.Create(filepath.Join(dir, "journal.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(journal.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(pbxguardBin, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stdout, cmd.Stderr = journal, journal
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when the daemon has exited
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()

	buf := make([]byte, 512)
	notify.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := notify.Read(buf)
	if err != nil {
		log, _ := os.ReadFile(journal.Name())
		t.Fatalf("no READY=1: %v\n%s", err, log)
	}
	// What the daemon had logged when it said READY (the restore is logged
	// once the kernel took the bans), and the kernel, right now.
	logAtReady, _ := os.ReadFile(journal.Name())
	set := ns.Run(t, "nft", "list", "set", "inet", firewall.NftTable, firewall.NftSet4)
	if !strings.Contains(string(logAtReady), "kernel reconciled with the store") {
		t.Errorf("READY=1 came before the restore was done; the log then:\n%s", logAtReady)
	}
	if !strings.HasPrefix(string(buf[:n]), "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1", buf[:n])
	}
	for _, a := range addrs {
		if !strings.Contains(set, a) {
			t.Errorf("READY=1 sent while the kernel lacks %s:\n%s", a, set)
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	n, err = notify.Read(buf)
	if err != nil || string(buf[:n]) != "STOPPING=1" {
		t.Errorf("at SIGTERM: %q %v, want STOPPING=1", buf[:n], err)
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop on SIGTERM")
	}
	log, _ := os.ReadFile(journal.Name())
	lines := strings.Split(strings.TrimRight(string(log), "\n"), "\n")
	prio := regexp.MustCompile(`^<[0-7]>`)
	sawRestore := false
	for _, l := range lines {
		if !prio.MatchString(l) || strings.Contains(l, "time=") || strings.Contains(l, "level=") {
			t.Errorf("not a journal line (priority prefix, no timestamp, no level word): %q", l)
		}
		if strings.HasPrefix(l, "<6>kernel reconciled with the store") && strings.Contains(l, "restored=3") {
			sawRestore = true
		}
	}
	if !sawRestore {
		t.Errorf("no <6> restore line in:\n%s", log)
	}
}
