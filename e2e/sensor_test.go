package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
)

// TestSensorAlwaysAuthReject: a PBX that answers every REGISTER and INVITE
// with 401 and logs nothing (testdata/registrar.py, Asterisk with
// alwaysauthreject=yes and no logging). Real sipvicious svmap, svwar and
// svcrack and a sipp INVITE flood attack it from their own namespaces: the
// sensor (NFLOG in the daemon's namespace) bans each of them though no log
// line exists, and their next packets are dropped in the kernel. A phone
// that mistypes once and then registers, and a carrier whose INVITEs are
// answered, are never banned.
func TestSensorAlwaysAuthReject(t *testing.T) {
	requireE2E(t, "nft", "svmap", "svwar", "svcrack", "sipp", "python3")
	pbx := newNetns(t, "spbx")
	type peer struct {
		name     string
		ns       *Netns
		pbxAddr  string
		addr     string
		attacker bool
	}
	peers := []*peer{
		{name: "svmap", pbxAddr: "203.0.113.1", addr: "203.0.113.2", attacker: true},
		{name: "svwar", pbxAddr: "203.0.113.5", addr: "203.0.113.6", attacker: true},
		{name: "svcrack", pbxAddr: "203.0.113.9", addr: "203.0.113.10", attacker: true},
		{name: "flood", pbxAddr: "203.0.113.13", addr: "203.0.113.14", attacker: true},
		{name: "guesser", pbxAddr: "203.0.113.17", addr: "203.0.113.18", attacker: true},
		{name: "phone", pbxAddr: "198.51.100.1", addr: "198.51.100.2"},
		{name: "carrier", pbxAddr: "198.51.100.5", addr: "198.51.100.6"},
	}
	for _, p := range peers {
		p.ns = newNetns(t, "s"+p.name[:3])
		link(t, p.ns, []string{p.addr + "/30"}, pbx, []string{p.pbxAddr + "/30"})
	}
	dir := t.TempDir()
	count := filepath.Join(dir, "registrar.count")
	reg := pbx.Command("python3", "testdata/registrar.py", "5060", "1002:s3cret-Phone", "198.51.100.6", count)
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	received := func() int {
		b, _ := os.ReadFile(count)
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	capture := filepath.Join(dir, "sensor.pcap")
	cfg := writeDaemonConfig(t, dir, daemonConfig{metrics: "127.0.0.1:9469", top: "sensor: {enabled: true, jail: asterisk, rate_per_source: 200/second, capture_file: " + capture + "}"})
	d := startDaemon(t, pbx, dir, cfg)
	// The sensor's table is loaded by its worker, beside the daemon's.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := pbx.Try("nft", "list", "table", "inet", "pbxguard_sensor"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sensor's table never appeared:\n%s", tail(d.out.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}

	banned := func(addr string) bool {
		for _, b := range d.bans() {
			if b.Addr == addr {
				return true
			}
		}
		return false
	}
	run := func(p *peer, limit time.Duration, name string, args ...string) string {
		t.Helper()
		cmd := p.ns.Command("timeout", append([]string{fmt.Sprint(int(limit.Seconds())), name}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // sipvicious keeps sessions in ~/.sipvicious
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	byName := map[string]*peer{}
	for _, p := range peers {
		byName[p.name] = p
	}

	// The phone first: one typo (401 to its credentials), then the right
	// password (200). The carrier: three calls answered 200.
	ph := byName["phone"]
	run(ph, 20, "sipp", "-nostdin", "-sf", "testdata/register.xml", "-s", "1002", "-au", "1002", "-ap", "typo", "-m", "1", "-i", ph.addr, "-timeout", "10s", ph.pbxAddr+":5060")
	run(ph, 20, "sipp", "-nostdin", "-sf", "testdata/register.xml", "-s", "1002", "-au", "1002", "-ap", "s3cret-Phone", "-m", "1", "-i", ph.addr, "-timeout", "10s", ph.pbxAddr+":5060")
	ca := byName["carrier"]
	run(ca, 30, "sipp", "-nostdin", "-sn", "uac", "-s", "5551000", "-m", "3", "-r", "3", "-d", "100", "-i", ca.addr, "-timeout", "20s", ca.pbxAddr+":5060")

	attacks := []struct {
		p    *peer
		tool string
		args []string
	}{
		{byName["svmap"], "svmap", []string{"-p", "5060", "-t", "0.2", byName["svmap"].pbxAddr}},
		{byName["svwar"], "svwar", []string{"-e", "100-130", "-m", "REGISTER", "-t", "0.2", byName["svwar"].pbxAddr}},
		{byName["svcrack"], "svcrack", []string{"-u", "1002", "-r", "1000-1030", "-t", "0.2", byName["svcrack"].pbxAddr}},
		// Password guessing with an ordinary User-Agent: each guess is a
		// challenge then credentials answered 401 — only the pairing of
		// request and answer shows it.
		{byName["guesser"], "sipp", []string{"-nostdin", "-sf", "testdata/register.xml", "-s", "1002", "-au", "1002", "-ap", "guess", "-r", "5", "-m", "20", "-i", byName["guesser"].addr, "-timeout", "15s", byName["guesser"].pbxAddr + ":5060"}},
		{byName["flood"], "sipp", []string{"-nostdin", "-sn", "uac", "-s", "011442079460349", "-r", "400", "-m", "1200", "-i", byName["flood"].addr, "-timeout", "8s", byName["flood"].pbxAddr + ":5060"}},
	}
	for _, a := range attacks {
		cmd := a.p.ns.Command("timeout", append([]string{"25", a.tool}, a.args...)...)
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // sipvicious keeps sessions in ~/.sipvicious
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d.waitBans(a.tool+" ("+a.p.addr+") banned by the sensor", 20*time.Second, func([]daemon.BanInfo) bool { return banned(a.p.addr) })
		t.Logf("%s from %s banned %.2fs after it started", a.tool, a.p.addr, time.Since(start).Seconds())
		cmd.Process.Signal(syscall.SIGTERM) // timeout(1) passes it on to the tool
		cmd.Wait()
		if testing.Verbose() {
			t.Logf("%s output (tail):\n%s", a.tool, tail(out.String(), 5))
		}
	}
	// Each ban is in the kernel, and the attacker's next datagram is
	// dropped before the registrar sees it.
	_, kernel := kernelCount(t, pbx, "nftables")
	for _, p := range peers {
		_, inKernel := kernel[p.addr+"/32"]
		if p.attacker != inKernel || p.attacker != banned(p.addr) {
			t.Errorf("%s (%s): banned=%v in kernel=%v, want %v", p.name, p.addr, banned(p.addr), inKernel, p.attacker)
		}
	}
	time.Sleep(300 * time.Millisecond)
	before := received()
	for _, p := range peers {
		if p.attacker {
			p.ns.Try("python3", "-c", fmt.Sprintf("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'OPTIONS sip:x@%s SIP/2.0\\r\\n\\r\\n', ('%s', 5060))", p.pbxAddr, p.pbxAddr))
		}
	}
	ph.ns.Try("python3", "-c", fmt.Sprintf("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'OPTIONS sip:x@%s SIP/2.0\\r\\n\\r\\n', ('%s', 5060))", ph.pbxAddr, ph.pbxAddr))
	time.Sleep(500 * time.Millisecond)
	if got := received() - before; got != 1 {
		t.Errorf("after the bans the registrar received %d probe datagrams, want 1 (the phone's only)", got)
	}
	for _, b := range d.bans() {
		t.Logf("ban %s: %s", b.Addr, b.Reason)
	}
	if !strings.Contains(d.out.String(), "sensor watching SIP") {
		t.Errorf("the daemon never said the sensor started")
	}
	// What the daemon's sensor made of the traffic, and what test-log makes
	// of the sensor's capture of the same packets: the same events.
	m := scrape(pbx, "127.0.0.1:9469")
	d.stop() // flushes the capture
	out, err := exec.Command(pbxguardBin, "test-log", "--json", capture).CombinedOutput()
	if err != nil {
		t.Fatalf("test-log on the capture: %v\n%s", err, out)
	}
	var tl struct {
		Lines  int            `json:"lines"`
		ByKind map[string]int `json:"by_kind"`
		ByAddr map[string]int `json:"by_addr"`
	}
	if err := json.Unmarshal(out, &tl); err != nil {
		t.Fatalf("test-log --json: %v\n%s", err, out)
	}
	for _, k := range []string{"auth_failure", "challenge_sent", "auth_success", "scan"} {
		live := int(m[`pbxguard_sensor_events_total{kind="`+k+`"}`])
		if tl.ByKind[k] != live {
			t.Errorf("%s: test-log on the capture found %d, the daemon's sensor %d", k, tl.ByKind[k], live)
		}
	}
	for _, p := range peers {
		if p.attacker && tl.ByAddr[p.addr] == 0 {
			t.Errorf("test-log on the capture: no failure from %s (%s)", p.addr, p.name)
		}
	}
	t.Logf("capture: %d packets; events %v", tl.Lines, tl.ByKind)
	// No log line was written for any of it.
	for _, f := range []string{"messages.log", "security.log"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() != 0 {
			t.Errorf("%s: %v (size %d): the test's premise is that nothing is logged", f, err, fi.Size())
		}
	}
}
