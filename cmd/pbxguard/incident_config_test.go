package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// Issue 11.3: --contain and unlock act with the config's hangup cause,
// pjsip_hangup and maintenance settings, and unlock undoes what
// containment did (the lock and the PJSIP maintenance).
func TestIncidentContainAndUnlockUseTheConfig(t *testing.T) {
	fa := newFakeAMI(t)
	args := amiArgs(t, fa)
	cfg := filepath.Join(t.TempDir(), "pbxguard.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`fraud:
  country: US
  trunks: [carrier]
  ami: {addr: "%s", user: pbxadmin, secret_file: %s, md5: true}
  hangup_cause: 17
  pjsip_hangup: true
  pjsip_hangup_code: 486
  maintenance: true
`, fa.Addr(), args[len(args)-1])), 0o600); err != nil {
		t.Fatal(err)
	}
	// One more of 1004's calls, still ringing: PJSIPHangup ends it.
	fa.StartCall(amitest.Channel{Name: "PJSIP/1004-000000ff", Exten: "00442079460349", RemoteAddr: "203.0.113.159:5062"})
	sock := filepath.Join(t.TempDir(), "control.sock")
	fakeControl(t, sock)
	out, code := runIncidentCLI(t, "incident", "--config", cfg, "--contain", "1004", "--socket", sock)
	if code != exitOK {
		t.Fatalf("contain: exit %d\n%s", code, out)
	}
	for _, ch := range fa.Channels() {
		if strings.HasPrefix(ch, "PJSIP/1004-") {
			t.Errorf("%s still up after --contain", ch)
		}
	}
	if by := fa.HungUpBy("PJSIP/1004-000000ff"); by != "PJSIPHangup 486" {
		t.Errorf("ringing call ended by %q, want PJSIPHangup 486 (pjsip_hangup_code)", by)
	}
	for _, h := range fa.sent("Hangup") {
		if h.Get("Cause") != "17" {
			t.Errorf("Hangup with cause %q, want 17 (hangup_cause)", h.Get("Cause"))
		}
	}
	if _, locked := fa.DB(fraud.LockFamily, "1004"); !locked || !fa.Maintenance("1004") {
		t.Errorf("after contain: locked %v, maintenance %v", locked, fa.Maintenance("1004"))
	}
	out, code = runIncidentCLI(t, "incident", "--config", cfg, "unlock", "1004")
	if code != exitOK {
		t.Fatalf("unlock: exit %d\n%s", code, out)
	}
	if _, locked := fa.DB(fraud.LockFamily, "1004"); locked || fa.Maintenance("1004") {
		t.Errorf("after unlock: locked %v, maintenance %v\n%s", locked, fa.Maintenance("1004"), out)
	}
}

// Issue 11.4: with write = call,reporting (no system) PJSIPShowContacts
// is refused: the live view says so once and never asks again.
func TestLiveViewNeverPollsARefusedAction(t *testing.T) {
	srv := amitest.NewServer(amitest.Config{Username: "u", Secret: "s", Write: []string{"call", "reporting"}})
	defer srv.Close()
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000005", Exten: "011442079460349", RemoteAddr: "203.0.113.177:5060"})
	srv.AddContact(amitest.Contact{Endpoint: "1004", URI: "sip:1004@203.0.113.177:5060"})
	c, err := ami.Dial(context.Background(), ami.Config{Addr: srv.Addr(), Username: "u", Secret: "s", Events: "off", PingInterval: -1, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nums, _ := numbers.New(numbers.Config{HomeRegion: "US"})
	eng, _ := fraud.NewEngine(fraud.Config{}, nums)
	var warn bytes.Buffer
	ls := &liveState{eng: eng, seen: map[string]bool{}, warn: &warn}
	for range 3 {
		views, err := ls.view(context.Background(), c, nums)
		if err != nil || len(views) != 1 || len(views[0].Addrs) != 1 {
			t.Fatalf("view %+v %v", views, err)
		}
	}
	if n := len(srv.ReceivedNamed("PJSIPShowContacts")); n != 1 || srv.Refused() != 1 {
		t.Errorf("PJSIPShowContacts asked %d times, %d refused; want once", n, srv.Refused())
	}
	if len(srv.ReceivedNamed("Command")) != 0 {
		t.Error("the live view sent Command (needs write = command)")
	}
	if !strings.Contains(warn.String(), "Permission denied") || strings.Count(warn.String(), "\n") != 1 {
		t.Errorf("warning %q", warn.String())
	}
}
