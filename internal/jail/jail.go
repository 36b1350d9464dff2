// Package jail turns events into ban decisions: a sliding window of failures
// per address (maxretry within findtime), ban times that grow for repeat
// offenders, challenge/success correlation, optional IPv6 prefix bans, and
// the allowlist, which wins over everything. It does no I/O and reads time
// from the events (or an injected Clock).
//
// Memory is bounded by Config.MaxTracked (a segmented LRU: addresses with
// one failure are evicted before those with two or more, so a flood of
// spoofed sources cannot push out an address close to a ban; banned ones
// are passed over) and small per address: an open-addressing index
// (index.go) into a slab of fixed 120-byte entries linked in intrusive LRU
// lists, about 137 bytes per tracked address in all (TestMemoryPerAddress).
// Windows have one-second resolution and keep the last 8 failures of an
// address exactly (maxretry <= 8 is exact; above, the two oldest failures
// merge and the older one counts a little longer).
package jail

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Clock gives the time for events without one and for Decision.At.
type Clock interface{ Now() time.Time }

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// History tells how often an address was banned before (store-backed).
type History interface {
	PriorBans(addr netip.Addr) int
}

// Config is one jail. Zero fields take the defaults in brackets.
type Config struct {
	Name     string
	MaxRetry int           // failures within FindTime that ban [5]; at most 255
	FindTime time.Duration // [10m]; at least 1s (windows have 1 s resolution)
	BanTime  time.Duration // first ban [1h]
	// MaxBanTime caps the growth [1w]; Increment is the factor per prior ban
	// [2]: bantime * Increment^priorBans, capped at MaxBanTime. 1 = no growth.
	MaxBanTime time.Duration
	Increment  float64
	// Weights is how many failures an event of a kind counts for. Defaults:
	// 1 for every failure kind and for an unanswered challenge
	// (challenge_sent), MaxRetry for scan (bans at once). 0 ignores a kind
	// (challenge_sent: 0 turns the correlation off). auth_success must stay 0.
	Weights map[event.Kind]int
	// ChallengeTimeout [5s]: a challenge_sent followed by no auth_success and
	// no other event from the address within this time counts as a failure.
	ChallengeTimeout time.Duration
	// IPv6Prefix: 0 bans (and counts) single IPv6 addresses; n (e.g. 64)
	// counts all addresses of an IPv6 /n together and bans the /n, or the
	// single address when the /n would cover an allowlisted address.
	IPv6Prefix int
	MaxTracked int // cap on tracked addresses, least recently seen evicted [100000]
	// SuccessGrace [1h]: unanswered challenges from an address that
	// authenticated successfully within this time do not count (a
	// registered phone whose keep-alive OPTIONS are challenged and never
	// answered is not an attacker). Its explicit failures still count.
	SuccessGrace time.Duration
	// TwinWindow [2s]: Asterisk reports most SIP, PJSIP and AMI failures
	// of one request twice, as a free-text NOTICE and as a structured
	// SecurityEvent (or AMI security event), and the daemon may follow both
	// files. Twins are paired per request: an event is not counted when its
	// twin of the other form was counted for the same request — same
	// address, same kind and service, same account, same source port and
	// Call-ID where both carry them — within TwinWindow of event time. Each
	// counted event pairs with at most one twin, in either arrival order,
	// so nothing is counted twice and a structured event never hides a
	// NOTICE of another request. Asterisk stamps both lines of a request
	// within the same second or the next (the security line passes through
	// stasis), so 2s is plenty while keeping an attacker's other requests
	// apart. A negative TwinWindow turns pairing off (every event counts).
	TwinWindow time.Duration
}

// Decision is a ban.
type Decision struct {
	Jail     string
	Addr     netip.Addr   // the offending address (for a prefix ban decided by Tick: the prefix's first address)
	Prefix   netip.Prefix // what to ban: Addr/32, Addr/128 or the IPv6 prefix
	At       time.Time    // when decided (Clock)
	Duration time.Duration
	Until    time.Time // At + Duration
	BanCount int       // 1 = first ban
	Reason   string    // e.g. "5 failures in 10m0s: auth_failure×3 unknown_account×2"
	Failures int
}

