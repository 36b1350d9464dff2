package jail

import (
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

type history map[netip.Addr]int

func (h history) PriorBans(a netip.Addr) int { return h[a] }

// step is one event (or a Tick) at t0+at, with the decision it must yield.
type step struct {
	at   time.Duration
	addr string
	kind event.Kind
	tick bool
	// want: "" = no decision; otherwise the banned prefix, and the other
	// fields below when set.
	want     string
	dur      time.Duration
	count    int
	failures int
	reason   string // substring
}

func run(t *testing.T, cfg Config, allow []string, hist History, steps []step) *Jail {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	var ps []netip.Prefix
	for _, a := range allow {
		ps = append(ps, netip.MustParsePrefix(a))
	}
	clk := &fakeClock{t: t0}
	j, err := New(cfg, NewAllowlist(ps), hist, clk)
	if err != nil {
		t.Fatal(err)
	}
	for n, s := range steps {
		clk.t = t0.Add(s.at)
		var ds []Decision
		if s.tick {
			ds = j.Tick(clk.t)
		} else {
			ev := &event.Event{Time: clk.t, Addr: netip.MustParseAddr(s.addr), Kind: s.kind}
			if d, ok := j.Observe(ev); ok {
				ds = append(ds, d)
			}
		}
		if s.want == "" {
			if len(ds) != 0 {
				t.Fatalf("step %d (%+v): unexpected decisions %+v", n, s, ds)
			}
			continue
		}
		if len(ds) != 1 {
			t.Fatalf("step %d (%+v): want one decision for %s, got %+v", n, s, s.want, ds)
		}
		d := ds[0]
		if d.Prefix.String() != s.want {
			t.Fatalf("step %d: banned %v, want %s (%+v)", n, d.Prefix, s.want, d)
		}
		if s.dur != 0 && d.Duration != s.dur {
			t.Fatalf("step %d: duration %v, want %v", n, d.Duration, s.dur)
		}
		if s.count != 0 && d.BanCount != s.count {
			t.Fatalf("step %d: ban count %d, want %d", n, d.BanCount, s.count)
		}
		if s.failures != 0 && d.Failures != s.failures {
			t.Fatalf("step %d: failures %d, want %d", n, d.Failures, s.failures)
		}
		if s.reason != "" && !strings.Contains(d.Reason, s.reason) {
			t.Fatalf("step %d: reason %q does not contain %q", n, d.Reason, s.reason)
		}
		if d.Jail != cfg.Name || !d.Until.Equal(d.At.Add(d.Duration)) || !d.At.Equal(clk.t) {
			t.Fatalf("step %d: decision %+v", n, d)
		}
	}
	return j
}

const (
	fail  = event.AuthFailure
	unk   = event.UnknownAccount
	chal  = event.ChallengeSent
	succ  = event.AuthSuccess
	scan  = event.Scan
	sec   = time.Second
	min_  = time.Minute
	hour  = time.Hour
	a     = "203.0.113.5"
	b     = "198.51.100.7"
	c     = "192.0.2.9"
	v6a   = "2001:db8:1:2::10"
	v6b   = "2001:db8:1:2:ffff::99"
	mapdA = "::ffff:203.0.113.5"
)

func TestWindows(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"five within findtime ban", Config{}, []step{
			{at: 0, addr: a, kind: fail}, {at: 1 * min_, addr: a, kind: unk}, {at: 2 * min_, addr: a, kind: fail},
			{at: 3 * min_, addr: a, kind: unk},
			{at: 9*min_ + 59*sec, addr: a, kind: fail, want: a + "/32", dur: hour, count: 1, failures: 5,
				reason: "5 failures in 10m0s: auth_failure×3 unknown_account×2"},
		}},
		{"five spread over exactly findtime do not", Config{}, []step{
			{at: 0, addr: a, kind: fail}, {at: 150 * sec, addr: a, kind: fail}, {at: 300 * sec, addr: a, kind: fail},
			{at: 450 * sec, addr: a, kind: fail}, {at: 600 * sec, addr: a, kind: fail},
			{at: 601 * sec, addr: a, kind: fail, want: a + "/32"}, // now 150..601 hold five
		}},
		{"addresses counted apart", Config{MaxRetry: 2}, []step{
			{at: 0, addr: a, kind: fail}, {at: sec, addr: b, kind: fail}, {at: 2 * sec, addr: c, kind: fail},
			{at: 3 * sec, addr: b, kind: fail, want: b + "/32"},
		}},
		{"IPv4-mapped is the IPv4 address", Config{MaxRetry: 2}, []step{
			{at: 0, addr: mapdA, kind: fail}, {at: sec, addr: a, kind: fail, want: a + "/32"},
		}},
		{"banned address not decided again until Until", Config{MaxRetry: 2}, []step{
			{at: 0, addr: a, kind: fail}, {at: sec, addr: a, kind: fail, want: a + "/32", count: 1},
			{at: 2 * sec, addr: a, kind: fail}, {at: 3 * sec, addr: a, kind: fail}, {at: 30 * min_, addr: a, kind: scan},
			{at: hour + sec, addr: a, kind: fail}, // the ban is over: the window starts afresh
			{at: hour + 2*sec, addr: a, kind: fail, want: a + "/32", count: 2, dur: 2 * hour},
		}},
		{"scan bans at once", Config{}, []step{
			{at: 0, addr: a, kind: scan, want: a + "/32", failures: 5, reason: "scan×5"},
		}},
		{"more than eight failures needed", Config{MaxRetry: 12, FindTime: 100 * sec}, []step{
			{at: 0, addr: a, kind: fail}, {at: 1 * sec, addr: a, kind: fail}, {at: 2 * sec, addr: a, kind: fail},
			{at: 3 * sec, addr: a, kind: fail}, {at: 4 * sec, addr: a, kind: fail}, {at: 5 * sec, addr: a, kind: fail},
			{at: 6 * sec, addr: a, kind: fail}, {at: 7 * sec, addr: a, kind: fail}, {at: 8 * sec, addr: a, kind: fail},
			{at: 9 * sec, addr: a, kind: fail}, {at: 10 * sec, addr: a, kind: fail},
			{at: 11 * sec, addr: a, kind: fail, want: a + "/32", failures: 12},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.cfg, nil, nil, tc.steps) })
	}
}

