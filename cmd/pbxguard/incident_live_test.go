package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/daemon"
)

// fakeAMI is an amitest server (an Asterisk 22 manager, the AMI user with
// the documented write = system,call) holding the state the corpus
// Asterisk had mid-burst: the channels its CoreShowChannels listed and the
// contacts "pjsip show contacts" showed (ami-actions.transcript.jsonl).
type fakeAMI struct {
	*amitest.Server
}

const fakeSecret = "S3cretAmiPw77"

func newFakeAMI(t *testing.T) *fakeAMI {
	t.Helper()
	f, err := os.Open(corpus20 + "/ami/ami-actions.transcript.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := map[string]string{}
	last := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct{ Dir, Data string }
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if l.Dir == "send" {
			m, err := ami.ParseMessage([]byte(l.Data))
			if err != nil {
				t.Fatal(err)
			}
			last = m.Get("Action")
			if last == "Command" {
				last += " " + m.Get("Command")
			}
			continue
		}
		rec[last] += l.Data
	}
	srv := amitest.NewServer(amitest.Config{Username: "pbxadmin", Secret: fakeSecret, Write: []string{"system", "call"}})
	t.Cleanup(srv.Close)
	r := ami.NewReader(strings.NewReader(rec["CoreShowChannels"]))
	n := 0
	for {
		m, err := r.Next()
		if err != nil {
			break
		}
		if m.Event() != "CoreShowChannel" {
			continue
		}
		ch := amitest.Channel{Name: m.Get("Channel"), Uniqueid: m.Get("Uniqueid"), Linkedid: m.Get("Linkedid"), Exten: m.Get("Exten"),
			Context: m.Get("Context"), CallerID: m.Get("CallerIDNum"), Up: m.Get("ChannelStateDesc") == "Up",
			Outgoing: m.Get("Uniqueid") != m.Get("Linkedid"), RemoteAddr: "198.51.100.21:5064"}
		if strings.HasPrefix(ch.Name, "PJSIP/1004-") {
			ch.RemoteAddr = "203.0.113.159:5062"
		}
		srv.StartCall(ch)
		n++
	}
	if n == 0 {
		t.Fatal("corpus transcript: no CoreShowChannel")
	}
	for _, line := range strings.Split(rec["Command pjsip show contacts"], "\n") {
		fs := strings.Fields(line)
		if len(fs) < 2 || fs[0] != "Output:" && fs[0] != "Contact:" {
			continue
		}
		if fs[0] == "Output:" {
			fs = fs[1:]
		}
		if len(fs) < 2 || fs[0] != "Contact:" {
			continue
		}
		aor, uri, ok := strings.Cut(fs[1], "/")
		if ok && strings.HasPrefix(uri, "sip:") {
			srv.AddContact(amitest.Contact{AOR: aor, Endpoint: aor, URI: uri})
		}
	}
	return &fakeAMI{srv}
}

func (fa *fakeAMI) sent(action string) []*ami.Message { return fa.ReceivedNamed(action) }