// Stats are the jail's counters; Stats() may be called from any goroutine.
type Stats struct {
	Tracked            int
	Evicted            uint64 // addresses dropped because MaxTracked was reached
	EvictedNearBan     uint64 // of those, addresses with two failures or more in their window
	AllowlistedSkipped uint64 // events from allowlisted addresses
	Decisions          uint64
	IgnoredWhileBanned uint64 // events from an address already decided
	TwinsSkipped       uint64 // twins of counted events of the same request, not counted (TwinWindow)
	SpecialSkipped     uint64 // events naming an unspecified, broadcast or multicast address (never tracked)
	ChallengeFailures  uint64 // challenges that went unanswered and counted
}

const ring = 8 // failure slots per address: windows are exact for MaxRetry <= ring

// entry is one tracked address (or IPv6 prefix). 120 bytes.
type entry struct {
	key        [16]byte // the address (IPv4 as ::ffff:a.b.c.d), or its IPv6 prefix in prefix mode
	prev, next int32    // LRU links, -1 = none
	t          [ring]uint32
	w          [ring]uint8 // weight of slot, 0 = empty
	k          [ring]event.Kind
	until      uint32 // banned until (event time); 0 = not banned
	chal       uint32 // time of the oldest unanswered challenge, or of the latest unpaired failure
	good       uint32 // time of the last successful authentication; 0 = none
	pend       int16  // > 0 unanswered challenges; < 0 failures not yet paired with a challenge
	bans       uint8  // decisions made for this entry
	seg        uint8  // LRU segment: segProbation or segProtected
	tw         twins
}

// twins are the recent counted events of an address whose twin of the
// other form (NOTICE or structured) may still arrive, one request each,
// hashed (struct of arrays: 10 bytes a slot).
type twins struct {
	t    [twinSlots]uint32 // event time; 0 = empty slot
	tag  [twinSlots]uint16 // forms seen (bits 0-2), service (3-5), hash of account and kind (6-15): twinOf
	req  [twinSlots]uint16 // folded Event.Request; 0 = the line named no request
	port [twinSlots]uint16 // source port; 0 = unknown
}

// twinSlots: a phone's typos are seconds apart, and the two files are read
// within milliseconds of each other; an attacker's burst that overflows
// the slots is counted twice, never missed.
const twinSlots = 3

type pendingChal struct {
	idx   int32
	stamp uint32
}

const (
	chunkBits = 12
	evictScan = 32 // banned entries passed over per eviction, at most
)

// Jail is not safe for concurrent use (except Stats): the daemon feeds it
// from one goroutine.
type Jail struct {
	cfg      Config
	allow    *Allowlist
	hist     History
	clock    Clock
	weights  [event.NumKinds]uint8
	findSec  int64
	chalSec  int64
	graceSec int64
	v6bits   int

	baseSet bool
	base    int64 // unix seconds of relative time 0
	hwm     int64 // latest event time seen (relative)
	hwmWall time.Time

	idx    index
	chunks [][]entry
	used   int32 // slab entries ever handed out
	free   int32 // free list through next, -1 = empty
	// Segmented LRU: new entries start in probation; an entry with two
	// failures or more in its window, a ban or a success moves to
	// protected (at most protCap entries; its least recently seen go back
	// to probation). Eviction takes probation's least recently seen
	// first, so a flood of one-failure sources churns probation and
	// never pushes out an address close to a ban.
	head, tail [2]int32 // per segment; head = most recently seen
	nseg       [2]int32
	protCap    int32
	queue      []pendingChal
	qHead      int

	tracked                                                  atomic.Int64
	evicted, allowSkipped, decisions, ignoredBanned, chalFai atomic.Uint64
	evictedNear                                              atomic.Uint64
	twinsSkipped, specialSkipped                             atomic.Uint64

	twinSec int64 // TwinWindow in seconds; < 0 = off
}

// twinKind reports whether ev may have a twin of the other form: the
// failures that SIP, PJSIP and AMI report both as a NOTICE and as a
// security event. IAX2, SSH, call_rejected, scan, bad_request: one report.
func twinKind(ev *event.Event) bool {
	switch ev.Service {
	case event.ServiceSIP, event.ServicePJSIP, event.ServiceAMI:
	default:
		return false
	}
	switch ev.Kind {
	case event.AuthFailure, event.UnknownAccount, event.ACLViolation:
		return true
	}
	return false
}

// twin is one counted event as twins hold it.
type twin struct {
	t              uint32
	tag, req, port uint16
}

