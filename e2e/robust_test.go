package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
)

// sigterm stops the daemon with SIGTERM and returns how long it took to
// exit and its exit code (fails the test past limit).
func (d *daemonProc) sigterm(limit time.Duration) (time.Duration, int) {
	d.t.Helper()
	t0 := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(limit):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Fatalf("daemon still running %v after SIGTERM:\n%s", limit, tail(d.out.String(), 30))
	}
	return time.Since(t0), d.cmd.ProcessState.ExitCode()
}

// attackLines are n distinct attackers, one PJSIP failure each, stamped now.
func attackLines(n int) ([]string, []string) {
	stamp := time.Now().Format("Jan _2 15:04:05")
	var lines, prefixes []string
	add := func(host, prefix string) {
		lines = append(lines, fmt.Sprintf("[%s] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '\"1000\" <sip:1000@192.0.2.1>' failed for '%s:5060' (callid: %d) - No matching endpoint found", stamp, host, len(lines)))
		prefixes = append(prefixes, prefix)
	}
	for _, base := range []string{"192.0.2.", "198.51.100.", "203.0.113."} {
		for i := 1; i <= 254 && len(lines) < n; i++ {
			a := fmt.Sprintf("%s%d", base, i)
			add(a, a+"/32")
		}
	}
	a := netip.MustParseAddr("2001:db8:99::1")
	for len(lines) < n {
		add("["+a.String()+"]", a.String()+"/128")
		a = a.Next()
	}
	return lines, prefixes
}

// TestRobustFIFO: a FIFO at one followed path (opening it for reading
// blocks until a writer comes) does not stop the other file from banning,
// status and /metrics show that source failing, and SIGTERM finishes in
// bounded time (today the daemon hangs at start or at SIGTERM).
func TestRobustFIFO(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "fifo")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "security.log")
	if err := syscall.Mkfifo(fifo, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := writeDaemonConfig(t, dir, daemonConfig{maxretry: 1, metrics: "127.0.0.1:9481", top: "audit: {enabled: false}"})
	d := startDaemon(t, ns, dir, cfg)

	lines, prefixes := attackLines(20)
	appendLines(t, filepath.Join(dir, "messages.log"), lines...)
	d.waitBans("20 bans from messages.log", 20*time.Second, func(b []daemon.BanInfo) bool { return len(b) == 20 })
	n, kernel := kernelCount(t, ns, "nftables")
	for _, p := range prefixes {
		if _, ok := kernel[p]; !ok {
			t.Fatalf("%s not in the kernel (kernel holds %d)", p, n)
		}
	}
	var fifoState, msgState daemon.SourceStatus
	for _, j := range d.status().Jails {
		for _, s := range j.SourceStates {
			switch s.Name {
			case fifo:
				fifoState = s
			case filepath.Join(dir, "messages.log"):
				msgState = s
			}
		}
	}
	if fifoState.State != "failing" || !strings.Contains(fifoState.Error, "FIFO") || msgState.State != "ok" {
		t.Fatalf("source states: FIFO %+v, messages.log %+v", fifoState, msgState)
	}
	if out, _ := d.cli("status"); !strings.Contains(out, "FAILING") || !strings.Contains(out, fifo) {
		t.Fatalf("status text does not show the failing source:\n%s", out)
	}
	m := fetchMetrics(t, ns, "http://127.0.0.1:9481/metrics")
	up := fmt.Sprintf(`pbxguard_source_up{jail="asterisk",source=%q} 0`, fifo)
	if !strings.Contains(m, up) {
		t.Fatalf("metrics lack %s", up)
	}
	took, code := d.sigterm(20 * time.Second)
	t.Logf("SIGTERM with a FIFO at a followed path: exited %d after %v", code, took.Round(time.Millisecond))
	if took > 8*time.Second || code != 0 {
		t.Fatalf("SIGTERM took %v (want ≤ 5 s, 8 s tolerated), exit %d", took, code)
	}
}