func amiArgs(t *testing.T, fa *fakeAMI) []string {
	secret := filepath.Join(t.TempDir(), "ami.secret")
	if err := os.WriteFile(secret, []byte(fakeSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--ami", fa.Addr(), "--ami-user", "pbxadmin", "--ami-secret-file", secret}
}

func TestIncidentLiveOnceJSON(t *testing.T) {
	fa := newFakeAMI(t)
	out, code := runIncidentCLI(t, append([]string{"incident", "--once", "--json"}, amiArgs(t, fa)...)...)
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var v struct {
		Extensions []extView `json:"extensions"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(v.Extensions) == 0 {
		t.Fatalf("no extension: %s", out)
	}
	e := v.Extensions[0]
	// Mid-burst the corpus PBX had 1004's three calls up: 011 44…, 00 44… and +44… to two numbers.
	if e.Extension != "1004" || e.Calls != 3 || e.InternationalCalls != 3 || len(e.Countries) != 1 || e.Countries[0] != "GB" ||
		len(e.Addrs) != 1 || e.Addrs[0].String() != "203.0.113.159" || len(e.Contacts) != 2 || e.Risk < 90 {
		t.Errorf("1004 view %+v", e)
	}
	t.Logf("live view: %+v", e)
	text, code := runIncidentCLI(t, append([]string{"incident", "--once"}, amiArgs(t, fa)...)...)
	if code != exitOK || !strings.Contains(text, "1004") || !strings.Contains(text, "203.0.113.159") {
		t.Errorf("text view exit %d:\n%s", code, text)
	}
	t.Logf("\n%s", text)
}

func TestIncidentContainAndUnlock(t *testing.T) {
	fa := newFakeAMI(t)
	sock := filepath.Join(t.TempDir(), "control.sock") // no daemon: the ban must fail loudly
	out, code := runIncidentCLI(t, append([]string{"incident", "--contain", "1004", "--socket", sock}, amiArgs(t, fa)...)...)
	t.Logf("\n%s", out)
	if code != exitFailure {
		t.Errorf("exit %d, want %d (the ban could not reach the daemon)", code, exitFailure)
	}
	hung := fa.sent("Hangup")
	if len(hung) != 3 {
		t.Fatalf("hangups %d, want 3", len(hung))
	}
	for _, h := range hung {
		if !strings.HasPrefix(h.Get("Channel"), "PJSIP/1004-") {
			t.Errorf("hung up %s", h.Get("Channel"))
		}
	}
	puts := fa.sent("DBPut")
	if len(puts) != 1 || puts[0].Get("Family") != "pbxguard/locked" || puts[0].Get("Key") != "1004" {
		t.Errorf("DBPut %v", puts)
	}
	if !strings.Contains(out, "ban") || !strings.Contains(out, "203.0.113.159") || !strings.Contains(out, "FAILED") {
		t.Errorf("output does not say the ban of 203.0.113.159 failed:\n%s", out)
	}

	// With a daemon on the control socket the ban goes through it.
	bans := fakeControl(t, sock)
	fc := newFakeAMI(t)
	out, code = runIncidentCLI(t, append([]string{"incident", "--contain", "1004", "--socket", sock, "--ban-for", "2h"}, amiArgs(t, fc)...)...)
	if code != exitOK {
		t.Errorf("exit %d\n%s", code, out)
	}
	select {
	case req := <-bans:
		if req.Cmd != "ban" || req.Prefix != "203.0.113.159/32" || req.For != "2h0m0s" || req.Jail != "fraud" {
			t.Errorf("ban request %+v", req)
		}
	case <-time.After(5 * time.Second):
		t.Error("no ban reached the daemon")
	}

	// Dry run: nothing sent but the reads.
	fb := newFakeAMI(t)
	out, code = runIncidentCLI(t, append([]string{"incident", "--contain", "1004", "--dry-run", "--socket", sock}, amiArgs(t, fb)...)...)
	if code != exitOK || len(fb.sent("Hangup"))+len(fb.sent("DBPut")) != 0 || !strings.Contains(out, "would do") {
		t.Errorf("dry run exit %d, sent %d hangups %d puts\n%s", code, len(fb.sent("Hangup")), len(fb.sent("DBPut")), out)
	}

	out, code = runIncidentCLI(t, append([]string{"incident", "unlock", "1004"}, amiArgs(t, fa)...)...)
	dels := fa.sent("DBDel")
	if code != exitOK || len(dels) != 1 || dels[0].Get("Key") != "1004" || dels[0].Get("Family") != "pbxguard/locked" {
		t.Errorf("unlock exit %d, DBDel %v\n%s", code, dels, out)
	}
}

// fakeControl answers the daemon's control protocol on a unix socket.
func fakeControl(t *testing.T, path string) <-chan daemon.Request {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan daemon.Request, 4)
	go func() {
		for i := 0; i < 4; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			var req daemon.Request
			if json.NewDecoder(c).Decode(&req) == nil {
				ch <- req
				json.NewEncoder(c).Encode(daemon.Response{OK: true, Bans: []daemon.BanInfo{{Addr: "203.0.113.159", Prefix: req.Prefix, Jail: req.Jail}}})
			}
			c.Close()
		}
	}()
	return ch
}

func TestIncidentLiveErrors(t *testing.T) {
	if _, code := runIncidentCLI(t, "incident", "--once", "--ami-secret-file", filepath.Join(t.TempDir(), "nope")); code != exitUsage {
		t.Errorf("missing secret file: exit %d", code)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	secret := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secret, []byte("x"), 0o600)
	if _, code := runIncidentCLI(t, "incident", "--once", "--ami", addr, "--ami-secret-file", secret); code != exitFailure {
		t.Errorf("nothing listening: exit %d", code)
	}
}
