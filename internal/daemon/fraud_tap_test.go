package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/store"
)

// callDetector: "FAIL <addr>" is an auth failure; "CALL <addr> <number>"
// an unauthenticated call attempt to number (a call_rejected event, which
// the daemon's tap hands to the fraud monitor).
type callDetector struct{}

func (callDetector) Name() string { return "call" }
func (callDetector) Detect(line []byte, ev *event.Event) bool {
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return false
	}
	a, err := netip.ParseAddr(f[1])
	if err != nil {
		return false
	}
	ev.Addr, ev.Detector, ev.Service = a, "call", event.ServicePJSIP
	switch {
	case f[0] == "FAIL":
		ev.Kind = event.AuthFailure
	case f[0] == "CALL" && len(f) == 3:
		ev.Kind, ev.Account = event.CallRejected, f[2]
	default:
		return false
	}
	return true
}

// Issue 10.1: a fraud response that blocks (here its webhook, for 30 s)
// never stalls the log → ban path: the jail bans while the webhook is
// still blocked.
func TestFraudResponseNeverBlocksTheJails(t *testing.T) {
	release := make(chan struct{})
	var entered, returned atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		returned.Add(1)
	}))
	defer hook.Close()
	defer close(release)

	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret", Write: []string{"system", "call"}})
	defer srv.Close()
	dir := t.TempDir()
	secret := filepath.Join(dir, "ami.secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(fmt.Sprintf("country: US\nami: {addr: %q, user: pbxguard, secret_file: %s}\nalerts: {webhook: {url: %q}}\n",
		srv.Addr(), secret, hook.URL)), &node); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w, err := amiWorker(&config.Config{Fraud: node.Content[0], Location: time.UTC}, st, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fw := newFakeBackend()
	src := &chanSource{lines: make(chan string, 16)}
	d, err := New(Options{Store: st, Backend: fw, Workers: []Worker{*w},
		Jails: []JailSpec{{Name: "asterisk", Judge: &countJudge{max: 3, counts: map[netip.Addr]int{}}, BanTime: time.Hour,
			Sources: []SourceSpec{{Key: "asterisk:/fake", Name: "/fake", Source: src, Detector: callDetector{}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitFor(t, "the fraud monitor's event tap", func() bool { return d.tap.Load() != nil })
	waitFor(t, "the AMI login", func() bool { return srv.LoggedIn() > 0 })
	// Issue 10.2: the AMI config comes from the fraud settings, with the
	// event classes (the hand-built copy subscribed to everything).
	if ev := srv.LoginEvents(); ev != "system,call,security" {
		t.Errorf("the daemon's AMI login asked for events %q, want system,call,security", ev)
	}

	// Unauthenticated calls to Israel: unauth_intl, ban + alert (the
	// webhook blocks).
	src.lines <- "CALL 203.0.113.50 01197225550281"
	waitFor(t, "the fraud webhook called", func() bool { return entered.Load() == 1 })
	src.lines <- "CALL 203.0.113.51 01197225550281" // queued behind the blocked one
	for range 3 {
		src.lines <- "FAIL 203.0.113.9"
	}
	waitFor(t, "the jail's ban while the fraud responder is blocked", func() bool { _, ok := fw.has("203.0.113.9/32"); return ok })
	if returned.Load() != 0 {
		t.Fatal("the webhook returned before the jail banned: the test proves nothing")
	}
	if _, ok := fw.has("203.0.113.50/32"); !ok {
		t.Error("the fraud ban (before the alert) is missing")
	}
}
