package fraud

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// Decide before the call: the dialplan asks (FastAGI, see internal/agi and
// docs/fraud.md) before every outbound Dial, and a Decider answers allow or
// deny in microseconds from what it and the engine know. The Decider is
// pure: time is given, state is read through DecideState.

// DecisionRule names why a call was allowed or denied. The names are
// stable: PBXGUARD_REASON starts with one, metrics and logs carry them.
type DecisionRule string

// Decision rules.
const (
	DecideOK            DecisionRule = "ok"                 // allowed: nothing against it
	DecideInternal      DecisionRule = "internal"           // allowed: an extension or feature code
	DecideTrunk         DecisionRule = "trunk"              // allowed: a trunk's call, never judged
	DecideMalformed     DecisionRule = "malformed_request"  // denied: the AGI request was not whole
	DecideLocked        DecisionRule = "locked_extension"   // denied: the extension is contained
	DecideHeld          DecisionRule = "held"               // denied: an earlier denial holds the extension's risky calls
	DecideUntrusted     DecisionRule = "untrusted_endpoint" // denied: international/premium/satellite from an endpoint not trusted for it
	DecideUnknownCaller DecisionRule = "unknown_endpoint"   // denied: risky call from a channel naming no endpoint
	DecidePremium       DecisionRule = "premium"            // denied: premium-rate number (the engine would contain)
	DecideSatellite     DecisionRule = "satellite"          // denied: satellite/international network (the engine would contain)
	DecideNewAddress    DecisionRule = "new_address"        // denied: international from an address new for the extension
	DecidePrefixGuess   DecisionRule = "prefix_guessing"    // denied: a later prefix form of a number just tried
	DecideVelocity      DecisionRule = "velocity"           // denied: over the calls-per-window budget
	DecideSpend         DecisionRule = "spend"              // denied: over the spend budget
	DecideNoState       DecisionRule = "engine_unavailable" // (evidence only) the engine's state could not be read in time
	decideUnreadable    DecisionRule = "unreadable_number"  // (evidence only)
	decideInternational DecisionRule = "international"      // (evidence only)
)

// DecideRequest is one question from the dialplan. Every string is
// attacker-reachable: data only.
type DecideRequest struct {
	Channel  string     // agi_channel: "PJSIP/1001-0000002a"; the endpoint is cut from it
	Dialled  string     // agi_arg_1: ${EXTEN}
	Addr     netip.Addr // the caller's transport address when the dialplan passes it (agi_arg_2), else invalid
	UniqueID string     // agi_uniqueid
	// Malformed says why the request cannot be trusted whole (agi.Request.Err);
	// such a request is denied.
	Malformed string
}

// Decision is the answer, with its evidence.
type Decision struct {
	Allow         bool         `json:"allow"`
	Rule          DecisionRule `json:"rule"`
	Reason        string       `json:"reason"`
	Evidence      []string     `json:"evidence,omitempty"`
	Time          time.Time    `json:"time"`
	Extension     string       `json:"extension,omitempty"`
	Channel       string       `json:"channel,omitempty"`
	UniqueID      string       `json:"uniqueid,omitempty"`
	Dialled       string       `json:"dialled,omitempty"`
	E164          string       `json:"e164,omitempty"`
	Country       string       `json:"country,omitempty"`
	Type          string       `json:"type,omitempty"`
	International bool         `json:"international,omitempty"`
	Addr          netip.Addr   `json:"addr,omitzero"`
	// Finding is set when the denial is evidence of fraud (prefix guessing,
	// velocity, spend): the daemon hands it to the monitor, which contains
	// the extension (hang-up, lock, ban of this call's address, alert)
	// away from the AGI answer.
	Finding *Finding `json:"-"`
}

// Value returns what the dialplan gets in PBXGUARD_DECISION.
func (d *Decision) Value() string {
	if d.Allow {
		return "allow"
	}
	return "deny"
}

// ReasonValue returns what the dialplan gets in PBXGUARD_REASON: the rule,
// then the human reason.
func (d *Decision) ReasonValue() string { return string(d.Rule) + ": " + d.Reason }

// StateView is what the engine knows of an extension, as the Decider reads it.
type StateView struct {
	Contained bool       // a finding locked it (until "incident unlock")
	Addr      netip.Addr // the address it last authenticated from (AMI SuccessfulAuth, log auth_success)
}