func TestIncrements(t *testing.T) {
	ban := func(at time.Duration, want time.Duration, count int) []step {
		return []step{{at: at, addr: a, kind: fail}, {at: at + sec, addr: a, kind: fail, want: a + "/32", dur: want, count: count}}
	}
	var steps []step
	steps = append(steps, ban(0, hour, 1)...)
	steps = append(steps, ban(2*hour, 2*hour, 2)...)
	steps = append(steps, ban(5*hour, 4*hour, 3)...)
	steps = append(steps, ban(10*hour, 5*hour, 4)...) // capped at MaxBanTime
	steps = append(steps, ban(16*hour, 5*hour, 5)...)
	run(t, Config{MaxRetry: 2, MaxBanTime: 5 * hour}, nil, nil, steps)

	t.Run("from history", func(t *testing.T) {
		run(t, Config{MaxRetry: 2, Increment: 3}, nil, history{netip.MustParseAddr(a): 2}, []step{
			{at: 0, addr: a, kind: fail}, {at: sec, addr: a, kind: fail, want: a + "/32", dur: 9 * hour, count: 3},
			{at: 0, addr: b, kind: fail}, {at: sec, addr: b, kind: fail, want: b + "/32", dur: hour, count: 1},
		})
	})
	t.Run("no growth", func(t *testing.T) {
		var steps []step
		steps = append(steps, ban(0, hour, 1)...)
		steps = append(steps, ban(2*hour, hour, 2)...)
		run(t, Config{MaxRetry: 2, Increment: 1}, nil, nil, steps)
	})
}

func TestWeights(t *testing.T) {
	run(t, Config{Weights: map[event.Kind]int{event.AuthFailure: 2, event.UnknownAccount: 0}}, nil, nil, []step{
		{at: 0, addr: a, kind: unk}, {at: 1, addr: a, kind: unk}, {at: 2, addr: a, kind: unk},
		{at: 3 * sec, addr: a, kind: fail}, {at: 4 * sec, addr: a, kind: fail},
		{at: 5 * sec, addr: a, kind: fail, want: a + "/32", failures: 6, reason: "auth_failure×6"},
		{at: 0, addr: b, kind: event.BadRequest}, {at: sec, addr: b, kind: event.ACLViolation},
		{at: 2 * sec, addr: b, kind: event.CallRejected}, {at: 3 * sec, addr: b, kind: event.InjectionSuspect},
		{at: 4 * sec, addr: b, kind: event.KindNone}, {at: 5 * sec, addr: b, kind: fail, want: b + "/32", failures: 5},
	})
}

