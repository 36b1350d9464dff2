package fraud

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/calls"
)

type fakeAMIActions struct {
	up        map[string]bool // channels CoreShowChannels lists
	log       []string
	pjsipErr  error
	actionErr error
	dbDelErr  error
}

func (f *fakeAMIActions) Hangup(_ context.Context, ch string, cause int) error {
	f.log = append(f.log, "Hangup "+ch+" "+itoa(cause))
	delete(f.up, ch)
	return nil
}
func (f *fakeAMIActions) PJSIPHangup(_ context.Context, ch string, cause int) error {
	f.log = append(f.log, "PJSIPHangup "+ch+" "+itoa(cause))
	if f.pjsipErr == nil {
		delete(f.up, ch)
	}
	return f.pjsipErr
}
func (f *fakeAMIActions) DBPut(_ context.Context, fam, key, val string) error {
	f.log = append(f.log, "DBPut "+fam+" "+key+" "+val)
	return nil
}
func (f *fakeAMIActions) DBDel(_ context.Context, fam, key string) error {
	f.log = append(f.log, "DBDel "+fam+" "+key)
	return f.dbDelErr
}
func (f *fakeAMIActions) Action(_ context.Context, a *ami.Message) (*ami.Message, error) {
	f.log = append(f.log, a.Get("Action")+" "+a.Get("Endpoint")+" "+a.Get("State"))
	return nil, f.actionErr
}

func itoa(n int) string { return strconv.Itoa(n) }

func (f *fakeAMIActions) ActionList(_ context.Context, a *ami.Message) (*ami.Message, []*ami.Message, error) {
	f.log = append(f.log, a.Get("Action"))
	var evs []*ami.Message
	for ch := range f.up {
		evs = append(evs, &ami.Message{Headers: []ami.Header{{Key: "Event", Value: "CoreShowChannel"}, {Key: "Channel", Value: ch}, {Key: "ChannelState", Value: "4"}}})
	}
	return &ami.Message{}, evs, nil
}

func ringing(chs ...string) map[string]bool {
	m := map[string]bool{}
	for _, c := range chs {
		m[c] = true
	}
	return m
}

func hangLog(f *fakeAMIActions) string {
	var out []string
	for _, l := range f.log {
		if l != "CoreShowChannels" {
			out = append(out, l)
		}
	}
	return strings.Join(out, ";")
}

func TestAMIHangerFallsBack(t *testing.T) {
	f := &fakeAMIActions{}
	h := &AMIHanger{AMI: f}
	if _, err := h.Hangup(context.Background(), "PJSIP/1004-00000017"); err != nil {
		t.Fatal(err)
	}
	if hangLog(f) != "Hangup PJSIP/1004-00000017 21" {
		t.Errorf("%v", f.log)
	}
	// PJSIPHangup first (with a SIP response code, never the Q.850
	// cause); an Asterisk without it falls back to Hangup.
	f = &fakeAMIActions{up: ringing("PJSIP/1004-00000017"), pjsipErr: &ami.ActionError{Action: "PJSIPHangup", Message: "Invalid/unknown command: PJSIPHangup"}}
	h = &AMIHanger{AMI: f, UsePJSIPHangup: true, Cause: 16}
	if _, err := h.Hangup(context.Background(), "PJSIP/1004-00000017"); err != nil {
		t.Fatal(err)
	}
	if hangLog(f) != "PJSIPHangup PJSIP/1004-00000017 403;Hangup PJSIP/1004-00000017 16" {
		t.Errorf("%v", f.log)
	}
	// SIP channels never try PJSIPHangup.
	f = &fakeAMIActions{}
	h.AMI = f
	_, _ = h.Hangup(context.Background(), "SIP/2001-00000001")
	if hangLog(f) != "Hangup SIP/2001-00000001 16" {
		t.Errorf("%v", f.log)
	}
}

func TestSIPCode(t *testing.T) {
	for in, want := range map[int]int{0: 403, 21: 403, 399: 403, 400: 400, 486: 486, 603: 603, 699: 699, 700: 403} {
		if got := SIPCode(in); got != want {
			t.Errorf("SIPCode(%d) = %d, want %d", in, got, want)
		}
	}
}

