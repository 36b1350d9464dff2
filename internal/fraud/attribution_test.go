package fraud

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
)

var (
	officeAddr   = netip.MustParseAddr("198.51.100.22")
	attackerAddr = netip.MustParseAddr("203.0.113.177")
)

func sparedAddrs(f Finding) []netip.Addr {
	var out []netip.Addr
	for _, s := range f.Spared {
		out = append(out, s.Addr)
	}
	return out
}

// Issue 11.1: the office phone of 1004 makes one ordinary call to a London
// number; minutes later the attacker dials the same number as 011… then
// 00…: only the attacker's address is banned.
func TestPrefixGuessingBansOnlyTheGuesser(t *testing.T) {
	e := newEngine(t, Config{})
	fs := runSteps(e, []step{
		{0, calls.CallStarted, "1004", "011442079460349", "office", officeAddr.String()},
		{time.Minute, calls.CallEnded, "1004", "011442079460349", "office", officeAddr.String()},
		{4 * time.Minute, calls.CallStarted, "1004", "011442079460349", "atk1", attackerAddr.String()},
		{4*time.Minute + time.Second, calls.CallStarted, "1004", "00442079460349", "atk2", attackerAddr.String()},
	})
	if len(fs) != 1 || fs[0].Rule != RulePrefixGuessing {
		t.Fatalf("findings %v, want one prefix_guessing", rules(fs))
	}
	f := fs[0]
	if !slices.Equal(f.Addrs, []netip.Addr{attackerAddr}) || !f.Response.Ban {
		t.Errorf("bans %v (ban %v), want only %s", f.Addrs, f.Response.Ban, attackerAddr)
	}
	if !slices.Equal(sparedAddrs(f), []netip.Addr{officeAddr}) {
		t.Errorf("spared %+v, want the office %s with its reason", f.Spared, officeAddr)
	}
	if !f.Response.Lock || !e.Contained("1004") {
		t.Error("the extension is still to be locked")
	}
}

// The rate rules: an address that placed one of the counted calls (the
// real user's) is not banned; the one that placed the burst is.
func TestRateRulesBanOnlyTheBurst(t *testing.T) {
	e := newEngine(t, Config{ConcurrentIntl: 100, CountriesPerWindow: 100})
	steps := []step{{0, calls.CallStarted, "1004", "011442079460001", "office", officeAddr.String()}}
	for i, n := range []string{"011442079460002", "011442079460003", "011442079460004", "011442079460005"} {
		steps = append(steps, step{time.Duration(i+2) * time.Minute, calls.CallStarted, "1004", n, "", attackerAddr.String()})
	}
	fs := runSteps(e, steps)
	if len(fs) != 1 || fs[0].Rule != RuleIntlRate {
		t.Fatalf("findings %v, want one intl_rate", rules(fs))
	}
	if !slices.Equal(fs[0].Addrs, []netip.Addr{attackerAddr}) || !slices.Equal(sparedAddrs(fs[0]), []netip.Addr{officeAddr}) {
		t.Errorf("bans %v spares %+v", fs[0].Addrs, fs[0].Spared)
	}
}

// An address with a long, clean registration history for the extension
// is not banned on call evidence alone; with a second signal (a failed
// authentication from it) it is.
func TestEstablishedAddressNeedsSecondSignal(t *testing.T) {
	for _, hostile := range []bool{false, true} {
		e := newEngine(t, Config{})
		auth := func(at time.Time) {
			e.Observe(calls.Update{Kind: calls.EndpointAuth, Call: calls.Call{Extension: "1004", SourceAddr: officeAddr, Start: at}}, at)
		}
		auth(t0.Add(-72 * time.Hour))
		auth(t0.Add(-time.Hour))
		if !e.Established("1004", officeAddr, t0) || e.Established("1004", attackerAddr, t0) {
			t.Fatal("Established")
		}
		if hostile {
			e.NoteHostile(officeAddr, t0.Add(-10*time.Minute))
		}
		fs := runSteps(e, []step{
			{0, calls.CallStarted, "1004", "011442079460349", "a", officeAddr.String()},
			{time.Second, calls.CallStarted, "1004", "00442079460349", "b", officeAddr.String()},
		})
		if len(fs) != 1 || fs[0].Rule != RulePrefixGuessing || !fs[0].Response.Lock {
			t.Fatalf("hostile=%v: findings %v", hostile, rules(fs))
		}
		f := fs[0]
		switch {
		case !hostile && (len(f.Addrs) != 0 || f.Response.Ban || len(f.Spared) != 1 || !strings.Contains(f.Spared[0].Reason, "established")):
			t.Errorf("clean established address: bans %v (ban %v), spared %+v; want none banned, spared as established", f.Addrs, f.Response.Ban, f.Spared)
		case hostile && (!slices.Equal(f.Addrs, []netip.Addr{officeAddr}) || !f.Response.Ban):
			t.Errorf("established address with a failed authentication: bans %v (ban %v), want it banned", f.Addrs, f.Response.Ban)
		}
	}
}

// Issue 11.7: a call seen through AMI at its start and again as its CDR
// row at hang-up counts once (by uniqueid; by channel when the CDR has no
// uniqueid column).
func TestAMIAndCDRRowCountOnce(t *testing.T) {
	e := newEngine(t, Config{IntlPerWindow: 5, ConcurrentIntl: 100, CountriesPerWindow: 100})
	var fs []Finding
	for i, n := range []string{"011442079460001", "011442079460002", "011442079460003"} {
		at := t0.Add(time.Duration(i) * 10 * time.Second)
		id, ch := "1795579390."+string(rune('1'+i)), "PJSIP/1004-0000000"+string(rune('1'+i))
		c := calls.Call{ID: id, Channel: ch, Extension: "1004", Dialled: n, Start: at, Live: true, Source: calls.SourceAMI, SourceAddr: attackerAddr}
		fs = append(fs, e.Observe(calls.Update{Kind: calls.CallStarted, Call: c}, at)...)
		row := c
		row.Live, row.End, row.Source = false, at.Add(5*time.Second), calls.SourceCDR
		if i == 2 {
			row.ID = "" // loguniqueid=no
		}
		fs = append(fs, e.Observe(calls.Update{Kind: calls.CallEnded, Call: row}, at.Add(5*time.Second))...)
	}
	if len(fs) != 0 {
		t.Errorf("3 calls seen twice each: findings %v", rules(fs))
	}
	if n := len(e.Recent("1004", t0.Add(time.Minute))); n != 3 {
		t.Errorf("%d calls remembered, want 3", n)
	}
}