func TestAllowlist(t *testing.T) {
	allow := []string{"203.0.113.0/24", "2001:db8:1:2::10/128", "::ffff:198.51.100.0/120"}
	j := run(t, Config{MaxRetry: 1, IPv6Prefix: 64}, allow, nil, []step{
		{at: 0, addr: a, kind: scan}, {at: sec, addr: a, kind: fail},
		{at: 2 * sec, addr: b, kind: scan}, // in the ::ffff: form of the list
		{at: 3 * sec, addr: v6a, kind: scan},
		// Another address of the allowlisted address's /64: ban it alone.
		{at: 4 * sec, addr: v6b, kind: fail, want: v6b + "/128", reason: "allowlisted"},
		{at: 5 * sec, addr: "2001:db8:9::1", kind: fail, want: "2001:db8:9::/64"},
		{at: 6 * sec, addr: c, kind: fail, want: c + "/32"},
	})
	if s := j.Stats(); s.AllowlistedSkipped != 4 || s.Decisions != 3 {
		t.Fatalf("stats %+v", s)
	}

	al := NewAllowlist([]netip.Prefix{netip.MustParsePrefix("2001:db8:1:2::10/128"), netip.MustParsePrefix("10.0.0.0/8")})
	for _, tc := range []struct {
		p    string
		want bool
	}{
		{"2001:db8:1:2::/64", true}, {"2001:db8:1:3::/64", false}, {"2001:db8::/32", true},
		{"10.1.2.3/32", true}, {"11.0.0.0/8", false}, {"0.0.0.0/0", true}, {"::ffff:10.0.0.1/128", true},
	} {
		if got := al.Overlaps(netip.MustParsePrefix(tc.p)); got != tc.want {
			t.Errorf("Overlaps(%s) = %v", tc.p, got)
		}
	}
	for addr, want := range map[string]bool{"10.9.9.9": true, "::ffff:10.9.9.9": true, "fe80::1%eth0": false, "2001:db8:1:2::10": true, "2001:db8:1:2::11": false} {
		if got := al.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v", addr, got)
		}
	}
	var nilList *Allowlist
	if nilList.Contains(netip.MustParseAddr(a)) || nilList.Overlaps(netip.MustParsePrefix("0.0.0.0/0")) {
		t.Error("nil allowlist contains something")
	}
}

func TestIPv6PrefixNextToAllowlisted(t *testing.T) {
	// The /64 holds an allowlisted address: its other addresses are
	// counted and banned one by one, none hides behind the neighbour.
	run(t, Config{MaxRetry: 2, IPv6Prefix: 64}, []string{"2001:db8:1:2::10/128"}, nil, []step{
		{at: 0, addr: "2001:db8:1:2::20", kind: fail},
		{at: sec, addr: "2001:db8:1:2::30", kind: fail},
		{at: 2 * sec, addr: "2001:db8:1:2::20", kind: fail, want: "2001:db8:1:2::20/128"},
		{at: 3 * sec, addr: "2001:db8:1:2::30", kind: fail, want: "2001:db8:1:2::30/128"},
		{at: 4 * sec, addr: "2001:db8:1:2::10", kind: scan},
	})
}

