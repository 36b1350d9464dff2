package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/cluster"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/store"
)

type clusterPeer struct {
	d  *Daemon
	fw *fakeBackend
	st *store.Store
}

func startPeer(t *testing.T, url, node string, allow []netip.Prefix, share []string) clusterPeer {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cc := config.DefaultCluster()
	cc.Enabled, cc.Node, cc.NATS.URLs, cc.Share, cc.MaxBanTime = true, node, []string{url}, share, 2*time.Hour
	w, err := clusterWorker(cc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fw := newFakeBackend()
	allowed := func(p netip.Prefix) (netip.Prefix, bool) {
		for _, a := range allow {
			if a.Overlaps(p) {
				return a, true
			}
		}
		return netip.Prefix{}, false
	}
	jails := []JailSpec{
		{Name: "asterisk", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}}, BanTime: time.Hour},
		{Name: "sshd", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}}, BanTime: time.Hour},
	}
	d, err := New(Options{Store: st, Backend: fw, Allowed: allowed, Jails: jails, Workers: []Worker{*w}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "cluster link", func() bool { return d.cluster.Load() != nil })
	return clusterPeer{d: d, fw: fw, st: st}
}

func TestClusterBanPropagatesThroughBanPath(t *testing.T) {
	srv, err := cluster.StartServer(cluster.ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	a := startPeer(t, srv.ClientURL(), "pbx-a", nil, nil)
	b := startPeer(t, srv.ClientURL(), "pbx-b", nil, nil)
	c := startPeer(t, srv.ClientURL(), "pbx-c", []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, nil)
	ctx := context.Background()
	if _, err := a.d.Ban(ctx, netip.MustParsePrefix("203.0.113.77/32"), 24*time.Hour, "asterisk", "5 failures"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's kernel holds a's ban", func() bool { _, ok := b.fw.has("203.0.113.77/32"); return ok })
	left, _ := b.fw.has("203.0.113.77/32")
	if left > 2*time.Hour || left < time.Hour {
		t.Fatalf("remote ban lasts %s on b; max_bantime is 2h", left)
	}
	row, ok, err := b.st.Ban(ctx, netip.MustParsePrefix("203.0.113.77/32"))
	if err != nil || !ok || row.Reason != "cluster pbx-a: 5 failures" || row.Jail != "asterisk" {
		t.Fatalf("b's stored ban %+v %v %v: want the origin node in the reason", row, ok, err)
	}
	// c allowlists the /24: never in its kernel, counted.
	var cl *clusterLink
	waitFor(t, "c refuses the ban", func() bool {
		cl = c.d.cluster.Load()
		return cl != nil && cl.node.Stats().Snapshot().Allowlisted == 1
	})
	if _, ok := c.fw.has("203.0.113.77/32"); ok {
		t.Fatal("allowlisted address banned on c by a remote ban")
	}
	// b does not publish the remote ban again.
	time.Sleep(100 * time.Millisecond)
	if n := b.d.cluster.Load().node.Stats().Snapshot().Published; n != 0 {
		t.Fatalf("b published %d messages; a remote ban must not be shared again", n)
	}
	// A local ban on b outlives an unban from a; a's unban lifts its own.
	if _, err := a.d.Unban(ctx, netip.MustParsePrefix("203.0.113.77/32")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b lifts the ban", func() bool { _, ok := b.fw.has("203.0.113.77/32"); return !ok })
}

func TestClusterShareFilter(t *testing.T) {
	srv, err := cluster.StartServer(cluster.ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	a := startPeer(t, srv.ClientURL(), "pbx-a", nil, []string{"sshd"})
	b := startPeer(t, srv.ClientURL(), "pbx-b", nil, nil)
	ctx := context.Background()
	if _, err := a.d.Ban(ctx, netip.MustParsePrefix("198.51.100.1/32"), time.Hour, "asterisk", "not shared"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.d.Ban(ctx, netip.MustParsePrefix("198.51.100.2/32"), time.Hour, "sshd", "shared"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b gets the sshd ban", func() bool { _, ok := b.fw.has("198.51.100.2/32"); return ok })
	if _, ok := b.fw.has("198.51.100.1/32"); ok {
		t.Fatal("a ban of a jail not in share reached b")
	}
	if st := a.d.cluster.Load().node.Stats().Snapshot(); st.Published != 1 {
		t.Fatalf("a published %d; want 1", st.Published)
	}
}

// TestClusterOutboxInStore: NATS unreachable, the daemon bans at once (the
// kernel never waits) and, when it stops, the message waits in the store.
func TestClusterOutboxInStore(t *testing.T) {
	probe, err := cluster.StartServer(cluster.ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	url := probe.ClientURL()
	probe.Shutdown()
	probe.WaitForShutdown()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cc := config.DefaultCluster()
	cc.Enabled, cc.Node, cc.NATS.URLs = true, "pbx-a", []string{url}
	w, err := clusterWorker(cc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fw := newFakeBackend()
	d, err := New(Options{Store: st, Backend: fw, Workers: []Worker{*w}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "cluster link", func() bool { return d.cluster.Load() != nil })
	if _, err := d.Ban(context.Background(), netip.MustParsePrefix("192.0.2.44/32"), time.Hour, "manual", ""); err != nil {
		t.Fatal(err)
	}
	if _, ok := fw.has("192.0.2.44/32"); !ok {
		t.Fatal("the kernel ban waited for NATS")
	}
	mfs, err := d.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"pbxguard_cluster_published_total", "pbxguard_cluster_received_total", "pbxguard_cluster_applied_total",
		"pbxguard_cluster_rejected_total", "pbxguard_cluster_outbox_length", "pbxguard_cluster_propagation_seconds"} {
		if !names[n] {
			t.Errorf("metric %s missing", n)
		}
	}
	cancel()
	<-done
	ob, err := st.Outbox(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := ob.Load(context.Background())
	if err != nil || len(msgs) != 1 {
		t.Fatalf("saved outbox: %d messages, %v; want the one ban", len(msgs), err)
	}
	b, err := cluster.Decode(cluster.Subject("pbx-a"), msgs[0], time.Now())
	if err != nil || b.Prefix != netip.MustParsePrefix("192.0.2.44/32") || b.Op != cluster.OpBan {
		t.Fatalf("saved message %s: %+v %v", msgs[0], b, err)
	}
}