// The forms of one request's reports: the NOTICE line, the security
// event, and the packet sensor's view of the wire.
const (
	twinNotice     = 1
	twinStructured = 2
	twinWire       = 4
	twinForms      = twinNotice | twinStructured | twinWire
)

// twinOf describes ev as a twin slot. The tag holds the forms seen in
// bits 0-2, the service in bits 3-5 and a hash of account and kind in
// bits 6-15.
func (j *Jail) twinOf(ev *event.Event, now int64) twin {
	h := uint16(maphash.String(j.idx.seed, ev.Account)>>48) ^ uint16(ev.Kind)<<6
	tag := h&^twinLow | uint16(ev.Service&7)<<3
	switch {
	case ev.Wire:
		tag |= twinWire
	case ev.Structured:
		tag |= twinStructured
	default:
		tag |= twinNotice
	}
	req := uint16(ev.Request ^ ev.Request>>16 ^ ev.Request>>32 ^ ev.Request>>48)
	if req == 0 && ev.Request != 0 {
		req = 1
	}
	return twin{t: uint32(now), tag: tag, req: req, port: ev.Port}
}

const (
	twinService = 7 << 3
	twinLow     = twinForms | twinService
)

// pairTwin looks for a counted report of another form of the same
// request as c; found, that slot remembers c's form (a request pairs once
// per form: NOTICE, security event, wire) and true is returned: c is not
// counted. Kind and account must match; the service too, except against
// the wire's report: the sensor sees SIP and cannot tell whether chan_sip
// or res_pjsip answered.
func (j *Jail) pairTwin(e *entry, c *twin) bool {
	w := &e.tw
	form := c.tag & twinForms
	for s := range twinSlots {
		if w.t[s] == 0 || w.tag[s]&^twinLow != c.tag&^twinLow || w.tag[s]&form != 0 ||
			(w.tag[s]&twinService != c.tag&twinService && form != twinWire && w.tag[s]&twinWire == 0) ||
			(w.req[s] != 0 && c.req != 0 && w.req[s] != c.req) ||
			(w.port[s] != 0 && c.port != 0 && w.port[s] != c.port) ||
			max(w.t[s], c.t)-min(w.t[s], c.t) > uint32(j.twinSec) {
			continue
		}
		w.tag[s] |= form
		if w.req[s] == 0 {
			w.req[s] = c.req
		}
		return true
	}
	return false
}

// noteTwin keeps c, a counted event, for its twin to pair with (in the
// empty or oldest slot). A twin that finds no slot is counted as well:
// double counting, never a miss.
func noteTwin(e *entry, c twin) {
	w := &e.tw
	old := 0
	for s := range twinSlots {
		if w.t[s] < w.t[old] {
			old = s
		}
	}
	w.t[old], w.tag[old], w.req[old], w.port[old] = c.t, c.tag, c.req, c.port
}