func TestMarkBanned(t *testing.T) {
	clk := &fakeClock{t: t0}
	j, err := New(Config{Name: "x", MaxRetry: 1}, NewAllowlist([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}), nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	j.MarkBanned(netip.MustParseAddr(a), t0.Add(hour), 2)
	j.MarkBanned(netip.MustParseAddr(c), t0.Add(hour), 1) // allowlisted: ignored
	obs := func(at time.Duration, addr string) (Decision, bool) {
		clk.t = t0.Add(at)
		return j.Observe(&event.Event{Time: clk.t, Addr: netip.MustParseAddr(addr), Kind: scan})
	}
	if d, ok := obs(sec, a); ok {
		t.Fatalf("decided an address marked banned: %+v", d)
	}
	if _, ok := obs(sec, c); ok {
		t.Fatal("decided an allowlisted address")
	}
	d, ok := obs(hour+sec, a)
	if !ok || d.BanCount != 3 || d.Duration != 4*hour {
		t.Fatalf("after the marked ban: %+v %v", d, ok)
	}
	if s := j.Stats(); s.Tracked != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// FuzzObserve: any sequence of events never panics, never decides an
// allowlisted address, and never decides an address twice while banned.
func FuzzObserve(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	f.Add([]byte{7, 7, 7, 7, 7, 7, 255, 6, 6, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		clk := &fakeClock{t: t0}
		allow := NewAllowlist([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/28"), netip.MustParsePrefix("2001:db8::/127")})
		j, err := New(Config{Name: "f", MaxRetry: 3, FindTime: 30 * sec, BanTime: 20 * sec, MaxTracked: 5, IPv6Prefix: 120}, allow, nil, clk)
		if err != nil {
			t.Fatal(err)
		}
		banned := map[netip.Prefix]time.Time{}
		checkD := func(d Decision) {
			if allow.Overlaps(d.Prefix) || allow.Contains(d.Addr) || !d.Prefix.Contains(d.Addr) {
				t.Fatalf("decision touches the allowlist or misses its address: %+v", d)
			}
			if until, ok := banned[d.Prefix]; ok && clk.t.Before(until) {
				t.Fatalf("decided %v again while banned until %v", d.Prefix, until)
			}
			banned[d.Prefix] = d.Until
		}
		for i := 0; i+1 < len(data); i += 2 {
			op, arg := data[i], data[i+1]
			clk.t = clk.t.Add(time.Duration(op>>4) * sec)
			if op&15 == 15 {
				for _, d := range j.Tick(clk.t) {
					checkD(d)
				}
				continue
			}
			var addr netip.Addr
			if arg&1 == 0 {
				addr = netip.AddrFrom4([4]byte{203, 0, 113, arg >> 3})
			} else {
				addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: arg >> 6, 15: arg >> 1 & 3})
			}
			if arg&2 != 0 && op&3 == 0 {
				j.Forget(addr)
				for p := range banned {
					if p.Contains(addr) {
						delete(banned, p)
					}
				}
				continue
			}
			ev := &event.Event{Time: clk.t, Addr: addr, Kind: event.Kind(op & 15 % uint8(event.NumKinds)),
				Service: event.ServicePJSIP, Structured: arg&4 != 0, Port: 5060}
			if d, ok := j.Observe(ev); ok {
				checkD(d)
			}
		}
		if s := j.Stats(); s.Tracked > 5 {
			t.Fatalf("tracked %d > cap", s.Tracked)
		}
		checkLists(t, j)
	})
}

// checkLists verifies the segmented LRU: both lists well linked, their
// entries in the right segment and in the index, the counts right.
func checkLists(t *testing.T, j *Jail) {
	t.Helper()
	total := 0
	for sg := range 2 {
		n, prev := 0, int32(-1)
		for i := j.head[sg]; i >= 0; i = j.at(i).next {
			e := j.at(i)
			if e.prev != prev || int(e.seg) != sg {
				t.Fatalf("segment %d: entry %d has prev %d (want %d), seg %d", sg, i, e.prev, prev, e.seg)
			}
			if k, ok := j.idx.find(j, &e.key); !ok || k != i {
				t.Fatalf("entry %d not in the index", i)
			}
			prev = i
			n++
		}
		if j.tail[sg] != prev || int32(n) != j.nseg[sg] {
			t.Fatalf("segment %d: tail %d (want %d), %d entries, count %d", sg, j.tail[sg], prev, n, j.nseg[sg])
		}
		total += n
	}
	if total != int(j.tracked.Load()) || j.nseg[segProtected] > j.protCap {
		t.Fatalf("lists hold %d, tracked %d, protected %d of %d", total, j.tracked.Load(), j.nseg[segProtected], j.protCap)
	}
}

func TestIPv6Prefix(t *testing.T) {
	run(t, Config{MaxRetry: 3, IPv6Prefix: 64}, nil, nil, []step{
		{at: 0, addr: "2001:db8:5:6::1", kind: fail},
		{at: sec, addr: "2001:db8:5:6::2", kind: fail},
		{at: 2 * sec, addr: "2001:db8:5:7::3", kind: fail}, // another /64
		{at: 3 * sec, addr: "2001:db8:5:6:abcd::3", kind: fail, want: "2001:db8:5:6::/64"},
		{at: 4 * sec, addr: "2001:db8:5:6::77", kind: scan}, // the /64 is banned
	})
	run(t, Config{MaxRetry: 2}, nil, nil, []step{ // /128 mode counts addresses apart
		{at: 0, addr: "2001:db8:5:6::1", kind: fail}, {at: sec, addr: "2001:db8:5:6::2", kind: fail},
		{at: 2 * sec, addr: "2001:db8:5:6::2", kind: fail, want: "2001:db8:5:6::2/128"},
	})
}

func TestEviction(t *testing.T) {
	// Segmented LRU: a (two failures, close to a ban) is protected; the
	// one-failure addresses churn among themselves.
	j := run(t, Config{MaxRetry: 3, MaxTracked: 2}, nil, nil, []step{
		{at: 0, addr: a, kind: fail}, {at: sec, addr: a, kind: fail},
		{at: 2 * sec, addr: b, kind: fail},
		{at: 3 * sec, addr: a, kind: chal},
		{at: 4 * sec, addr: c, kind: fail}, // evicts b (one failure), not a
		{at: 5 * sec, addr: b, kind: fail}, // b starts afresh, evicts c: a is still spared
		{at: 6 * sec, addr: b, kind: fail},
		{at: 7 * sec, addr: a, kind: fail, want: a + "/32"}, // a's count survived
		{at: 8 * sec, addr: b, kind: fail, want: b + "/32"},
	})
	if s := j.Stats(); s.Tracked != 2 || s.Evicted != 2 || s.EvictedNearBan != 0 {
		t.Fatalf("stats %+v", s)
	}
	// With a cap of one, the protected address goes when it must.
	j1 := run(t, Config{MaxRetry: 3, MaxTracked: 1}, nil, nil, []step{
		{at: 0, addr: a, kind: fail}, {at: sec, addr: a, kind: fail},
		{at: 2 * sec, addr: b, kind: fail}, // evicts a
		{at: 3 * sec, addr: a, kind: fail}, // afresh, evicts b
	})
	if s := j1.Stats(); s.Tracked != 1 || s.Evicted != 2 || s.EvictedNearBan != 1 {
		t.Fatalf("cap 1: stats %+v", s)
	}
	j.Forget(netip.MustParseAddr(b))
	j.Forget(netip.MustParseAddr(c)) // not tracked: no-op
	if s := j.Stats(); s.Tracked != 1 {
		t.Fatalf("after Forget: %+v", s)
	}
}

func TestEvictionSparesBanned(t *testing.T) {
	run(t, Config{MaxRetry: 1, MaxTracked: 2}, nil, nil, []step{
		{at: 0, addr: a, kind: fail, want: a + "/32"},
		{at: sec, addr: b, kind: chal},
		{at: 2 * sec, addr: c, kind: chal},    // evicts b, not the banned a
		{at: 3 * sec, addr: a, kind: scan},    // still known as banned
		{at: hour + sec, addr: b, kind: chal}, // evicts c (a was seen at 3 s)
		{at: hour + 2*sec, addr: a, kind: fail, want: a + "/32", count: 2},
		{at: hour + 3*sec, addr: c, kind: chal}, // evicts b: a is banned again
		{at: hour + 4*sec, addr: b, kind: chal}, // evicts c
		{at: hour + 5*sec, addr: a, kind: scan},
	})
}

func TestForget(t *testing.T) {
	clk := &fakeClock{t: t0}
	j, err := New(Config{Name: "x", MaxRetry: 2}, nil, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	obs := func(at time.Duration) bool {
		_, ok := j.Observe(&event.Event{Time: t0.Add(at), Addr: netip.MustParseAddr(a), Kind: fail})
		return ok
	}
	if obs(0) || !obs(sec) || obs(2*sec) {
		t.Fatal("first ban")
	}
	j.Forget(netip.MustParseAddr(a)) // unbanned by hand: judged afresh
	if obs(3*sec) || !obs(4*sec) {
		t.Fatal("after Forget")
	}
}

func TestChallengeCorrelation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"phone re-registering: challenge then success", Config{MaxRetry: 1}, []step{
			{at: 0, addr: a, kind: chal}, {at: 0, addr: a, kind: succ},
			{at: 10 * sec, addr: a, kind: chal}, {at: 10 * sec, addr: a, kind: succ},
			{at: 30 * sec, tick: true},
		}},
		{"unanswered challenge counts after the timeout", Config{MaxRetry: 1}, []step{
			{at: 0, addr: a, kind: chal},
			{at: 3 * sec, tick: true},
			{at: 5 * sec, tick: true}, // exactly the timeout: not yet
			{at: 6 * sec, tick: true, want: a + "/32", reason: "challenge_sent×1"},
		}},
		{"challenge then explicit failure counts once", Config{MaxRetry: 2}, []step{
			{at: 0, addr: a, kind: chal}, {at: 0, addr: a, kind: fail},
			{at: 20 * sec, tick: true},
			{at: 30 * sec, addr: b, kind: chal}, {at: 30 * sec, addr: b, kind: fail},
			{at: 31 * sec, addr: b, kind: chal}, {at: 31 * sec, addr: b, kind: unk, want: b + "/32", failures: 2},
		}},
		{"failure then the challenge of the same request counts once", Config{MaxRetry: 2}, []step{
			{at: 0, addr: a, kind: unk}, {at: 0, addr: a, kind: chal},
			{at: 20 * sec, tick: true},
			{at: 21 * sec, addr: a, kind: unk, want: a + "/32", failures: 2, reason: "unknown_account×2"},
		}},
		{"enumeration: unanswered challenges each count", Config{}, []step{
			{at: 0, addr: a, kind: chal}, {at: 100 * time.Millisecond, addr: a, kind: chal},
			{at: 200 * time.Millisecond, addr: a, kind: chal}, {at: sec, addr: a, kind: chal},
			{at: 2 * sec, addr: a, kind: chal}, {at: 2 * sec, addr: b, kind: chal},
			{at: 4 * sec, tick: true},
			{at: 6 * sec, tick: true, want: a + "/32", failures: 5, reason: "challenge_sent×5"},
			{at: 8 * sec, tick: true}, // b: one failure only
		}},
		{"a later event after the timeout: the challenge still counts", Config{MaxRetry: 2}, []step{
			{at: 0, addr: a, kind: chal},
			{at: 10 * sec, addr: a, kind: fail, want: a + "/32", reason: "auth_failure×1 challenge_sent×1"},
		}},
		{"success after the timeout does not erase the failure", Config{MaxRetry: 2}, []step{
			{at: 0, addr: a, kind: chal},
			{at: 10 * sec, addr: a, kind: succ},
			{at: 11 * sec, addr: a, kind: fail, want: a + "/32"},
		}},
		{"registered phone: unanswered keep-alive challenges do not count", Config{MaxRetry: 3}, []step{
			{at: 0, addr: a, kind: chal}, {at: 0, addr: a, kind: succ},
			{at: 30 * sec, addr: a, kind: chal}, {at: 60 * sec, addr: a, kind: chal},
			{at: 90 * sec, addr: a, kind: chal}, {at: 120 * sec, addr: a, kind: chal},
			{at: 200 * sec, tick: true},
			{at: 201 * sec, addr: b, kind: chal}, {at: 231 * sec, addr: b, kind: chal}, // b never authenticated
			{at: 261 * sec, addr: b, kind: chal},
			{at: 300 * sec, tick: true, want: b + "/32", reason: "challenge_sent×3"},
			// Its explicit failures still count.
			{at: 301 * sec, addr: a, kind: fail}, {at: 302 * sec, addr: a, kind: fail},
			{at: 303 * sec, addr: a, kind: fail, want: a + "/32"},
		}},
		{"success grace runs out", Config{MaxRetry: 1, SuccessGrace: 10 * min_}, []step{
			{at: 0, addr: a, kind: succ},
			{at: 5 * min_, addr: a, kind: chal}, {at: 6 * min_, tick: true},
			{at: 11 * min_, addr: a, kind: chal}, {at: 12 * min_, tick: true, want: a + "/32"},
		}},
		{"correlation off", Config{MaxRetry: 1, Weights: map[event.Kind]int{event.ChallengeSent: 0}}, []step{
			{at: 0, addr: a, kind: chal}, {at: 20 * sec, tick: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.cfg, nil, nil, tc.steps) })
	}
}

