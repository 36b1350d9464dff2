package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pbxguard/pbxguard/internal/cluster"
	"github.com/pbxguard/pbxguard/internal/daemon"
)

// TestClusterEmbeddedServer: `pbxguard cluster serve` in its own namespace
// and three daemons in theirs, each with nftables and its own link to the
// NATS namespace. An attacker that fails on node1 is in node2's kernel set;
// node3, whose allowlist holds it, never bans it; forged messages are
// rejected and counted; the propagation delay of 200 bans is measured.
func TestClusterEmbeddedServer(t *testing.T) {
	requireE2E(t, "nft")
	nsN := newNetns(t, "nats")
	var nodes []*Netns
	var urls []string
	for i := range 3 {
		ns := newNetns(t, fmt.Sprintf("node%d", i+1))
		link(t, nsN, []string{fmt.Sprintf("192.0.2.%d/30", 4*i+1)}, ns, []string{fmt.Sprintf("192.0.2.%d/30", 4*i+2)})
		nodes = append(nodes, ns)
		urls = append(urls, fmt.Sprintf("nats://192.0.2.%d:4222", 4*i+1))
	}

	// The embedded server.
	srvOut := &syncBuffer{}
	srv := nsN.Command(pbxguardBin, "cluster", "serve", "--listen", "0.0.0.0:4222", "--store", t.TempDir())
	srv.Stdout, srv.Stderr = srvOut, srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan struct{})
	go func() { srv.Wait(); close(srvDone) }()
	t.Cleanup(func() {
		srv.Process.Signal(syscall.SIGTERM)
		select {
		case <-srvDone:
		case <-time.After(10 * time.Second):
			srv.Process.Kill()
			<-srvDone
		}
	})

	// A client of the test itself, inside the NATS namespace, for the
	// forged messages.
	var nc *nats.Conn
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		err := inNetns(t, nsN.Name, func() error {
			var err error
			nc, err = nats.Connect("nats://127.0.0.1:4222", nats.Timeout(time.Second))
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("cluster serve not answering: %v\n%s", err, srvOut.String())
		}
	}
	defer nc.Close()

	var ds []*daemonProc
	var cfgs []string
	for i, ns := range nodes {
		dir := t.TempDir()
		top := fmt.Sprintf("cluster:\n  node: node%d\n  nats: {urls: [%s]}\n", i+1, urls[i])
		if i == 2 {
			top += "allowlist: [203.0.113.0/24]\n"
		}
		cfg := writeDaemonConfig(t, dir, daemonConfig{metrics: "127.0.0.1:9469", top: top})
		cfgs = append(cfgs, cfg)
		ds = append(ds, startDaemon(t, ns, dir, cfg))
	}
	metric := func(i int, name string) float64 {
		t.Helper()
		body := fetchMetrics(t, nodes[i], "http://127.0.0.1:9469/metrics")
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return 0
	}
	waitMetric := func(i int, name string, want float64) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if got := metric(i, name); got == want {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("node%d: %s = %v, want %v\n%s", i+1, name, metric(i, name), want, tail(ds[i].out.String(), 20))
			}
		}
	}
	// Every node's consumer is up before the attack (not needed for
	// correctness, a late node catches up, but it keeps the timing honest).
	for i := range ds {
		for end := time.Now().Add(10 * time.Second); !strings.Contains(ds[i].out.String(), "cluster: sharing bans"); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("node%d did not join the cluster:\n%s", i+1, tail(ds[i].out.String(), 20))
			}
		}
	}

	// 1. The attacker fails on node1 only.
	corpus := filepath.Join(corpusDir(t), "asterisk-20", "log", "messages")
	appendLines(t, filepath.Join(ds[0].dir, "messages.log"), corpusLines(t, corpus, "203.0.113.101", "203.0.113.66", "Failed to authenticate", 6)...)
	ds[0].waitBans("node1 bans the attacker", 5*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "203.0.113.66/32") })
	bans := ds[1].waitBans("node2 applies node1's ban", 10*time.Second, func(b []daemon.BanInfo) bool { return hasBan(b, "203.0.113.66/32") })
	for _, b := range bans {
		if b.Prefix == "203.0.113.66/32" && !strings.HasPrefix(b.Reason, "cluster node1: ") {
			t.Fatalf("node2's ban does not name its origin: %+v", b)
		}
	}
	if _, kernel := kernelCount(t, nodes[1], "nftables"); kernel["203.0.113.66/32"] <= 0 {
		t.Fatalf("node2's kernel set lacks the attacker: %v", sortedKeys(kernel))
	}
	// 2. node3 allowlists it: refused, counted, never in its kernel.
	waitMetric(2, `pbxguard_cluster_skipped_total{why="allowlisted"}`, 1)
	if n, kernel := kernelCount(t, nodes[2], "nftables"); n != 0 {
		t.Fatalf("node3 (allowlist 203.0.113.0/24) holds %v", sortedKeys(kernel))
	}
	if b := ds[2].bans(); len(b) != 0 {
		t.Fatalf("node3 bans %+v", b)
	}
	// node1 does not apply its own message; node2 does not publish it again.
	waitMetric(0, `pbxguard_cluster_skipped_total{why="own"}`, 1)
	if got := metric(1, "pbxguard_cluster_published_total"); got != 0 {
		t.Fatalf("node2 published %v messages; remote bans must not be shared again", got)
	}

	// 3. Forged messages straight into NATS.
	now := time.Now()
	good, err := cluster.Encode(cluster.Ban{Op: cluster.OpBan, Prefix: netip.MustParsePrefix("203.0.113.77/32"), Jail: "asterisk",
		Origin: "node1", At: now, Until: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	wide := []byte(strings.Replace(string(good), "203.0.113.77/32", "0.0.0.0/0", 1))
	for _, m := range []struct {
		subject string
		data    []byte
	}{
		{cluster.Subject("mallory"), good}, // node1's ban on another node's subject
		{cluster.Subject("node1"), wide},   // everything
		{cluster.Subject("node1"), []byte(`{"v":1,"op":"ban","prefix":"203.0.113.78/32"` + strings.Repeat(" ", 4000) + `}`)},
	} {
		if err := nc.Publish(m.subject, m.data); err != nil {
			t.Fatal(err)
		}
	}
	nc.Flush()
	waitMetric(1, `pbxguard_cluster_rejected_total{reason="origin"}`, 1)
	waitMetric(1, `pbxguard_cluster_rejected_total{reason="prefix"}`, 1)
	if _, kernel := kernelCount(t, nodes[1], "nftables"); kernel["203.0.113.77/32"] > 0 || kernel["0.0.0.0/0"] > 0 || kernel["203.0.113.78/32"] > 0 {
		t.Fatalf("a forged ban reached node2's kernel: %v", sortedKeys(kernel))
	}

	// 4. Propagation delay: 200 bans on node1, 5 ms apart.
	const n = 200
	c1 := daemon.NewClient(ds[0].sock)
	ctx := context.Background()
	for i := range n {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + i)}), 32)
		if i >= 250 {
			t.Fatal("too many")
		}
		if _, err := c1.Ban(ctx, p, time.Hour, "manual", "e2e delay"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	re := regexp.MustCompile(`remote ban applied".* prefix=(198\.51\.100\.\d+/32) .*delay_us=(\d+)`)
	var delays []float64
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		delays = delays[:0]
		for _, m := range re.FindAllStringSubmatch(ds[1].out.String(), -1) {
			us, _ := strconv.ParseFloat(m[2], 64)
			delays = append(delays, us/1000)
		}
		if len(delays) >= n {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("node2 applied %d of %d bans", len(delays), n)
		}
	}
	if k, kernel := kernelCount(t, nodes[1], "nftables"); k != n+1 {
		t.Fatalf("node2's kernel holds %d entries, want %d: %v", k, n+1, sortedKeys(kernel))
	}
	slices.Sort(delays)
	pct := func(p float64) float64 { return delays[min(len(delays)-1, int(p*float64(len(delays))))] }
	t.Logf("propagation delay node1 -> node2 (origin ban -> node2 kernel), %d bans: p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		len(delays), pct(0.50), pct(0.99), delays[len(delays)-1])

	// 5. A burst: 200 IPv6 attackers (one /64 each) fail on node1 at once.
	base := corpusLines(t, corpus, "2001:db8:203::bad:66", "ATTACKER", "Failed to authenticate", 5)
	var burst []string
	for i := range n {
		for _, l := range base {
			burst = append(burst, strings.ReplaceAll(l, "ATTACKER", fmt.Sprintf("2001:db8:77:%x::1", i+1)))
		}
	}
	appendLines(t, filepath.Join(ds[0].dir, "messages.log"), burst...)
	re6 := regexp.MustCompile(`remote ban applied".* prefix=(2001:db8:77:[0-9a-f]+::/64) .*delay_us=(\d+)`)
	var burstDelays []float64
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		burstDelays = burstDelays[:0]
		for _, m := range re6.FindAllStringSubmatch(ds[1].out.String(), -1) {
			us, _ := strconv.ParseFloat(m[2], 64)
			burstDelays = append(burstDelays, us/1000)
		}
		if len(burstDelays) >= n {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("node2 applied %d of the %d burst bans", len(burstDelays), n)
		}
	}
	if k, kernel := kernelCount(t, nodes[1], "nftables"); k != 2*n+1 {
		t.Fatalf("node2's kernel holds %d entries, want %d: %v", k, 2*n+1, sortedKeys(kernel))
	}
	slices.Sort(burstDelays)
	t.Logf("propagation delay, burst of %d attackers decided by node1's jail together: p50 %.2f ms, p99 %.2f ms, max %.2f ms",
		len(burstDelays), burstDelays[len(burstDelays)/2], burstDelays[min(len(burstDelays)-1, len(burstDelays)*99/100)], burstDelays[len(burstDelays)-1])

	// 6. cluster status, from node2's namespace.
	out, err := nodes[1].Command(pbxguardBin, "cluster", "status", "--json", "-c", cfgs[1]).Output()
	if err != nil {
		t.Fatalf("cluster status: %v\n%s", err, out)
	}
	var rep cluster.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("cluster status --json: %v\n%s", err, out)
	}
	var n1 *cluster.NodeReport
	for i := range rep.Nodes {
		if rep.Nodes[i].Node == "node1" {
			n1 = &rep.Nodes[i]
		}
	}
	// The stream holds the attacker's ban, the 2×200, and the two forged
	// messages NATS accepted (the 4 KB one is over the stream's
	// max_msg_size and was never stored): rejection is the nodes' job.
	if !rep.Connected || n1 == nil || n1.Messages != 2*n+2 || rep.Messages != 2*n+3 || rep.Lag != 0 || rep.Outbox == nil || *rep.Outbox != 0 {
		t.Fatalf("cluster status: %s", out)
	}
}