// DecideState reads the engine's state of an extension; ok=false when it
// could not be read in time (the Decider then uses what it last saw).
// *Monitor implements it.
type DecideState interface {
	DecideView(ext string) (StateView, bool)
}

// DecideConfig configures a Decider (fraud.agi in the configuration).
type DecideConfig struct {
	// TrustAll lets every endpoint dial international numbers; by default
	// only Trusted ones may (international calling off for new users).
	TrustAll bool
	// Trusted endpoints may call international, premium and satellite
	// numbers: "1001" or "PJSIP/1001" (audit.trusted_endpoints by default).
	Trusted []string
	// Trunks are never judged (fraud.trunks).
	Trunks []string
	// NewAddress denies international calls from an address new for the
	// extension: first seen (authenticating, or placing an allowed call)
	// less than NewAddressFor ago, unless it is the extension's first
	// address since the daemon started (its baseline).
	NewAddress bool
	// NewAddressFor: an address seen this long ago is no longer new (24h).
	NewAddressFor time.Duration
	// Window is the sliding window of the budgets and of prefix guessing
	// (the engine's window, 10m).
	Window time.Duration
	// PrefixForms: a number reached through this many prefixes (one of
	// them odd, or 3) is guessing (the engine's prefix_forms, 2).
	PrefixForms int
	// CallsPerWindow bounds the calls an extension may place per window
	// (60); IntlPerWindow its international calls (4: the engine contains
	// at its 5th).
	CallsPerWindow, IntlPerWindow int
	// SpendPerWindow bounds the estimated cost of an extension's calls per
	// window (0: off), priced with Rates per minute for AssumedMinutes
	// each (10); destinations without a rate cost DefaultRate.
	SpendPerWindow float64
	Rates          *Rates
	AssumedMinutes float64
	DefaultRate    float64
	// DenyPremium/DenySatellite deny those numbers even from trusted
	// endpoints (set when the engine's response to the rule locks).
	DenyPremium, DenySatellite bool
	// Responses of the findings a denial hands on (the engine's).
	Responses map[Rule]Response
	// MaxExtensions bounds the extensions remembered (10000).
	MaxExtensions int
}

func (c *DecideConfig) defaults() {
	if c.NewAddressFor <= 0 {
		c.NewAddressFor = 24 * time.Hour
	}
	if c.Window <= 0 {
		c.Window = 10 * time.Minute
	}
	if c.PrefixForms <= 0 {
		c.PrefixForms = 2
	}
	if c.CallsPerWindow <= 0 {
		c.CallsPerWindow = 60
	}
	if c.IntlPerWindow <= 0 {
		c.IntlPerWindow = 4
	}
	if c.AssumedMinutes <= 0 {
		c.AssumedMinutes = 10
	}
	if c.MaxExtensions <= 0 {
		c.MaxExtensions = 10000
	}
}

const (
	maxAttempts   = 64 // per extension
	maxKnownAddrs = 16 // per extension
)

type attempt struct {
	at      time.Time
	dialled string
	e164    string
	prefix  string
	form    numbers.Form
	addr    netip.Addr
	allowed bool
	intl    bool
	cost    float64
}

type knownAddr struct {
	addr        netip.Addr
	first, last time.Time
	baseline    bool // the first address of the extension: known from the start
}

type decideExt struct {
	attempts  []attempt
	addrs     []knownAddr
	heldUntil time.Time
	heldWhy   string
	view      StateView // the engine's, as last read
	lastSeen  time.Time
}

// Decider answers the dialplan's questions. It is safe for concurrent use.
type Decider struct {
	cfg     DecideConfig
	nums    *numbers.Normalizer
	trusted map[string]bool
	trunks  map[string]bool

	mu    sync.Mutex
	state DecideState
	ext   map[string]*decideExt
}

// NewDecider returns a Decider reading dialled strings with nums.
func NewDecider(cfg DecideConfig, nums *numbers.Normalizer) (*Decider, error) {
	if nums == nil {
		return nil, fmt.Errorf("fraud: decide: no number normaliser (configure fraud.country)")
	}
	cfg.defaults()
	d := &Decider{cfg: cfg, nums: nums, trusted: map[string]bool{}, trunks: map[string]bool{}, ext: map[string]*decideExt{}}
	for _, t := range cfg.Trusted {
		d.trusted[strings.ToLower(strings.TrimSpace(t))] = true
	}
	for _, t := range cfg.Trunks {
		d.trunks[t] = true
	}
	return d, nil
}

