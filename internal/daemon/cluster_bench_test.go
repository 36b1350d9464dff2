package daemon

import (
	"context"
	"log/slog"
	"net/netip"
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
	srv, err := cluster.StartServer(cluster.ServerOptions{Listen: "127.0.0.1:-1", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateOrUpdateStream(ctx, cluster.StreamConfig(cluster.Options{})); err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range b.N {
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
	defer st.Close()
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
		if l := d.cluster.Load(); l != nil && l.node.Stats().Snapshot().Applied == uint64(b.N) {
			break
		}
		if time.Now().After(end) {
			b.Fatal("not all applied")
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "bans/s")
	b.StopTimer()
	cancel()
	<-done
}
