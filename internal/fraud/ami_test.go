package fraud

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

type fakeAMIActions struct {
	log       []string
	pjsipErr  error
	actionErr error
	dbDelErr  error
}

func (f *fakeAMIActions) Hangup(_ context.Context, ch string, cause int) error {
	f.log = append(f.log, "Hangup "+ch+" "+itoa(cause))
	return nil
}
func (f *fakeAMIActions) PJSIPHangup(_ context.Context, ch string, cause int) error {
	f.log = append(f.log, "PJSIPHangup "+ch+" "+itoa(cause))
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

func TestAMIHanger(t *testing.T) {
	f := &fakeAMIActions{}
	h := &AMIHanger{AMI: f}
	if err := h.Hangup(context.Background(), "PJSIP/1004-00000017"); err != nil {
		t.Fatal(err)
	}
	if len(f.log) != 1 || f.log[0] != "Hangup PJSIP/1004-00000017 21" {
		t.Errorf("%v", f.log)
	}
	// PJSIPHangup first; an Asterisk without it falls back to Hangup.
	f = &fakeAMIActions{pjsipErr: &ami.ActionError{Action: "PJSIPHangup", Message: "Invalid/unknown command: PJSIPHangup"}}
	h = &AMIHanger{AMI: f, UsePJSIPHangup: true, Cause: 16}
	if err := h.Hangup(context.Background(), "PJSIP/1004-00000017"); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.log, ";") != "PJSIPHangup PJSIP/1004-00000017 16;Hangup PJSIP/1004-00000017 16" {
		t.Errorf("%v", f.log)
	}
	// Other errors are reported, not papered over.
	f = &fakeAMIActions{pjsipErr: &ami.ActionError{Action: "PJSIPHangup", Message: "No such channel"}}
	h.AMI = f
	if err := h.Hangup(context.Background(), "PJSIP/1004-00000017"); err == nil || len(f.log) != 1 {
		t.Errorf("err %v log %v", err, f.log)
	}
	// SIP channels never try PJSIPHangup.
	f = &fakeAMIActions{}
	h.AMI = f
	_ = h.Hangup(context.Background(), "SIP/2001-00000001")
	if len(f.log) != 1 || !strings.HasPrefix(f.log[0], "Hangup SIP/2001") {
		t.Errorf("%v", f.log)
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