// Config returns the effective configuration.
func (d *Decider) Config() DecideConfig { return d.cfg }

// SetState attaches the engine's state (the daemon's monitor); nil detaches it.
func (d *Decider) SetState(s DecideState) {
	d.mu.Lock()
	d.state = s
	d.mu.Unlock()
}

// MarkContained notes that ext was contained (a denial's finding went
// through the monitor): until the engine's state says otherwise, every call
// of ext is refused, even when the monitor is too busy to be asked.
func (d *Decider) MarkContained(ext string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.extState(ext, at); s != nil {
		s.view.Contained = true
	}
}

// Release forgets the Decider's own hold on ext (after "incident unlock").
func (d *Decider) Release(ext string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.ext[ext]; s != nil {
		s.heldUntil = time.Time{}
		s.heldWhy = ""
		s.view.Contained = false
	}
}

func (d *Decider) isTrusted(tech, ep string) bool {
	if d.cfg.TrustAll {
		return true
	}
	return d.trusted[strings.ToLower(ep)] || d.trusted[strings.ToLower(tech+"/"+ep)]
}

func (d *Decider) extState(ext string, now time.Time) *decideExt {
	s := d.ext[ext]
	if s == nil {
		if len(d.ext) >= d.cfg.MaxExtensions {
			idle := max(d.cfg.Window, d.cfg.NewAddressFor)
			for k, v := range d.ext {
				if now.Sub(v.lastSeen) > idle && !now.Before(v.heldUntil) {
					delete(d.ext, k)
				}
			}
			if len(d.ext) >= d.cfg.MaxExtensions {
				return nil
			}
		}
		s = &decideExt{}
		d.ext[ext] = s
	}
	s.lastSeen = now
	return s
}

