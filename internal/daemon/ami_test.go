package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/store"
)

// fakeManager is an amitest manager (user pbxguard, secret s3cret) that
// sends the given raw events once the daemon has logged in; it returns
// its address.
func fakeManager(t *testing.T, events []string) string {
	t.Helper()
	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret", Write: []string{"system", "call"}})
	t.Cleanup(srv.Close)
	var msgs []*ami.Message
	for _, e := range events {
		m, err := ami.ParseMessage([]byte(e))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		go func() {
			for deadline := time.Now().Add(10 * time.Second); srv.LoggedIn() == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			for _, m := range msgs {
				srv.EmitMessage(m)
			}
		}()
	}
	return srv.Addr()
}

func TestAMIWorkerFeedsJail(t *testing.T) {
	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret", Write: []string{"system", "call"}})
	defer srv.Close()
	addr := srv.Addr()
	dir := t.TempDir()
	secret := filepath.Join(dir, "ami.secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(fmt.Sprintf("country: US\nami: {addr: %q, user: pbxguard, secret_file: %s, md5: false}\n", addr, secret)), &node); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Fraud: node.Content[0], Location: time.UTC}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w, err := amiWorker(cfg, st, nil, []string{"asterisk-ami"}, slog.New(slog.DiscardHandler))
	if err != nil || w == nil {
		t.Fatalf("amiWorker: %v", err)
	}
	fw := newFakeBackend()
	judge := &countJudge{max: 3, counts: map[netip.Addr]int{}}
	d, err := New(Options{Store: st, Backend: fw, Jails: []JailSpec{{Name: "asterisk-ami", Judge: judge}}, Workers: []Worker{*w}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "the AMI login", func() bool { return srv.LoggedIn() > 0 })
	for i := 0; i < 3; i++ {
		srv.Emit("Event", "InvalidPassword", "Privilege", "security,all", "EventTV", time.Now().Format("2006-01-02T15:04:05.000-0700"),
			"Severity", "Error", "Service", "PJSIP", "EventVersion", "2", "AccountID", "1001", "SessionID", fmt.Sprint(i),
			"LocalAddress", "IPV4/UDP/192.0.2.1/5060", "RemoteAddress", "IPV4/UDP/203.0.113.9/5060", "Challenge", "x")
	}
	waitFor(t, "ban from AMI security events", func() bool { _, ok := fw.has("203.0.113.9/32"); return ok })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := d.Status(); st.Jails[0].Events != 3 {
		t.Fatalf("events = %d", st.Jails[0].Events)
	}
}

func TestAMIWorkerNeedsSecret(t *testing.T) {
	var node yaml.Node
	yaml.Unmarshal([]byte("country: US\nami: {secret_file: /nonexistent/ami.secret}\n"), &node)
	_, err := amiWorker(&config.Config{Fraud: node.Content[0]}, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "write the secret of the manager.conf user") {
		t.Fatalf("err = %v", err)
	}
}
