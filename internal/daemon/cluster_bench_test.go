package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pbxguard/pbxguard/internal/cluster"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/store"
)

// BenchmarkClusterApply: remote bans one node applies per second, from a
// stream already holding b.N bans of another node to all of them applied
// (the in-memory backend stands for the kernel; the store is real).
func BenchmarkClusterApply(b *testing.B) {
	_, stop := clusterApply(b, b.N)
	stop()
}

// BenchmarkClusterApply100k: 100,000 remote bans of another node applied
// by one daemon; reports the time for all of them and the memory the
// daemon holds afterwards (heap in use after a GC, and the process RSS,
// which includes the in-process NATS server of the benchmark).
// go test -run XXX -bench ClusterApply100k -benchtime 1x ./internal/daemon/
func BenchmarkClusterApply100k(b *testing.B) {
	const n = 100_000
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, stop := clusterApply(b, n)
	took := time.Since(start)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(took.Seconds(), "s-publish+apply")
	b.ReportMetric(float64(after.HeapInuse)/(1<<20), "heap-MB")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, "heap-B/ban")
	if rss := vmRSS(); rss > 0 {
		b.ReportMetric(float64(rss)/(1<<20), "rss-MB")
	}
	stop()
}

func vmRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// clusterApply publishes n bans of another node, starts a daemon with the
// cluster worker and waits until it applied them all; stop ends it.
func clusterApply(b *testing.B, n int) (*Daemon, func()) {
	srv, err := cluster.StartServer(cluster.ServerOptions{Listen: "127.0.0.1:-1", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, cluster.StreamConfig(cluster.Options{})); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		a := netip.AddrFrom4([4]byte{10 + byte(i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		data, err := cluster.Encode(cluster.Ban{Op: cluster.OpBan, Prefix: netip.PrefixFrom(a, 32), Jail: "asterisk", Origin: "other", At: now, Until: now.Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(cluster.Subject("other"), data); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()

	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cc := config.DefaultCluster()
	cc.Enabled, cc.Node, cc.NATS.URLs = true, "me", []string{srv.ClientURL()}
	w, _ := clusterWorker(cc, slog.New(slog.DiscardHandler))
	d, err := New(Options{Store: st, Backend: newFakeBackend(), Workers: []Worker{*w}})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	for end := time.Now().Add(5 * time.Minute); ; time.Sleep(time.Millisecond) {
		if l := d.cluster.Load(); l != nil && l.node.Stats().Snapshot().Applied == uint64(n) {
			break
		}
		if time.Now().After(end) {
			b.Fatal("not all applied")
		}
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "bans/s")
	return d, func() {
		b.StopTimer()
		cancel()
		<-done
		st.Close()
		nc.Close()
		srv.Shutdown()
	}
}