// Issue 11.2: against a manager that answers as Asterisk 22 does, a
// hang-up is done only when the channel is gone.
func TestAMIHangerVerifies(t *testing.T) {
	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret", Write: []string{"system", "call"}})
	defer srv.Close()
	c, err := ami.Dial(context.Background(), ami.Config{Addr: srv.Addr(), Username: "pbxguard", Secret: "s3cret", UseMD5: true, PingInterval: -1, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	h := &AMIHanger{AMI: c, UsePJSIPHangup: true, Cause: 21, VerifyWithin: 300 * time.Millisecond}

	// An answered call: the plain Hangup at once (PJSIPHangup would
	// leave it up).
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000004", Exten: "011442079460349"})
	srv.Answer("PJSIP/1004-00000004")
	atts, err := h.Hangup(ctx, "PJSIP/1004-00000004")
	if err != nil || srv.HasChannel("PJSIP/1004-00000004") || len(atts) != 1 || srv.HungUpBy("PJSIP/1004-00000004") != "Hangup 21" {
		t.Fatalf("answered call: %+v err %v, still up %v, by %q", atts, err, srv.HasChannel("PJSIP/1004-00000004"), srv.HungUpBy("PJSIP/1004-00000004"))
	}
	// A channel PJSIPHangup cannot end (answered meanwhile, or not an
	// incoming one): it answers Success, the channel stays, the plain
	// Hangup ends it: done at the second attempt.
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000005", Exten: "011442079460349", Outgoing: true})
	atts, err = h.Hangup(ctx, "PJSIP/1004-00000005")
	if err != nil || srv.HasChannel("PJSIP/1004-00000005") {
		t.Fatalf("answered call: err %v, still up %v", err, srv.HasChannel("PJSIP/1004-00000005"))
	}
	if len(atts) != 2 || atts[0].Method != "PJSIPHangup 403" || !strings.HasPrefix(atts[0].Result, "still up") || atts[1].Method != "Hangup 21" || atts[1].Result != "gone" {
		t.Errorf("attempts %+v", atts)
	}
	if w := strings.Join(srv.Warnings(), "\n"); strings.Contains(w, "out of range") {
		t.Errorf("PJSIPHangup sent an out-of-range code: %s", w)
	}
	// A ringing incoming call: PJSIPHangup ends it.
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000006", Exten: "00442079460349"})
	if atts, err := h.Hangup(ctx, "PJSIP/1004-00000006"); err != nil || len(atts) != 1 || srv.HungUpBy("PJSIP/1004-00000006") != "PJSIPHangup 403" {
		t.Errorf("ringing call: %+v %v by %q", atts, err, srv.HungUpBy("PJSIP/1004-00000006"))
	}
	// A channel that stays up whatever is sent: reported as failed.
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000007", Exten: "00442079460349", Stuck: true})
	if atts, err := h.Hangup(ctx, "PJSIP/1004-00000007"); err == nil || len(atts) != 2 {
		t.Errorf("stuck channel: attempts %+v err %v, want a failure after PJSIPHangup and Hangup", atts, err)
	}
	// Through the responder: the incident says what happened.
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000008", Exten: "00442079460349", Outgoing: true})
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000009", Exten: "00442079460349", Stuck: true})
	r := &Responder{Hanger: h}
	inc := r.Respond(ctx, Finding{Rule: RulePrefixGuessing, Extension: "1004", Response: Response{Hangup: true}}, []calls.Call{
		{Channel: "PJSIP/1004-00000008", Live: true}, {Channel: "PJSIP/1004-00000009", Live: true}})
	res := map[string]string{}
	for _, a := range inc.Actions {
		res[a.Target] = a.Result
	}
	if res["PJSIP/1004-00000008"] != ResultRetried || res["PJSIP/1004-00000009"] != ResultFailed {
		t.Errorf("incident actions %+v", inc.Actions)
	}
}

func TestAMILocker(t *testing.T) {
	f := &fakeAMIActions{actionErr: &ami.ActionError{Action: "PJSIPSetMaintenance", Message: "Invalid/unknown command: PJSIPSetMaintenance"}}
	l := &AMILocker{AMI: f, Maintenance: true, Now: func() time.Time { return t0 }}
	if err := l.Lock(context.Background(), "1004", "prefix_guessing: x\r\ny"); err != nil {
		t.Fatal(err)
	}
	if len(f.log) != 2 || f.log[0] != "DBPut pbxguard/locked 1004 2026-11-25T04:00:00Z prefix_guessing: x  y" || f.log[1] != "PJSIPSetMaintenance 1004 on" {
		t.Errorf("%q", f.log)
	}
	f.dbDelErr = &ami.ActionError{Action: "DBDel", Message: "Database entry not found"}
	if err := l.Unlock(context.Background(), "1004"); err != nil {
		t.Errorf("unlock of an unlocked extension: %v", err)
	}
	f.dbDelErr = errors.New("ami: connection lost")
	if err := l.Unlock(context.Background(), "1004"); err == nil {
		t.Error("lost connection not reported")
	}
	for _, bad := range []string{"", "10/04", "1004\r\nAction: Logoff", "a b"} {
		if err := l.Lock(context.Background(), bad, "x"); err == nil {
			t.Errorf("extension %q accepted", bad)
		}
	}
}