// Decide answers one request at now.
func (d *Decider) Decide(req DecideRequest, now time.Time) Decision {
	dec := Decision{Time: now, Channel: req.Channel, Dialled: req.Dialled, UniqueID: req.UniqueID, Addr: req.Addr}
	deny := func(r DecisionRule, format string, args ...any) Decision {
		dec.Allow, dec.Rule, dec.Reason = false, r, fmt.Sprintf(format, args...)
		return dec
	}
	allow := func(r DecisionRule, format string, args ...any) Decision {
		dec.Allow, dec.Rule, dec.Reason = true, r, fmt.Sprintf(format, args...)
		return dec
	}
	if req.Malformed != "" {
		dec.Evidence = append(dec.Evidence, req.Malformed)
		return deny(DecideMalformed, "the AGI request was not whole (a newline in a value?)")
	}
	tech, ep, epOK := calls.SplitChannel(req.Channel)
	dec.Extension = ep
	if epOK && d.trunks[ep] {
		return allow(DecideTrunk, "trunk %s is never judged", ep)
	}

	// What is dialled.
	res := d.nums.Normalize(req.Dialled)
	best, readable := res.BestCandidate()
	if readable {
		dec.E164, dec.Country, dec.Type = best.E164, best.Country, best.Type.String()
		dec.International = best.International
	}
	premium := readable && best.Type == numbers.TypePremium
	satellite := readable && (best.Type == numbers.TypeSatellite || best.Type == numbers.TypeInternationalNetwork)
	risky := !res.Internal && (!readable || best.International || premium || satellite)

	// The engine's view, read before taking our own lock (it may wait a
	// moment for the monitor).
	d.mu.Lock()
	st := d.state
	d.mu.Unlock()
	var view StateView
	fresh := false
	if st != nil && epOK {
		view, fresh = st.DecideView(ep)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	var s *decideExt
	if epOK {
		s = d.extState(ep, now)
	}
	if s != nil {
		if fresh {
			s.view = view
		} else {
			view = s.view
			if st != nil {
				dec.Evidence = append(dec.Evidence, string(DecideNoState)+": the monitor was busy; its last view of "+ep+" is used")
			}
		}
	}
	addr := req.Addr
	if !addr.IsValid() {
		addr = view.Addr
	}
	dec.Addr = addr

	if view.Contained {
		return deny(DecideLocked, "extension %s is locked by pbxguard (pbxguard incident unlock %s)", ep, ep)
	}
	if res.Internal {
		return allow(DecideInternal, "internal number")
	}
	if !epOK {
		if risky {
			return deny(DecideUnknownCaller, "channel names no endpoint; international, premium and satellite calls need a trusted endpoint")
		}
		return allow(DecideOK, "domestic call")
	}
	if s == nil {
		// Out of room for extensions: judge by trust alone.
		if risky && !d.isTrusted(tech, ep) {
			return deny(DecideUntrusted, "%s is not trusted for international, premium or satellite calls", ep)
		}
		return allow(DecideOK, "no room to remember %s; trusted or domestic", ep)
	}
	d.prune(s, now)
	cur := attempt{at: now, dialled: req.Dialled, addr: addr, intl: risky}
	if readable {
		cur.e164, cur.prefix, cur.form = best.E164, best.Prefix, best.Form
	}
	record := func(out Decision) Decision {
		cur.allowed = out.Allow
		if len(s.attempts) >= maxAttempts {
			s.attempts = append(s.attempts[:0], s.attempts[1:]...)
		}
		s.attempts = append(s.attempts, cur)
		if out.Allow && addr.IsValid() {
			d.learn(s, addr, now)
		}
		return out
	}
	what := "international"
	switch {
	case premium:
		what = "premium-rate"
	case satellite:
		what = "satellite"
	case !readable:
		what = "unreadable"
	}
	if risky {
		dec.Evidence = append(dec.Evidence, fmt.Sprintf("%s: %s number %s", decideInternational, what, numberText(best, readable)))
	}

	if risky && now.Before(s.heldUntil) {
		return record(deny(DecideHeld, "%s is held until %s after %s", ep, s.heldUntil.UTC().Format(time.RFC3339), s.heldWhy))
	}
	if risky && !d.isTrusted(tech, ep) {
		return record(deny(DecideUntrusted, "%s is not trusted for %s calls (trusted_endpoints)", ep, what))
	}
	if premium && d.cfg.DenyPremium {
		return record(deny(DecidePremium, "premium-rate number %s", best.E164))
	}
	if satellite && d.cfg.DenySatellite {
		return record(deny(DecideSatellite, "satellite/international-network number %s", best.E164))
	}
	// Prefix guessing: this number through another prefix, just now.
	if readable && best.International {
		forms := []string{best.Prefix}
		evidence := []string{req.Dialled}
		odd := oddForm(best.Form)
		for _, a := range s.attempts {
			if a.e164 == best.E164 && !slices.Contains(forms, a.prefix) {
				forms = append(forms, a.prefix)
				evidence = append(evidence, a.dialled)
				odd = odd || oddForm(a.form)
			}
		}
		if len(forms) >= d.cfg.PrefixForms && (odd || len(forms) >= 3) {
			slices.Reverse(evidence)
			dec.Evidence = append(dec.Evidence, evidence...)
			out := deny(DecidePrefixGuess, "%s dialled with %d prefixes within %s (%s)", best.E164, len(forms), d.cfg.Window, strings.Join(evidence, ", "))
			return record(d.hold(s, out, RulePrefixGuessing, evidence, now))
		}
	}
	if risky && d.cfg.NewAddress && addr.IsValid() && len(s.addrs) > 0 && !d.known(s, addr, now) {
		seen := make([]string, 0, len(s.addrs))
		for _, k := range s.addrs {
			what := "first seen " + k.first.UTC().Format(time.RFC3339)
			if k.baseline {
				what = "baseline"
			}
			seen = append(seen, k.addr.String()+" ("+what+")")
		}
		dec.Evidence = append(dec.Evidence, "addresses seen for "+ep+": "+strings.Join(seen, ", "))
		return record(deny(DecideNewAddress, "%s call from %s, an address new for %s (known after %s)", what, addr, ep, d.cfg.NewAddressFor))
	}
	// Budgets: calls, international calls, spend, in the window.
	var n, nIntl int
	var spent float64
	for _, a := range s.attempts {
		if a.allowed {
			n++
			spent += a.cost
			if a.intl {
				nIntl++
			}
		}
	}
	if n >= d.cfg.CallsPerWindow {
		return record(deny(DecideVelocity, "%s placed %d calls within %s (budget %d)", ep, n, d.cfg.Window, d.cfg.CallsPerWindow))
	}
	if risky && nIntl >= d.cfg.IntlPerWindow {
		out := deny(DecideVelocity, "%s placed %d international calls within %s (budget %d)", ep, nIntl, d.cfg.Window, d.cfg.IntlPerWindow)
		return record(d.hold(s, out, RuleIntlRate, nil, now))
	}
	if d.cfg.SpendPerWindow > 0 && (risky || premium) {
		rate := d.cfg.DefaultRate
		if d.cfg.Rates != nil && readable {
			if r, ok := d.cfg.Rates.PerMinute(best); ok {
				rate = r
			}
		}
		cur.cost = rate * d.cfg.AssumedMinutes
		if spent+cur.cost > d.cfg.SpendPerWindow {
			out := deny(DecideSpend, "%s would reach an estimated %.2f within %s (budget %.2f; %.2f/min × %g min for this call)",
				ep, spent+cur.cost, d.cfg.Window, d.cfg.SpendPerWindow, rate, d.cfg.AssumedMinutes)
			cur.cost = 0
			return record(d.hold(s, out, RuleIntlRate, nil, now))
		}
	}
	if risky {
		return record(allow(DecideOK, "%s call from trusted endpoint %s", what, ep))
	}
	return record(allow(DecideOK, "domestic call"))
}

func numberText(c numbers.Candidate, ok bool) string {
	if !ok {
		return "(no reading)"
	}
	s := c.E164
	if c.Country != "" {
		s += " (" + c.Country + ")"
	}
	return s + " via " + c.Form.String()
}

// hold makes a denial that is evidence of fraud hold the extension's risky
// calls for a window and carry a finding for the monitor (which contains
// the extension: the engine then refuses every call of it until unlock).
func (d *Decider) hold(s *decideExt, out Decision, rule Rule, evidence []string, now time.Time) Decision {
	s.heldUntil = now.Add(d.cfg.Window)
	s.heldWhy = string(out.Rule) + " (" + out.Dialled + ")"
	resp, ok := d.cfg.Responses[rule]
	if !ok {
		resp = defaultResponses[rule]
	}
	f := &Finding{Rule: rule, Severity: SeverityCritical, Score: 95, Time: now, Extension: out.Extension,
		CallID: out.UniqueID, Channel: out.Channel, Dialled: out.Dialled, E164: out.E164, Country: out.Country,
		Reason: "denied before the call: " + out.Reason, Evidence: evidence, Response: resp}
	// Only the address that placed this call: never the real user's
	// earlier calls to the same number from the office.
	if out.Addr.IsValid() {
		f.Addrs = []netip.Addr{out.Addr}
	}
	out.Finding = f
	return out
}

func (d *Decider) prune(s *decideExt, now time.Time) {
	cut := now.Add(-d.cfg.Window)
	i := 0
	for i < len(s.attempts) && s.attempts[i].at.Before(cut) {
		i++
	}
	if i > 0 {
		s.attempts = append(s.attempts[:0], s.attempts[i:]...)
	}
}

// known reports whether addr is an address s has placed calls from long
// enough (or its first one).
func (d *Decider) known(s *decideExt, addr netip.Addr, now time.Time) bool {
	for _, k := range s.addrs {
		if k.addr == addr {
			return k.baseline || now.Sub(k.first) >= d.cfg.NewAddressFor
		}
	}
	return false
}

// learn notes an authentication or an allowed call from addr. The
// extension's first address is its baseline.
func (d *Decider) learn(s *decideExt, addr netip.Addr, now time.Time) {
	for i := range s.addrs {
		if s.addrs[i].addr == addr {
			s.addrs[i].last = now
			return
		}
	}
	k := knownAddr{addr: addr, first: now, last: now, baseline: len(s.addrs) == 0}
	if len(s.addrs) >= maxKnownAddrs {
		// Forget the least recently used non-baseline address.
		j := -1
		for i, a := range s.addrs {
			if !a.baseline && (j < 0 || a.last.Before(s.addrs[j].last)) {
				j = i
			}
		}
		if j < 0 {
			return
		}
		s.addrs = append(s.addrs[:j], s.addrs[j+1:]...)
	}
	s.addrs = append(s.addrs, k)
}

// ObserveAuth tells the Decider that ext authenticated from addr at (AMI
// SuccessfulAuth, the log's auth_success): the address is seen from then
// on, and known NewAddressFor later. The first address an extension is
// seen from (since the daemon started) is its baseline, known at once.
func (d *Decider) ObserveAuth(ext string, addr netip.Addr, at time.Time) {
	if ext == "" || !addr.IsValid() || d.trunks[ext] {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.extState(ext, at)
	if s == nil {
		return
	}
	d.learn(s, addr.Unmap(), at)
}