// A log replayed a day later: Tick runs on wall time, events carry the
// log's times; a challenge answered one second later (log time) must not
// count even though a Tick ran in between.
func TestChallengeReplayUsesEventTime(t *testing.T) {
	clk := &fakeClock{t: t0}
	j, err := New(Config{Name: "x", MaxRetry: 1}, nil, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	old := t0.Add(-24 * hour)
	obs := func(at time.Time, addr string, k event.Kind) {
		if d, ok := j.Observe(&event.Event{Time: at, Addr: netip.MustParseAddr(addr), Kind: k}); ok {
			t.Fatalf("unexpected decision %+v", d)
		}
	}
	obs(old, a, chal)
	obs(old, b, chal)
	clk.t = t0.Add(sec)
	if ds := j.Tick(clk.t); len(ds) != 0 {
		t.Fatalf("tick counted a challenge by wall time: %+v", ds)
	}
	obs(old.Add(sec), a, succ)
	// 10 s of wall time later, b's challenge went unanswered: it counts.
	clk.t = t0.Add(11 * sec)
	ds := j.Tick(clk.t)
	if len(ds) != 1 || ds[0].Addr != netip.MustParseAddr(b) {
		t.Fatalf("decisions %+v", ds)
	}
}

// One event stamped a year ahead must not make Tick expire every later
// challenge at once.
func TestFutureEventDoesNotRushChallenges(t *testing.T) {
	clk := &fakeClock{t: t0}
	j, err := New(Config{Name: "x", MaxRetry: 1}, nil, nil, clk)
	if err != nil {
		t.Fatal(err)
	}
	j.Observe(&event.Event{Time: t0.Add(365 * 24 * hour), Addr: netip.MustParseAddr(b), Kind: event.CallRejected})
	j.Observe(&event.Event{Time: t0, Addr: netip.MustParseAddr(a), Kind: chal})
	clk.t = t0.Add(sec)
	if ds := j.Tick(clk.t); len(ds) != 0 {
		t.Fatalf("challenge expired 1 s after it was sent: %+v", ds)
	}
	j.Observe(&event.Event{Time: clk.t, Addr: netip.MustParseAddr(a), Kind: succ})
	clk.t = t0.Add(2 * hour)
	if ds := j.Tick(clk.t); len(ds) != 0 {
		t.Fatalf("answered challenge counted: %+v", ds)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "name is empty"},
		{Config{Name: "x", MaxRetry: -1}, "maxretry: -1 is out of range"},
		{Config{Name: "x", MaxRetry: 300}, "maxretry: 300"},
		{Config{Name: "x", FindTime: time.Millisecond}, "findtime"},
		{Config{Name: "x", BanTime: 2 * hour, MaxBanTime: hour}, "maxbantime: 1h0m0s is shorter than bantime 2h0m0s"},
		{Config{Name: "x", Increment: 0.5}, "increment"},
		{Config{Name: "x", IPv6Prefix: 8}, "ipv6_prefix"},
		{Config{Name: "x", MaxTracked: -5}, "max_tracked"},
		{Config{Name: "x", ChallengeTimeout: -sec}, "challenge_timeout"},
		{Config{Name: "x", SuccessGrace: -sec}, "success_grace"},
		{Config{Name: "x", Weights: map[event.Kind]int{event.AuthSuccess: 1}}, "weights.auth_success"},
		{Config{Name: "x", Weights: map[event.Kind]int{event.Scan: 256}}, "weights.scan: 256"},
		{Config{Name: "x", Weights: map[event.Kind]int{event.Kind(200): 1}}, "unknown event kind"},
	} {
		_, err := New(tc.cfg, nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
	j, err := New(Config{Name: "asterisk"}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := j.Config()
	if got.MaxRetry != 5 || got.FindTime != 10*min_ || got.BanTime != hour || got.MaxBanTime != 7*24*hour ||
		got.Increment != 2 || got.ChallengeTimeout != 5*sec || got.MaxTracked != 100000 {
		t.Fatalf("defaults %+v", got)
	}
}

func TestObserveIgnoresInvalid(t *testing.T) {
	j, _ := New(Config{Name: "x", MaxRetry: 1}, nil, nil, &fakeClock{t0})
	if _, ok := j.Observe(&event.Event{Kind: event.Scan}); ok {
		t.Fatal("decision without an address")
	}
	if _, ok := j.Observe(nil); ok {
		t.Fatal("decision for nil")
	}
	// An event without a time uses the clock.
	d, ok := j.Observe(&event.Event{Addr: netip.MustParseAddr(a), Kind: event.Scan})
	if !ok || !d.At.Equal(t0) {
		t.Fatalf("%+v %v", d, ok)
	}
}

func addrN(i int) netip.Addr {
	if i%4 == 3 {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 7: byte(i >> 24), 8: byte(i >> 16), 9: byte(i >> 8), 15: byte(i)})
	}
	return netip.AddrFrom4([4]byte{byte(10 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
}

// trackMany observes one failure from each of n addresses and returns the
// heap bytes per tracked address.
func trackMany(tb testing.TB, n int) float64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	j, err := New(Config{Name: "mem", MaxTracked: n}, nil, nil, &fakeClock{t0})
	if err != nil {
		tb.Fatal(err)
	}
	ev := event.Event{Time: t0, Kind: event.AuthFailure}
	for i := range n {
		ev.Addr = addrN(i)
		ev.Time = t0.Add(time.Duration(i) * time.Millisecond)
		j.Observe(&ev)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if s := j.Stats(); s.Tracked != n || s.Evicted != 0 {
		tb.Fatalf("stats %+v", s)
	}
	runtime.KeepAlive(j)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// TestMemoryPerAddress: 1M tracked addresses cost < 150 bytes each (heap
// after GC, so deterministic up to map growth).
func TestMemoryPerAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("1M addresses")
	}
	per := trackMany(t, 1_000_000)
	t.Logf("%.1f bytes per tracked address (1M addresses)", per)
	if per >= 150 {
		t.Fatalf("%.1f bytes per tracked address, want < 150", per)
	}
}

func BenchmarkMemory1M(b *testing.B) {
	var per float64
	for b.Loop() {
		per = trackMany(b, 1_000_000)
	}
	b.ReportMetric(per, "bytes/address")
}

// BenchmarkObserve: 100k tracked addresses, each failing once per 1000 s of
// event time (no decisions): the steady state of a jail under a scan.
func BenchmarkObserve(b *testing.B) {
	benchObserve(b, 100_000, 200_000)
}

// BenchmarkObserveEvict: 100k addresses through a jail capped at 50k: every
// event evicts one and inserts one.
func BenchmarkObserveEvict(b *testing.B) {
	benchObserve(b, 100_000, 50_000)
}

func benchObserve(b *testing.B, addrs, maxTracked int) {
	j, err := New(Config{Name: "bench", MaxTracked: maxTracked}, NewAllowlist([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}), nil, &fakeClock{t0})
	if err != nil {
		b.Fatal(err)
	}
	pool := make([]netip.Addr, addrs)
	for i := range pool {
		pool[i] = addrN(i)
	}
	kinds := []event.Kind{event.AuthFailure, event.UnknownAccount, event.ChallengeSent, event.AuthSuccess}
	ev := event.Event{Kind: event.AuthFailure}
	i := 0
	step := func() {
		ev.Addr = pool[i%addrs]
		ev.Kind = kinds[(i/addrs)%len(kinds)]
		ev.Time = t0.Add(time.Duration(i) * 10 * time.Millisecond)
		if _, ok := j.Observe(&ev); ok {
			b.Fatal("unexpected decision")
		}
		if i%100 == 0 {
			j.Tick(ev.Time)
		}
		i++
	}
	for range 2 * addrs { // warm up: map and slab at full size
		step()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		step()
	}
}
