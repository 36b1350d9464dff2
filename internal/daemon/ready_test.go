package daemon

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
	"github.com/pbxguard/pbxguard/internal/systemd"
)

// Type=notify: READY=1 reaches a (fake) $NOTIFY_SOCKET only once the
// kernel holds every ban restored from the store, so that
// `Before=asterisk.service` means protected from the first packet.
func TestReadyAfterRestore(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Now()
	var want []netip.Prefix
	var rows []store.Ban
	for _, a := range []string{"203.0.113.7/32", "203.0.113.8/32", "2001:db8:1::/64"} {
		p := netip.MustParsePrefix(a)
		want = append(want, p)
		rows = append(rows, store.Ban{Prefix: p, Addr: p.Addr(), Jail: "asterisk", Reason: "test", Since: now, Until: now.Add(time.Hour), Count: 1})
	}
	if err := st.AddBans(ctx, rows); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	fw := newFakeBackend()
	d, err := New(Options{Store: st, Backend: fw, Ready: func() {
		if _, err := systemd.Notify("READY=1"); err != nil {
			t.Error(err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify socket got %q, %v", buf[:n], err)
	}
	for _, p := range want {
		if left, ok := fw.has(p.String()); !ok || left < 59*time.Minute {
			t.Errorf("READY=1 sent while the kernel lacks %s (%v %v)", p, left, ok)
		}
	}
}