// New returns a jail; it validates cfg (zero fields take defaults).
func New(cfg Config, allow *Allowlist, hist History, clock Clock) (*Jail, error) {
	if clock == nil {
		clock = SystemClock{}
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	j := &Jail{
		cfg: cfg, allow: allow, hist: hist, clock: clock,
		findSec:  int64(cfg.FindTime / time.Second),
		chalSec:  int64((cfg.ChallengeTimeout + time.Second - 1) / time.Second),
		graceSec: int64(cfg.SuccessGrace / time.Second),
		twinSec:  int64(cfg.TwinWindow / time.Second),
		v6bits:   cfg.IPv6Prefix,
		idx:      index{seed: maphash.MakeSeed()},
		free:     -1, head: [2]int32{-1, -1}, tail: [2]int32{-1, -1},
		protCap: int32(cfg.MaxTracked - cfg.MaxTracked/4),
	}
	if cfg.TwinWindow < 0 {
		j.twinSec = -1
	}
	for k := event.Kind(0); int(k) < event.NumKinds; k++ {
		if k.IsFailure() {
			j.weights[k] = 1
		}
	}
	j.weights[event.Scan] = uint8(cfg.MaxRetry)
	j.weights[event.ChallengeSent] = 1
	for k, w := range cfg.Weights {
		j.weights[k] = uint8(w)
	}
	return j, nil
}

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		return c, errors.New("jail: the name is empty")
	}
	bad := func(key, format string, a ...any) (Config, error) {
		return c, fmt.Errorf("jail %s: %s: %s", c.Name, key, fmt.Sprintf(format, a...))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxRetry == 0 {
		c.MaxRetry = 5
	}
	def(&c.FindTime, 10*time.Minute)
	def(&c.BanTime, time.Hour)
	def(&c.MaxBanTime, 7*24*time.Hour)
	def(&c.ChallengeTimeout, 5*time.Second)
	def(&c.SuccessGrace, time.Hour)
	def(&c.TwinWindow, 2*time.Second)
	if c.Increment == 0 {
		c.Increment = 2
	}
	if c.MaxTracked == 0 {
		c.MaxTracked = 100000
	}
	switch {
	case c.MaxRetry < 1 || c.MaxRetry > 255:
		return bad("maxretry", "%d is out of range (use 1 to 255; 5 is usual)", c.MaxRetry)
	case c.FindTime < time.Second:
		return bad("findtime", "%v is too short (at least 1s; 10m is usual)", c.FindTime)
	case c.FindTime > 1<<30*time.Second:
		return bad("findtime", "%v is too long (at most 34 years)", c.FindTime)
	case c.BanTime < time.Second:
		return bad("bantime", "%v is too short (at least 1s; 1h is usual)", c.BanTime)
	case c.MaxBanTime < c.BanTime:
		return bad("maxbantime", "%v is shorter than bantime %v (make it at least bantime; 1w is usual)", c.MaxBanTime, c.BanTime)
	case math.IsNaN(c.Increment) || c.Increment < 1 || c.Increment > 1000:
		return bad("increment", "%v is out of range (1 = no growth, 2 doubles each repeat; at most 1000)", c.Increment)
	case c.ChallengeTimeout < 0:
		return bad("challenge_timeout", "%v is negative (5s is usual; set the challenge_sent weight to 0 to turn the correlation off)", c.ChallengeTimeout)
	case c.ChallengeTimeout > time.Hour:
		return bad("challenge_timeout", "%v is too long (at most 1h; 5s is usual)", c.ChallengeTimeout)
	case c.TwinWindow > time.Minute:
		return bad("twin_window", "%v is too long (at most 1m; 2s is usual; negative turns twin pairing off)", c.TwinWindow)
	case c.SuccessGrace < 0:
		return bad("success_grace", "%v is negative (1h is usual)", c.SuccessGrace)
	case c.IPv6Prefix != 0 && (c.IPv6Prefix < 16 || c.IPv6Prefix > 128):
		return bad("ipv6_prefix", "%d is out of range (0 bans single addresses; 64 bans the /64; 16 to 128)", c.IPv6Prefix)
	case c.MaxTracked < 1 || c.MaxTracked > math.MaxInt32-1:
		return bad("max_tracked", "%d is out of range (1 to 2147483646; 100000 is usual)", c.MaxTracked)
	}
	if c.IPv6Prefix == 128 {
		c.IPv6Prefix = 0
	}
	for k, w := range c.Weights {
		switch {
		case int(k) >= event.NumKinds || k == event.KindNone:
			return bad("weights", "unknown event kind %d", k)
		case k == event.AuthSuccess && w != 0:
			return bad("weights.auth_success", "%d: a success cannot count as a failure (remove it)", w)
		case w < 0 || w > 255:
			return bad("weights."+k.String(), "%d is out of range (0 ignores the kind; at most 255)", w)
		}
	}
	return c, nil
}

// Config returns the configuration in use (defaults filled in).
func (j *Jail) Config() Config { return j.cfg }

// Name is the jail's name.
func (j *Jail) Name() string { return j.cfg.Name }

// Stats returns the counters.
func (j *Jail) Stats() Stats {
	return Stats{
		Tracked:            int(j.tracked.Load()),
		Evicted:            j.evicted.Load(),
		EvictedNearBan:     j.evictedNear.Load(),
		AllowlistedSkipped: j.allowSkipped.Load(),
		TwinsSkipped:       j.twinsSkipped.Load(),
		SpecialSkipped:     j.specialSkipped.Load(),
		Decisions:          j.decisions.Load(),
		IgnoredWhileBanned: j.ignoredBanned.Load(),
		ChallengeFailures:  j.chalFai.Load(),
	}
}

func (j *Jail) at(i int32) *entry { return &j.chunks[i>>chunkBits][i&(1<<chunkBits-1)] }