// TestRobustStoreFull: the state directory is a tiny tmpfs (4 MiB), filled up
// while 2,000 attackers are banned. The bans reach the kernel; the store
// errors show in status; the daemon is stopped while the disk is still
// full. After freeing space and restarting, every ban decided is in the
// kernel and in the store (their lines were read again: positions never
// moved past them).
func TestRobustStoreFull(t *testing.T) {
	requireE2E(t, "nft", "mount", "umount")
	ns := newNetns(t, "storefull")
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "pbxguard-e2e", state)
	t.Cleanup(func() { exec.Command("umount", "-l", state).Run() })
	cfg := writeDaemonConfig(t, dir, daemonConfig{maxretry: 1, jail: "    ipv6_prefix: 128", top: "audit: {enabled: false}"})
	d := startDaemon(t, ns, dir, cfg)
	time.Sleep(1500 * time.Millisecond) // the starting positions are saved

	filler := filepath.Join(state, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for range 4096 {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	const total = 2000
	lines, prefixes := attackLines(total)
	appendLines(t, filepath.Join(dir, "messages.log"), lines...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, _ := kernelCount(t, ns, "nftables")
		if n == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kernel holds %d of %d bans with the store full:\n%s", n, total, tail(d.out.String(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitStatus := func(what string, cond func(daemon.StoreStatus) bool) daemon.StoreStatus {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			s := d.status().Store
			if cond(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("store status %+v: waited for %s", s, what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	s := waitStatus("the store failing", func(s daemon.StoreStatus) bool { return !s.OK && s.Errors > 0 && s.PendingBans > 0 })
	t.Logf("store full: %+v", s)
	if out, _ := d.cli("status"); !strings.Contains(out, "STORE FAILING") {
		t.Fatalf("status text does not show the store failing:\n%s", out)
	}
	took, code := d.sigterm(20 * time.Second)
	t.Logf("SIGTERM with the store full: exited %d after %v", code, took.Round(time.Millisecond))
	if took > 8*time.Second {
		t.Fatalf("SIGTERM took %v with the store full", took)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d2 := startDaemon(t, ns, dir, cfg)
	d2.waitBans(fmt.Sprintf("%d bans after the restart", total), 60*time.Second, func(b []daemon.BanInfo) bool { return len(b) == total })
	deadline = time.Now().Add(10 * time.Second)
	for {
		n, kernel := kernelCount(t, ns, "nftables")
		missing := 0
		for _, p := range prefixes {
			if _, ok := kernel[p]; !ok {
				missing++
			}
		}
		if missing == 0 && n == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart the kernel misses %d of %d decided bans (holds %d)", missing, total, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := d2.status().Store; !s.OK {
		t.Fatalf("store after restart: %+v", s)
	}
}

// TestRobustRestartLoss: lines written while the daemon is down are read
// after its restart, even when no line was read before it stopped (today
// no position is stored until a line is read, and the restart seeks to
// the end); and at the first start the lines within findtime are read
// back, so attacks logged just before installation count.
func TestRobustRestartLoss(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "restartloss")
	dir := t.TempDir()
	msgs := filepath.Join(dir, "messages.log")
	corpus := filepath.Join(corpusDir(t), "asterisk-20", "log", "messages")
	// Before the first start: an old attack (hours ago: not read back) and
	// a recent one (2 minutes ago: within findtime 10m).
	old := corpusLines(t, corpus, "203.0.113.101", "203.0.113.60", "Failed to authenticate", 5)
	recent := corpusLines(t, corpus, "203.0.113.101", "203.0.113.61", "Failed to authenticate", 5)
	for i := range old {
		old[i] = stampRE.ReplaceAllString(old[i], "["+time.Now().Add(-3*time.Hour).Format("Jan _2 15:04:05")+"]")
		recent[i] = stampRE.ReplaceAllString(recent[i], "["+time.Now().Add(-2*time.Minute).Format("Jan _2 15:04:05")+"]")
	}
	if err := os.WriteFile(msgs, []byte(strings.Join(append(old, recent...), "\n")+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := writeDaemonConfig(t, dir, daemonConfig{top: "audit: {enabled: false}"})
	d := startDaemon(t, ns, dir, cfg)
	d.waitBans("the attack of 2 minutes before the start", 10*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "203.0.113.61/32") })
	if hasBan(d.bans(), "203.0.113.60/32") {
		t.Fatal("an attack 3 hours old was read back (findtime is 10m)")
	}
	time.Sleep(1500 * time.Millisecond) // positions saved
	if _, code := d.sigterm(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}

	// Down: an attack is logged (stamped now, as while pbxguard restarts).
	appendLines(t, msgs, corpusLines(t, corpus, "203.0.113.101", "203.0.113.62", "Failed to authenticate", 5)...)
	d2 := startDaemon(t, ns, dir, cfg)
	d2.waitBans("the attack written while down", 10*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "203.0.113.62/32") })

	// The same for a security.log that the daemon never read a line of:
	// its starting position is stored at once.
	if _, code := d2.sigterm(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	sec := filepath.Join(corpusDir(t), "asterisk-20", "log", "security")
	secLines := corpusLines(t, sec, "203.0.113.101", "203.0.113.63", "ChallengeResponseFailed", 5)
	appendLines(t, filepath.Join(dir, "security.log"), secLines...)
	d3 := startDaemon(t, ns, dir, cfg)
	d3.waitBans("the security.log attack written while down", 10*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "203.0.113.63/32") })
	if n, k := kernelCount(t, ns, "nftables"); n != 3 {
		t.Fatalf("kernel = %v", sortedKeys(k))
	}
}

// TestRobustReloadIdleClient: a control-socket client that connects and
// says nothing neither holds a SIGHUP reload (today: its whole read
// deadline, a minute, with no source running) nor makes the reload lose
// the lines written meanwhile to a file the daemon had not read a line of.
func TestRobustReloadIdleClient(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "reloadidle")
	dir := t.TempDir()
	msgs := filepath.Join(dir, "messages.log")
	corpus := filepath.Join(corpusDir(t), "asterisk-20", "log", "messages")
	old := corpusLines(t, corpus, "203.0.113.101", "203.0.113.70", "Failed to authenticate", 5)
	for i := range old {
		old[i] = stampRE.ReplaceAllString(old[i], "["+time.Now().Add(-3*time.Hour).Format("Jan _2 15:04:05")+"]")
	}
	if err := os.WriteFile(msgs, []byte(strings.Join(old, "\n")+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := writeDaemonConfig(t, dir, daemonConfig{top: "audit: {enabled: false}"})
	d := startDaemon(t, ns, dir, cfg)
	time.Sleep(1500 * time.Millisecond) // positions saved

	idle, err := net.Dial("unix", d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	t0 := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(d.out.String(), "reload: stopping to apply the new configuration") {
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("reload not started:\n%s", tail(d.out.String(), 20))
		}
		time.Sleep(5 * time.Millisecond)
	}
	appendLines(t, msgs, corpusLines(t, corpus, "203.0.113.101", "203.0.113.71", "Failed to authenticate", 5)...)
	for !strings.Contains(d.out.String(), "reload: new configuration applied") {
		if time.Since(t0) > 20*time.Second {
			t.Fatalf("reload not applied 20 s after SIGHUP with an idle client:\n%s", tail(d.out.String(), 20))
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(t0)
	t.Logf("SIGHUP reload with an idle control client: applied after %v", took.Round(time.Millisecond))
	if took > 8*time.Second {
		t.Fatalf("reload took %v (want ≤ 5 s, 8 s tolerated)", took)
	}
	d.waitReady(10 * time.Second)
	d.waitBans("the attack written during the reload", 10*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "203.0.113.71/32") })
	if hasBan(d.bans(), "203.0.113.70/32") {
		t.Fatal("the old attack (3 h) was banned")
	}
}

// TestRobustCorruptStore: the store file is damaged while the daemon is
// down (today the next start exits: no protection at all). The daemon
// starts, moves the file aside, adopts the kernel's 50 bans with their
// remaining time, and says so in its log, status and /metrics.
func TestRobustCorruptStore(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "corrupt")
	dir := t.TempDir()
	cfg := writeDaemonConfig(t, dir, daemonConfig{maxretry: 1, metrics: "127.0.0.1:9482", jail: "    ipv6_prefix: 128", top: "audit: {enabled: false}"})
	d := startDaemon(t, ns, dir, cfg)
	const total = 50
	lines, prefixes := attackLines(total)
	appendLines(t, filepath.Join(dir, "messages.log"), lines...)
	d.waitBans("50 bans", 20*time.Second, func(b []daemon.BanInfo) bool { return len(b) == total })
	if _, code := d.sigterm(20 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	db := filepath.Join(dir, "state", "pbxguard.db")
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(db, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(db + "-wal")
	os.Remove(db + "-shm")

	d2 := startDaemon(t, ns, dir, cfg)
	bans := d2.bans()
	n, kernel := kernelCount(t, ns, "nftables")
	if len(bans) != total || n != total {
		t.Fatalf("after the corrupt start: %d bans listed, kernel holds %d; want %d", len(bans), n, total)
	}
	for _, b := range bans {
		if b.Remaining < 500 || b.Remaining > 600 || b.Jail != "recovered" {
			t.Fatalf("adopted ban %+v: want ~10 min left, jail recovered", b)
		}
	}
	for _, p := range prefixes {
		if _, ok := kernel[p]; !ok {
			t.Fatalf("%s left the kernel", p)
		}
	}
	st := d2.status().Store
	if !strings.HasPrefix(st.Recovered, db+".corrupt-") {
		t.Fatalf("status store = %+v", st)
	}
	if got, err := os.ReadFile(st.Recovered); err != nil || len(got) != len(garbage) {
		t.Fatalf("the corrupt file was not kept at %s: %v", st.Recovered, err)
	}
	if !loggedError(d2.out.String(), "STORE WAS CORRUPT") {
		t.Fatalf("not said loudly:\n%s", tail(d2.out.String(), 20))
	}
	if out, _ := d2.cli("status"); !strings.Contains(out, "STORE WAS CORRUPT") {
		t.Fatalf("status text:\n%s", out)
	}
	if m := fetchMetrics(t, ns, "http://127.0.0.1:9482/metrics"); !strings.Contains(m, "pbxguard_store_recovered 1") {
		t.Fatal("metrics lack pbxguard_store_recovered 1")
	}
}

// loggedError reports whether a log line at level ERROR contains msg.
func loggedError(log, msg string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, msg) && strings.Contains(l, "ERROR") {
			return true
		}
	}
	return false
}
