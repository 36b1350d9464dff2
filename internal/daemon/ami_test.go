package daemon

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/store"
)

// fakeManager answers Login and any action with Success, then sends the
// given events; it keeps the connection open until the test ends.
func fakeManager(t *testing.T, events []string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprint(c, "Asterisk Call Manager/7.0.3\r\n")
				br := bufio.NewReader(c)
				sent := false
				for {
					var id, action string
					for {
						c.SetReadDeadline(time.Now().Add(10 * time.Second))
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						l = strings.TrimRight(l, "\r\n")
						if l == "" {
							break
						}
						k, v, _ := strings.Cut(l, ": ")
						switch strings.ToLower(k) {
						case "actionid":
							id = v
						case "action":
							action = v
						}
					}
					fmt.Fprintf(c, "Response: Success\r\nActionID: %s\r\nMessage: ok\r\n\r\n", id)
					if strings.EqualFold(action, "Login") && !sent {
						sent = true
						for _, e := range events {
							fmt.Fprint(c, e)
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestAMIWorkerFeedsJail(t *testing.T) {
	var events []string
	for i := 0; i < 3; i++ {
		events = append(events, fmt.Sprintf("Event: InvalidPassword\r\nPrivilege: security,all\r\nEventTV: %s\r\nSeverity: Error\r\n"+
			"Service: PJSIP\r\nEventVersion: 2\r\nAccountID: 1001\r\nSessionID: %d\r\nLocalAddress: IPV4/UDP/192.0.2.1/5060\r\n"+
			"RemoteAddress: IPV4/UDP/203.0.113.9/5060\r\nChallenge: x\r\n\r\n", time.Now().Format("2006-01-02T15:04:05.000-0700"), i))
	}
	addr := fakeManager(t, events)
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