// rel converts a time to jail-relative seconds (1 .. 2^32-1).
func (j *Jail) rel(t time.Time) int64 {
	s := t.Unix()
	if !j.baseSet {
		j.base, j.baseSet = s-1<<30, true
	}
	return min(max(s-j.base, 1), math.MaxUint32)
}

// key is the map key of an address: its 16 bytes, masked to the prefix in
// IPv6 prefix mode unless that prefix holds an allowlisted address (then
// the address is counted and banned alone, so that the rest of the prefix
// cannot hide behind the allowlisted neighbour).
func (j *Jail) key(a [16]byte) [16]byte {
	if j.v6bits == 0 || is4in6(a) {
		return a
	}
	m := j.mask(a)
	if j.allow != nil && len(j.allow.v6) > 0 && j.allow.Overlaps(netip.PrefixFrom(netip.AddrFrom16(m), j.v6bits)) {
		return a
	}
	return m
}

func (j *Jail) mask(a [16]byte) [16]byte {
	bits := j.v6bits
	for i := range a {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			a[i] &= ^byte(0xff >> bits)
			bits = 0
		default:
			a[i] = 0
		}
	}
	return a
}

// special reports whether a (unmapped) is never the source of an attack
// packet: unspecified or "this network" (0.0.0.0/8, ::), limited
// broadcast, multicast (224.0.0.0/4, ff00::/8, link-local ones included).
// A line that names one is forged or broken; the jail never tracks it (and
// firewall.Special refuses it at the kernel gate).
func special(a netip.Addr) bool {
	if a.IsUnspecified() || a.IsMulticast() {
		return true
	}
	if a.Is4() {
		b := a.As4()
		return b[0] == 0 || b == [4]byte{255, 255, 255, 255}
	}
	return false
}

func is4in6(a [16]byte) bool {
	return a[0]|a[1]|a[2]|a[3]|a[4]|a[5]|a[6]|a[7]|a[8]|a[9] == 0 && a[10] == 0xff && a[11] == 0xff
}

// Observe judges one event. It returns a decision when the event (or an
// unanswered challenge of the same address that timed out) completes a
// ban. Events without a valid address, from allowlisted addresses, of kinds
// with weight 0, or from an address already decided and still banned yield
// nothing.
func (j *Jail) Observe(ev *event.Event) (Decision, bool) {
	if ev == nil || !ev.Addr.IsValid() {
		return Decision{}, false
	}
	kind := ev.Kind
	if int(kind) >= event.NumKinds || (j.weights[kind] == 0 && kind != event.AuthSuccess) {
		return Decision{}, false
	}
	addr := ev.Addr.Unmap().WithZone("")
	if special(addr) {
		j.specialSkipped.Add(1)
		return Decision{}, false
	}
	if j.allow.Contains(addr) {
		j.allowSkipped.Add(1)
		return Decision{}, false
	}
	t := ev.Time
	if t.IsZero() {
		t = j.clock.Now()
	}
	now := j.rel(t)
	if now > j.hwm {
		// The event-time high-water mark, for Tick. An event stamped in the
		// future (a wrong clock or year) may not drag it past wall time:
		// challenges would then expire before their answer arrives.
		wall := j.clock.Now()
		j.hwm, j.hwmWall = min(now, j.rel(wall)+1), wall
	}
	k := j.key(addr.As16())
	i, ok := j.idx.find(j, &k)
	if kind == event.AuthSuccess {
		if !ok {
			// Remember the success: this address's unanswered challenges
			// (keep-alives, refreshes) do not count for SuccessGrace.
			i = j.insert(k)
			e := j.at(i)
			e.good = uint32(now)
			j.protect(e)
			return Decision{}, false
		}
		e := j.at(i)
		j.touch(i)
		if e.until != 0 && now < int64(e.until) {
			e.pend, e.good = 0, uint32(now)
			return Decision{}, false
		}
		j.expireChallenges(e, now) // challenges older than the timeout still count
		e.pend = 0                 // the address authenticates: its recent challenges were answered
		e.good = uint32(now)
		return j.check(e, now, addr)
	}
	if !ok {
		i = j.insert(k)
	}
	e := j.at(i)
	j.touch(i)
	if e.until != 0 {
		if now < int64(e.until) {
			j.ignoredBanned.Add(1)
			return Decision{}, false
		}
		e.until = 0
	}
	j.expireChallenges(e, now)
	if kind == event.ChallengeSent {
		switch {
		case e.pend < 0 && now-int64(e.chal) <= j.chalSec:
			e.pend++ // the challenge of a request whose failure we already counted
		case e.pend > 0:
			if e.pend < math.MaxInt16 {
				e.pend++
			}
		default:
			e.pend, e.chal = 1, uint32(now)
			j.queue = append(j.queue, pendingChal{idx: i, stamp: e.chal})
		}
		return Decision{}, false
	}
	// The twin of a counted event of the same request is not counted.
	if j.twinSec >= 0 && twinKind(ev) {
		c := j.twinOf(ev, now)
		if j.pairTwin(e, &c) {
			j.twinsSkipped.Add(1)
			return Decision{}, false
		}
		noteTwin(e, c)
	}
	// A failure: it answers one unanswered challenge, or waits to pair with
	// the challenge of the same request that may be logged after it.
	switch {
	case e.pend > 0:
		e.pend--
	case e.pend < 0 && now-int64(e.chal) <= j.chalSec:
		if e.pend > math.MinInt16 {
			e.pend--
		}
		e.chal = uint32(now)
	default:
		e.pend, e.chal = -1, uint32(now)
	}
	j.add(e, now, kind, int(j.weights[kind]))
	return j.check(e, now, addr)
}

