package jail

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Issue 9 point 4: an attacker who floods spoofed UDP sources (one
// failure each) must not push out the counters of real attackers close to
// a ban. 1000 real attackers at maxretry-1, then 1.5M spoofed sources at
// the default cap (100000): every real attacker is banned at its next
// failure.
func TestFloodSparesNearBan(t *testing.T) {
	if testing.Short() {
		t.Skip("1.5M events")
	}
	clk := &fakeClock{t: t0}
	j, err := New(Config{Name: "flood"}, NewAllowlist(nil), nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	const real = 1000
	realAddr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, byte(113 + i/256), byte(i)}) }
	ev := event.Event{Service: event.ServiceIAX2, Kind: event.AuthFailure}
	at := t0
	for n := 0; n < j.cfg.MaxRetry-1; n++ {
		for i := range real {
			ev.Addr, ev.Time = realAddr(i), at
			if _, ok := j.Observe(&ev); ok {
				t.Fatal("banned too early")
			}
		}
		at = at.Add(time.Second)
	}
	for i := range 1_500_000 {
		ev.Addr = netip.AddrFrom4([4]byte{10 + byte(i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		ev.Time = at.Add(time.Duration(i) * 100 * time.Microsecond) // 150 s: within findtime
		if _, ok := j.Observe(&ev); ok {
			t.Fatal("a single failure banned")
		}
	}
	banned := 0
	for i := range real {
		ev.Addr, ev.Time = realAddr(i), at.Add(200*time.Second)
		if _, ok := j.Observe(&ev); ok {
			banned++
		}
	}
	checkLists(t, j)
	st := j.Stats()
	t.Logf("real attackers at maxretry-1 banned at their next failure: %d of %d; stats %+v", banned, real, st)
	if banned != real {
		t.Fatalf("%d of %d attackers at maxretry-1 survived the flood", banned, real)
	}
	if st.EvictedNearBan != 0 {
		t.Fatalf("%d near-ban entries evicted", st.EvictedNearBan)
	}
}

// Protected holds at most MaxTracked - MaxTracked/4 entries: beyond, its
// least recently seen goes back to probation, and is the next to go.
func TestProtectedCap(t *testing.T) {
	clk := &fakeClock{t: t0}
	j, _ := New(Config{Name: "cap", MaxTracked: 4, MaxRetry: 5}, NewAllowlist(nil), nil, clk)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}) }
	ev := event.Event{Service: event.ServiceIAX2, Kind: event.AuthFailure}
	for i := 1; i <= 4; i++ { // four addresses at two failures: the first is demoted
		for n := range 2 {
			ev.Addr, ev.Time = addr(i), t0.Add(time.Duration(2*i+n)*time.Second)
			j.Observe(&ev)
		}
	}
	if j.nseg[segProtected] != 3 || j.nseg[segProbation] != 1 || j.at(j.tail[segProbation]).key != addr(1).As16() {
		t.Fatalf("segments %v, probation tail %v", j.nseg, netip.AddrFrom16(j.at(j.tail[segProbation]).key))
	}
	ev.Addr, ev.Time = addr(5), t0.Add(20*time.Second) // evicts the demoted 1
	j.Observe(&ev)
	if s := j.Stats(); s.Evicted != 1 || s.EvictedNearBan != 1 {
		t.Fatalf("stats %+v", s)
	}
	if _, ok := j.idx.find(j, new(addr(1).As16())); ok {
		t.Fatal("the demoted address is still tracked")
	}
	checkLists(t, j)
	// Every entry banned: the least recently seen goes all the same.
	j, _ = New(Config{Name: "banned", MaxTracked: 1, MaxRetry: 1}, NewAllowlist(nil), nil, clk)
	ev.Addr, ev.Time = addr(1), t0
	if _, ok := j.Observe(&ev); !ok {
		t.Fatal("no ban")
	}
	ev.Addr = addr(2)
	if _, ok := j.Observe(&ev); !ok {
		t.Fatal("no ban of the second address")
	}
	if s := j.Stats(); s.Tracked != 1 || s.Evicted != 1 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := New(Config{Name: "tw", TwinWindow: time.Hour}, nil, nil, nil); err == nil {
		t.Fatal("a one-hour twin window was accepted")
	}
}
