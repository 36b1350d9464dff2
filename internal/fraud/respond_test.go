package fraud

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/ami/amitest"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/event"
)

// blockingAMI is a hanger and locker whose Asterisk does not answer
// until released (a dead AMI socket waiting for its timeout).
type blockingAMI struct {
	release  chan struct{}
	returned atomic.Int32
}

func (b *blockingAMI) Hangup(ctx context.Context, ch string) ([]Attempt, error) {
	<-b.release
	b.returned.Add(1)
	return nil, nil
}
func (b *blockingAMI) Lock(ctx context.Context, ext, reason string) error {
	<-b.release
	b.returned.Add(1)
	return nil
}
func (b *blockingAMI) Unlock(context.Context, string) error { return nil }

type chanBanner chan netip.Addr

func (c chanBanner) Ban(_ context.Context, a netip.Addr, _ time.Duration, _ string) error {
	c <- a
	return nil
}

// Issue 9.6: containment bans first; hang-up and lock run in parallel,
// so an AMI that does not answer never delays the ban.
func TestRespondBansFirst(t *testing.T) {
	b := &blockingAMI{release: make(chan struct{})}
	banned := make(chanBanner, 4)
	r := &Responder{Hanger: b, Locker: b, Banner: banned}
	f := Finding{Rule: RulePrefixGuessing, Extension: "1004", Addrs: []netip.Addr{attackerAddr}, Response: respContain, Time: t0}
	done := make(chan *Incident, 1)
	go func() {
		done <- r.Respond(context.Background(), f, []calls.Call{{Channel: "PJSIP/1004-00000005", Live: true}, {Channel: "PJSIP/1004-00000006", Live: true}})
	}()
	select {
	case a := <-banned:
		if a != attackerAddr {
			t.Errorf("banned %s", a)
		}
		if n := b.returned.Load(); n != 0 {
			t.Errorf("the ban waited for %d AMI actions", n)
		}
	case <-time.After(10 * time.Second):
		close(b.release)
		t.Fatal("no ban while the AMI actions were blocked: the ban waits behind them")
	}
	close(b.release)
	inc := <-done
	if b.returned.Load() != 3 {
		t.Errorf("%d AMI actions returned, want 2 hang-ups and the lock", b.returned.Load())
	}
	if len(inc.Actions) != 4 || inc.Actions[0].Kind != "ban" {
		t.Errorf("actions %+v, want the ban first", inc.Actions)
	}
}

// Issue 11.6: after "incident unlock" (another process deleted the AstDB
// key) the first call is judged, not skipped, and a new incident on the
// same extension locks it again.
func TestUnlockReArmsEverything(t *testing.T) {
	var clock time.Time
	fa := newFakeActions(&clock)
	mon := newTestMonitor(t, &clock, fa, "US")
	locked := true
	mon.LockCheck = func(context.Context, string) (bool, error) { return locked, nil }
	ctx := context.Background()
	start := func(i int, dialled string) []*Incident {
		clock = t0.Add(time.Duration(i) * time.Second)
		return mon.HandleUpdate(ctx, calls.Update{Kind: calls.CallStarted, Call: calls.Call{ID: fmt.Sprint(i), Extension: "1004",
			Channel: fmt.Sprintf("PJSIP/1004-%08d", i), Dialled: dialled, Start: clock, Live: true, SourceAddr: attackerAddr}}, clock)
	}
	start(0, "011442079460349")
	if incs := start(1, "00442079460349"); len(incs) != 1 || incs[0].Rule != RulePrefixGuessing {
		t.Fatalf("%+v", incs)
	}
	if len(fa.locks) != 1 {
		t.Fatalf("locks %v", fa.locks)
	}
	locked = false // pbxguard incident unlock 1004
	if incs := start(10, "011442079460777"); len(incs) != 0 {
		t.Errorf("first call after unlock: %+v", incs)
	}
	// The attacker again: the call after unlock counted, the second
	// contains at once, and the extension is locked again.
	incs := start(11, "00442079460777")
	if len(incs) != 1 || incs[0].Rule != RulePrefixGuessing {
		t.Fatalf("second call after unlock: %v", incs)
	}
	if len(fa.locks) != 2 {
		t.Errorf("locks %v, want a second lock after the unlock", fa.locks)
	}
}

// Issue 11.4's rule in the daemon: an AMI action Asterisk refuses is not
// sent again for every call.
func TestAddrLookupStopsWhenRefused(t *testing.T) {
	srv := amitest.NewServer(amitest.Config{Username: "u", Secret: "s", Write: []string{"system"}}) // Getvar needs call or reporting
	defer srv.Close()
	c, err := ami.Dial(context.Background(), ami.Config{Addr: srv.Addr(), Username: "u", Secret: "s", PingInterval: -1, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	set := DefaultSettings()
	set.Country = "US"
	mon, err := NewMonitor(set, Deps{AMI: c})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		srv.StartCall(amitest.Channel{Name: fmt.Sprintf("PJSIP/1004-%08d", i), Exten: "2125550100"})
		if a := mon.AddrLookup(context.Background(), fmt.Sprintf("PJSIP/1004-%08d", i)); a.IsValid() {
			t.Errorf("address %s from a refused Getvar", a)
		}
	}
	if n := len(srv.ReceivedNamed("Getvar")); n != 1 {
		t.Errorf("Getvar sent %d times after Asterisk refused it, want once", n)
	}
}

type memRecorder struct{ incs []*Incident }

func (m *memRecorder) RecordIncident(_ context.Context, inc *Incident) error {
	m.incs = append(m.incs, inc)
	return nil
}

// Issue 11.5: fraud.incident_log is written besides the daemon's store.
func TestIncidentLogBesidesTheStore(t *testing.T) {
	set := DefaultSettings()
	set.Country = "US"
	set.IncidentLog = filepath.Join(t.TempDir(), "incidents.jsonl")
	store := &memRecorder{}
	mon, err := NewMonitor(set, Deps{Recorder: store})
	if err != nil {
		t.Fatal(err)
	}
	mon.HandleEvent(context.Background(), event.Event{Kind: event.CallRejected, Addr: attackerAddr, Service: event.ServicePJSIP, Account: "01197225550281"}, t0)
	data, _ := os.ReadFile(set.IncidentLog)
	if len(store.incs) != 1 || !strings.Contains(string(data), `"rule":"unauth_intl"`) {
		t.Errorf("store %d incidents, incident log %q", len(store.incs), data)
	}
}
