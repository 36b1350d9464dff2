package amitest_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
)

func dial(t *testing.T, srv *amitest.Server, md5 bool) *ami.Client {
	t.Helper()
	c, err := ami.Dial(context.Background(), ami.Config{Addr: srv.Addr(), Username: "pbxguard", Secret: "s3cret", UseMD5: md5,
		PingInterval: -1, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAsterisk22Behaviour(t *testing.T) {
	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret", Write: []string{"system", "call"}})
	defer srv.Close()
	for _, md5 := range []bool{true, false} {
		dial(t, srv, md5)
	}
	c := dial(t, srv, true)
	ctx := context.Background()
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000005", Exten: "011442079460349", RemoteAddr: "203.0.113.177:5060"})
	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000006", Exten: "00442079460349"})
	srv.Answer("PJSIP/1004-00000005")

	// PJSIPHangup with a Q.850 cause: 603, and an answered call stays up
	// though Asterisk answers Success.
	if err := c.PJSIPHangup(ctx, "PJSIP/1004-00000005", 21); err != nil {
		t.Fatal(err)
	}
	if !srv.HasChannel("PJSIP/1004-00000005") {
		t.Error("PJSIPHangup ended an answered channel")
	}
	w := strings.Join(srv.Warnings(), "\n")
	if !strings.Contains(w, "Response code 21 is out of range 400 -> 699. Defaulting to 603") || !strings.Contains(w, "invalid state 'CONFIRMED'") {
		t.Errorf("warnings %q", w)
	}
	// … and ends a ringing incoming one, with the code given.
	if err := c.PJSIPHangup(ctx, "PJSIP/1004-00000006", 403); err != nil || srv.HasChannel("PJSIP/1004-00000006") || srv.HungUpBy("PJSIP/1004-00000006") != "PJSIPHangup 403" {
		t.Errorf("err %v, up %v, by %q", err, srv.HasChannel("PJSIP/1004-00000006"), srv.HungUpBy("PJSIP/1004-00000006"))
	}
	// Getvar, CoreShowChannels, Hangup.
	if v, err := c.Getvar(ctx, "PJSIP/1004-00000005", "CHANNEL(pjsip,remote_addr)"); err != nil || v != "203.0.113.177:5060" {
		t.Errorf("Getvar %q %v", v, err)
	}
	_, evs, err := c.ActionList(ctx, ami.NewAction("CoreShowChannels"))
	if err != nil || len(evs) != 2 || evs[0].Get("Channel") != "PJSIP/1004-00000005" || evs[0].Get("ChannelStateDesc") != "Up" {
		t.Errorf("CoreShowChannels %v %v", evs, err)
	}
	if err := c.Hangup(ctx, "PJSIP/1004-00000005", 21); err != nil || srv.HasChannel("PJSIP/1004-00000005") {
		t.Errorf("Hangup: %v", err)
	}
	var ae *ami.ActionError
	if err := c.Hangup(ctx, "PJSIP/1004-00000005", 21); !errors.As(err, &ae) || ae.Message != "No such channel" {
		t.Errorf("second Hangup: %v", err)
	}
	// AstDB.
	if err := c.DBPut(ctx, "pbxguard/locked", "1004", "x"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.DBGet(ctx, "pbxguard/locked", "1004"); err != nil || v != "x" {
		t.Errorf("DBGet %q %v", v, err)
	}
	if err := c.DBDel(ctx, "pbxguard/locked", "1004"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DBGet(ctx, "pbxguard/locked", "1004"); !errors.Is(err, ami.ErrNotFound) {
		t.Errorf("DBGet after DBDel: %v", err)
	}
	// Contacts.
	if _, _, err := c.ActionList(ctx, ami.NewAction("PJSIPShowContacts")); !errors.As(err, &ae) || !strings.Contains(ae.Message, "No Contacts found") {
		t.Errorf("no contacts: %v", err)
	}
	srv.AddContact(amitest.Contact{Endpoint: "1004", URI: "sip:1004@198.51.100.22:5060"})
	if _, evs, err := c.ActionList(ctx, ami.NewAction("PJSIPShowContacts")); err != nil || len(evs) != 2 || evs[0].Get("Uri") != "sip:1004@198.51.100.22:5060" {
		t.Errorf("contacts %v %v", evs, err)
	}
	// Maintenance.
	if _, err := c.Action(ctx, ami.NewAction("PJSIPSetMaintenance", "Endpoint", "1004", "State", "on")); err != nil || !srv.Maintenance("1004") {
		t.Errorf("maintenance: %v", err)
	}
	// Privileges: Command needs the command class.
	if _, err := c.Command(ctx, "pjsip show contacts"); !errors.As(err, &ae) || ae.Message != "Permission denied" || srv.Refused() != 1 {
		t.Errorf("Command without the command class: %v (refused %d)", err, srv.Refused())
	}
}

// A replayed stream keeps the server's channels, so that a hang-up action
// really ends a replayed call.
func TestReplayedEventsKeepState(t *testing.T) {
	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret"})
	defer srv.Close()
	c := dial(t, srv, true)
	ev := func(kv ...string) *ami.Message {
		m := &ami.Message{}
		for i := 0; i+1 < len(kv); i += 2 {
			m.Headers = append(m.Headers, ami.Header{Key: kv[i], Value: kv[i+1]})
		}
		return m
	}
	srv.EmitMessage(ev("Event", "SuccessfulAuth", "Service", "PJSIP", "AccountID", "1004", "RemoteAddress", "IPV4/UDP/203.0.113.159/5062"))
	srv.EmitMessage(ev("Event", "Newchannel", "Channel", "PJSIP/1004-00000005", "Uniqueid", "1.5", "Linkedid", "1.5", "Exten", "011442079460349", "ChannelState", "4"))
	srv.EmitMessage(ev("Event", "Newchannel", "Channel", "PJSIP/1004-00000006", "Uniqueid", "1.6", "Linkedid", "1.6", "Exten", "00442079460349", "ChannelState", "4"))
	ctx := context.Background()
	if v, err := c.Getvar(ctx, "PJSIP/1004-00000005", "CHANNEL(pjsip,remote_addr)"); err != nil || v != "203.0.113.159:5062" {
		t.Errorf("Getvar %q %v", v, err)
	}
	if err := c.Hangup(ctx, "PJSIP/1004-00000005", 21); err != nil || srv.HasChannel("PJSIP/1004-00000005") {
		t.Errorf("Hangup: %v", err)
	}
	srv.EmitMessage(ev("Event", "Hangup", "Channel", "PJSIP/1004-00000005"))
	srv.EmitMessage(ev("Event", "Hangup", "Channel", "PJSIP/1004-00000006"))
	if srv.HungUpBy("PJSIP/1004-00000005") != "Hangup 21" || srv.HungUpBy("PJSIP/1004-00000006") != "remote" || len(srv.Channels()) != 0 {
		t.Errorf("by %q %q, up %v", srv.HungUpBy("PJSIP/1004-00000005"), srv.HungUpBy("PJSIP/1004-00000006"), srv.Channels())
	}
}
