package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/cluster"
)

type nopApplier struct{}

func (nopApplier) ApplyRemote(_ context.Context, rs []cluster.Remote) ([]bool, error) {
	return make([]bool, len(rs)), nil
}
func (nopApplier) UnbanRemote(context.Context, cluster.Ban) error { return nil }

func TestClusterStatus(t *testing.T) {
	srv, err := cluster.StartServer(cluster.ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	n, err := cluster.New(cluster.Options{Node: "pbx-a", URLs: []string{srv.ClientURL()}}, nopApplier{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	now := time.Now()
	for _, p := range []string{"203.0.113.1/32", "203.0.113.2/32"} {
		n.Offer(cluster.Ban{Op: cluster.OpBan, Prefix: netip.MustParsePrefix(p), Jail: "asterisk", At: now, Until: now.Add(time.Hour)})
	}
	for end := time.Now().Add(10 * time.Second); n.Stats().Snapshot().Published < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("not published")
		}
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(cfg, []byte("state_dir: "+dir+"\nmetrics: {listen: ''}\njails: {}\ncluster:\n  node: pbx-b\n  nats: {urls: ['"+srv.ClientURL()+"']}\n"), 0o644)
	out, code := runCLI(t, "cluster", "status", "--json", "-c", cfg)
	var r cluster.Report
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !r.Connected || r.Stream != "PBXGUARD_BANS" || r.Messages != 2 || len(r.Nodes) != 1 || r.Nodes[0].Node != "pbx-a" ||
		r.Nodes[0].Messages != 2 || r.Nodes[0].LastPrefix != "203.0.113.2/32" || r.Consumer != "pbxguard-pbx-b" {
		t.Fatalf("report %+v", r)
	}
	out, code = runCLI(t, "cluster", "status", "-c", cfg)
	if code != exitOK || !strings.Contains(out, "pbx-a") || !strings.Contains(out, "stream PBXGUARD_BANS: 2 messages") {
		t.Fatalf("text: exit %d %s", code, out)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	if out, code = runCLI(t, "cluster", "status", "-c", cfg); code != exitFailure || !strings.Contains(out, "no NATS server answers") {
		t.Fatalf("NATS down: exit %d %s", code, out)
	}
}