// expireChallenges counts e's unanswered challenges as failures once they
// are older than the timeout; stale unpaired failures are forgotten.
func (j *Jail) expireChallenges(e *entry, now int64) {
	if e.pend == 0 || now-int64(e.chal) <= j.chalSec {
		return
	}
	if e.pend > 0 && (e.good == 0 || int64(e.chal)-int64(e.good) > j.graceSec) {
		j.chalFai.Add(uint64(e.pend))
		j.add(e, int64(e.chal), event.ChallengeSent, int(e.pend)*int(j.weights[event.ChallengeSent]))
	}
	e.pend = 0
}

// add records a failure of weight w at time at.
func (j *Jail) add(e *entry, at int64, kind event.Kind, w int) {
	if w <= 0 {
		return
	}
	w = min(w, 255)
	free, oldest, second := -1, -1, -1
	for s := range ring {
		if e.w[s] == 0 {
			free = s
			break
		}
		switch {
		case oldest < 0 || e.t[s] < e.t[oldest]:
			oldest, second = s, oldest
		case second < 0 || e.t[s] < e.t[second]:
			second = s
		}
	}
	if free < 0 {
		// All slots hold failures within the window (expired ones were
		// cleared by check): only possible when MaxRetry > ring. Merge the
		// oldest into the next oldest, which keeps every failure counted but
		// the oldest one for a little longer than findtime.
		e.w[second] = uint8(min(int(e.w[second])+int(e.w[oldest]), 255))
		free = oldest
	}
	e.t[free], e.w[free], e.k[free] = uint32(at), uint8(w), kind
}

// check expires old failures and decides when the window is full.
func (j *Jail) check(e *entry, now int64, addr netip.Addr) (Decision, bool) {
	total := 0
	for s := range ring {
		if e.w[s] == 0 {
			continue
		}
		if now-int64(e.t[s]) >= j.findSec {
			e.w[s] = 0
			continue
		}
		total += int(e.w[s])
	}
	if total >= 2 || e.good != 0 {
		j.protect(e)
	}
	if total < j.cfg.MaxRetry {
		return Decision{}, false
	}
	return j.decide(e, now, total, addr), true
}

func (j *Jail) decide(e *entry, now int64, total int, addr netip.Addr) Decision {
	prior := int(e.bans)
	if j.hist != nil {
		prior = max(prior, j.hist.PriorBans(addr))
	}
	dur := j.banDuration(prior)
	at := j.clock.Now()
	d := Decision{
		Jail: j.cfg.Name, Addr: addr, Prefix: netip.PrefixFrom(addr, addr.BitLen()),
		At: at, Duration: dur, Until: at.Add(dur), BanCount: prior + 1, Failures: total,
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d failures in %v:", total, j.cfg.FindTime)
	var per [event.NumKinds]int
	for s := range ring {
		if e.w[s] != 0 {
			per[e.k[s]] += int(e.w[s])
		}
	}
	for k, n := range per {
		if n > 0 {
			fmt.Fprintf(&b, " %s×%d", event.Kind(k), n)
		}
	}
	if j.v6bits != 0 && addr.Is6() {
		p := netip.PrefixFrom(addr, j.v6bits).Masked()
		if j.allow.Overlaps(p) { // counted per address (see key)
			fmt.Fprintf(&b, " (the /%d holds an allowlisted address: banning the address only)", j.v6bits)
		} else {
			d.Prefix = p
		}
	}
	d.Reason = b.String()
	e.until = uint32(min(now+int64((dur+time.Second-1)/time.Second), math.MaxUint32))
	e.bans = uint8(min(prior+1, 255))
	e.w = [ring]uint8{}
	e.pend = 0
	e.tw = twins{}
	j.decisions.Add(1)
	return d
}

// Permanent as BanTime (`bantime: permanent`) makes every ban of the jail
// permanent; as MaxBanTime it lets increments grow without a cap until a
// ban reaches it. It is the largest duration (the value of
// config.Permanent, store.Permanent and firewall.Permanent); the daemon
// gives such a ban no kernel timeout.
const Permanent time.Duration = math.MaxInt64

// banDuration is BanTime * Increment^prior, capped at MaxBanTime.
func (j *Jail) banDuration(prior int) time.Duration {
	if j.cfg.BanTime >= Permanent {
		return Permanent
	}
	d := float64(j.cfg.BanTime)
	for range prior {
		d *= j.cfg.Increment
		if d >= float64(j.cfg.MaxBanTime) {
			return j.cfg.MaxBanTime
		}
	}
	if d >= float64(Permanent) { // beyond int64: the conversion would wrap
		return j.cfg.MaxBanTime
	}
	return min(time.Duration(d), j.cfg.MaxBanTime)
}

// Tick counts the challenges that went unanswered for ChallengeTimeout as
// failures and returns the decisions that completes. Call it every second.
// now is wall time; it is moved into event time (events may carry the
// time of the log line, e.g. when a log is replayed).
func (j *Jail) Tick(now time.Time) []Decision {
	if !j.baseSet {
		return nil
	}
	eff := j.rel(now)
	if j.hwm != 0 && !j.hwmWall.IsZero() {
		eff = j.hwm + int64(now.Sub(j.hwmWall)/time.Second)
	}
	var out []Decision
	for j.qHead < len(j.queue) {
		q := j.queue[j.qHead]
		if eff-int64(q.stamp) <= j.chalSec {
			break
		}
		j.qHead++
		if q.idx >= j.used {
			continue
		}
		e := j.at(q.idx)
		if e.pend <= 0 || e.chal != q.stamp || (e.until != 0 && eff < int64(e.until)) {
			continue
		}
		j.expireChallenges(e, eff)
		if d, ok := j.check(e, eff, netip.AddrFrom16(e.key).Unmap()); ok {
			out = append(out, d)
		}
	}
	if j.qHead > 1024 && j.qHead*2 > len(j.queue) {
		n := copy(j.queue, j.queue[j.qHead:])
		j.queue, j.qHead = j.queue[:n], 0
	}
	return out
}

// MarkBanned records a ban made elsewhere (restored from the store after a
// restart, or a manual ban) so that the jail does not decide addr again
// before until. banCount is the ban's count (1 = first ban; it feeds the
// increments). Allowlisted addresses are ignored.
func (j *Jail) MarkBanned(addr netip.Addr, until time.Time, banCount int) {
	if !addr.IsValid() {
		return
	}
	addr = addr.Unmap().WithZone("")
	if special(addr) || j.allow.Contains(addr) {
		return
	}
	// until is wall time; move it into event time like Tick does.
	now := j.clock.Now()
	r := j.rel(now)
	if j.hwm != 0 && !j.hwmWall.IsZero() {
		r = j.hwm + int64(now.Sub(j.hwmWall)/time.Second)
	}
	left := int64((until.Sub(now) + time.Second - 1) / time.Second)
	if left <= 0 {
		return
	}
	k := j.key(addr.As16())
	i, ok := j.idx.find(j, &k)
	if !ok {
		i = j.insert(k)
	}
	e := j.at(i)
	e.until = uint32(min(r+left, math.MaxUint32))
	e.bans = uint8(min(max(int(e.bans), banCount), 255))
	e.w = [ring]uint8{}
	e.pend = 0
	e.tw = twins{}
	j.protect(e)
}

// Forget drops everything the jail knows about addr (or its IPv6 prefix in
// prefix mode), e.g. after an unban. Ban history comes back from History.
func (j *Jail) Forget(addr netip.Addr) {
	if !addr.IsValid() {
		return
	}
	k := j.key(addr.Unmap().WithZone("").As16())
	i, ok := j.idx.find(j, &k)
	if !ok {
		return
	}
	j.idx.remove(j, &k)
	j.release(i)
}

// insert makes a new entry for k, in probation, evicting one at the cap:
// probation's least recently seen, else protected's. Banned entries are
// passed over (up to evictScan of them) so that an address is not decided
// again while its ban runs.
func (j *Jail) insert(k [16]byte) int32 {
	if int(j.tracked.Load()) >= j.cfg.MaxTracked {
		old := int32(-1)
		for _, sg := range [2]uint8{segProbation, segProtected} {
			for n, i := 0, j.tail[sg]; n < evictScan && i >= 0; n, i = n+1, j.at(i).prev {
				if e := j.at(i); e.until == 0 || int64(e.until) <= j.hwm {
					old = i
					break
				}
			}
			if old >= 0 {
				break
			}
		}
		if old < 0 { // all banned: the least recently seen goes
			old = j.tail[segProbation]
			if old < 0 {
				old = j.tail[segProtected]
			}
		}
		if old >= 0 {
			if j.live(j.at(old)) >= 2 {
				j.evictedNear.Add(1)
			}
			j.idx.remove(j, &j.at(old).key)
			j.release(old)
			j.evicted.Add(1)
		}
	}
	var i int32
	if j.free >= 0 {
		i = j.free
		j.free = j.at(i).next
	} else {
		i = j.used
		if int(i>>chunkBits) == len(j.chunks) {
			j.chunks = append(j.chunks, make([]entry, 1<<chunkBits))
		}
		j.used++
	}
	*j.at(i) = entry{key: k, prev: -1, next: -1, seg: segProbation}
	j.idx.insert(&k, i)
	j.tracked.Add(1)
	j.link(i)
	return i
}

// LRU segments.
const (
	segProbation = 0
	segProtected = 1
)

// live is the weight of e's failures within findtime of the latest event.
func (j *Jail) live(e *entry) int {
	total := 0
	for s := range ring {
		if e.w[s] != 0 && j.hwm-int64(e.t[s]) < j.findSec {
			total += int(e.w[s])
		}
	}
	return total
}

// link puts entry i at the head of its segment.
func (j *Jail) link(i int32) {
	e := j.at(i)
	sg := e.seg
	e.prev, e.next = -1, j.head[sg]
	if j.head[sg] >= 0 {
		j.at(j.head[sg]).prev = i
	}
	j.head[sg] = i
	if j.tail[sg] < 0 {
		j.tail[sg] = i
	}
	j.nseg[sg]++
}

func (j *Jail) unlink(i int32) {
	e := j.at(i)
	sg := e.seg
	if e.prev >= 0 {
		j.at(e.prev).next = e.next
	} else {
		j.head[sg] = e.next
	}
	if e.next >= 0 {
		j.at(e.next).prev = e.prev
	} else {
		j.tail[sg] = e.prev
	}
	e.prev, e.next = -1, -1
	j.nseg[sg]--
}

// touch makes entry i the most recently seen of its segment.
func (j *Jail) touch(i int32) {
	if j.head[j.at(i).seg] == i {
		return
	}
	j.unlink(i)
	j.link(i)
}

// protect moves e (in probation) to protected; beyond protCap, protected's
// least recently seen goes back to probation (as its most recently seen).
func (j *Jail) protect(e *entry) {
	if e.seg == segProtected {
		return
	}
	i := j.self(e)
	j.unlink(i)
	e.seg = segProtected
	j.link(i)
	if j.nseg[segProtected] > j.protCap {
		d := j.tail[segProtected]
		j.unlink(d)
		j.at(d).seg = segProbation
		j.link(d)
	}
}

// self is the slab index of e (found through its key).
func (j *Jail) self(e *entry) int32 {
	i, _ := j.idx.find(j, &e.key)
	return i
}

// release unlinks entry i and puts it on the free list.
func (j *Jail) release(i int32) {
	j.unlink(i)
	e := j.at(i)
	*e = entry{prev: -1, next: j.free}
	j.free = i
	j.tracked.Add(-1)
}
