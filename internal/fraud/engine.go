// Package fraud finds toll fraud in the call stream and decides what to do
// about it.
//
// The Engine is pure: call updates (from internal/calls) and log events in,
// findings out, each finding carrying the response its rule is configured
// for (hang up, lock, ban, alert). A Responder carries the responses out
// through small interfaces (Hanger, Locker, Banner, Alerter,
// IncidentRecorder) and records every incident and action; a Monitor glues
// tracker, engine and responder together for the daemon.
package fraud

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// Rule names a fraud rule. The names are stable: config, JSON and the store use them.
type Rule string

// Rules.
const (
	RuleIntlRate        Rule = "intl_rate"         // international calls per extension per window
	RuleConcurrentIntl  Rule = "concurrent_intl"   // international calls up at once
	RuleCountries       Rule = "countries"         // distinct destination countries per window
	RulePrefixGuessing  Rule = "prefix_guessing"   // one number dialled with ≥2 prefix forms
	RulePremium         Rule = "premium"           // premium-rate number
	RuleSharedCost      Rule = "shared_cost"       // shared-cost number
	RuleSatellite       Rule = "satellite"         // satellite / international network (+870/881/882/883)
	RuleHighRiskCountry Rule = "high_risk_country" // destination on the high-risk list
	RuleOffHours        Rule = "off_hours"         // international call outside business hours
	RuleNewCountry      Rule = "new_country"       // extension authenticated from a new country
	RuleUnauthIntl      Rule = "unauth_intl"       // unauthenticated call attempt to an international number
	RuleLocked          Rule = "locked_extension"  // a call from an extension pbxguard has contained
)

// allRules lists every rule, in the order findings are evaluated.
var allRules = []Rule{
	RulePrefixGuessing, RuleSatellite, RulePremium, RuleIntlRate, RuleConcurrentIntl,
	RuleCountries, RuleHighRiskCountry, RuleSharedCost, RuleOffHours, RuleNewCountry,
	RuleUnauthIntl, RuleLocked,
}

// Severity grades a finding.
type Severity uint8

// Severities.
const (
	SeverityInfo Severity = iota
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = [...]string{"info", "low", "medium", "high", "critical"}

// String returns the lower-case name.
func (s Severity) String() string {
	if int(s) < len(severityNames) {
		return severityNames[s]
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Severity) UnmarshalText(b []byte) error {
	for i, n := range severityNames {
		if n == string(b) {
			*s = Severity(i)
			return nil
		}
	}
	return fmt.Errorf("fraud: severity %q: use info, low, medium, high or critical", b)
}

// Response is what to do when a rule fires. Each action can be dry-run in
// the Responder.
type Response struct {
	Hangup bool `json:"hangup" yaml:"hangup"` // hang up the extension's live calls
	Lock   bool `json:"lock" yaml:"lock"`     // lock the extension (AstDB pbxguard/locked/<ext>)
	Ban    bool `json:"ban" yaml:"ban"`       // ban the extension's (or the event's) source addresses
	Alert  bool `json:"alert" yaml:"alert"`   // send an alert
}

// respContain is hang-up + lock + ban + alert.
var respContain = Response{Hangup: true, Lock: true, Ban: true, Alert: true}

// respAlertOnly only alerts.
var respAlertOnly = Response{Alert: true}

// Hours is a business-hours window in a time zone; calls outside it are "off hours".
type Hours struct {
	Start, End time.Duration // since midnight, e.g. 8h and 19h; End < Start wraps midnight
	Days       []time.Weekday
	Location   *time.Location
}

// Within reports whether t is inside the window.
func (h *Hours) Within(t time.Time) bool {
	loc := h.Location
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	if len(h.Days) > 0 && !slices.Contains(h.Days, t.Weekday()) {
		return false
	}
	tod := time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second
	if h.Start <= h.End {
		return tod >= h.Start && tod < h.End
	}
	return tod >= h.Start || tod < h.End
}

// defaultHighRiskCountries are destinations that International Revenue
// Share Fraud favours (small island networks and African/other routes with
// high termination rates). Override in the config for your traffic.
var defaultHighRiskCountries = []string{
	"CU", "SO", "SL", "GN", "GW", "LR", "GM", "ZW", "ER", "TD", "MR", "KM", "ST",
	"MV", "PG", "SB", "VU", "NR", "TV", "TK", "NU", "CK", "WF", "TO", "KI", "FM",
}

// Config configures the engine. The zero value of each field takes the default.
type Config struct {
	Window             time.Duration // 10m: the sliding window of the rate rules and each rule's cool-down
	IntlPerWindow      int           // 5 international calls per extension per window
	ConcurrentIntl     int           // 3 international calls up at once
	CountriesPerWindow int           // 3 distinct destination countries per window
	PrefixForms        int           // 2 prefix forms for one number
	HighRiskCountries  []string      // nil: defaultHighRiskCountries
	Hours              *Hours        // nil: the off-hours rule is off
	// IgnoreExtensions are endpoints never judged (trunks, e.g. "carrier").
	IgnoreExtensions []string
	// NeverBan are addresses no response may ban (office LAN, carriers).
	// The daemon's allowlist is enforced again behind the Banner.
	NeverBan []netip.Prefix
	// Responses per rule; missing rules take defaultResponses.
	Responses map[Rule]Response
	// CountryOf maps an address to an ISO country, "" when unknown (see
	// IPCountry). nil disables the new-country rule.
	CountryOf func(netip.Addr) string
	// MaxPerExtension bounds the calls remembered per extension (256);
	// MaxExtensions bounds the extensions tracked (10000).
	MaxPerExtension, MaxExtensions int
	// EstablishedAfter: an address that authenticated for an extension
	// at least twice, the first time at least this long ago, and never
	// showed a hostile signal, is the extension's established address (the
	// real user's phone): it is never banned on call evidence alone, only
	// with a second, independent signal (failed authentications,
	// unauthenticated call attempts to international numbers from it).
	// 0: 24h.
	EstablishedAfter time.Duration
}

// defaultResponses are the responses of each rule unless configured.
var defaultResponses = map[Rule]Response{
	RulePrefixGuessing:  respContain,
	RuleSatellite:       respContain,
	RulePremium:         respContain,
	RuleIntlRate:        respContain,
	RuleConcurrentIntl:  respContain,
	RuleCountries:       respContain,
	RuleLocked:          {Hangup: true},
	RuleHighRiskCountry: respAlertOnly,
	RuleSharedCost:      respAlertOnly,
	RuleOffHours:        respAlertOnly,
	RuleNewCountry:      respAlertOnly,
	RuleUnauthIntl:      {Ban: true, Alert: true},
}

func (c *Config) defaults() {
	if c.Window <= 0 {
		c.Window = 10 * time.Minute
	}
	if c.IntlPerWindow <= 0 {
		c.IntlPerWindow = 5
	}
	if c.ConcurrentIntl <= 0 {
		c.ConcurrentIntl = 3
	}
	if c.CountriesPerWindow <= 0 {
		c.CountriesPerWindow = 3
	}
	if c.PrefixForms <= 0 {
		c.PrefixForms = 2
	}
	if c.HighRiskCountries == nil {
		c.HighRiskCountries = slices.Clone(defaultHighRiskCountries)
	}
	if c.MaxPerExtension <= 0 {
		c.MaxPerExtension = 256
	}
	if c.MaxExtensions <= 0 {
		c.MaxExtensions = 10000
	}
	if c.EstablishedAfter <= 0 {
		c.EstablishedAfter = 24 * time.Hour
	}
}

// Finding is one rule firing.
type Finding struct {
	Rule      Rule         `json:"rule"`
	Severity  Severity     `json:"severity"`
	Score     int          `json:"score"` // 0..100
	Time      time.Time    `json:"time"`
	Extension string       `json:"extension,omitempty"`
	Addrs     []netip.Addr `json:"addrs,omitempty"`
	Call      calls.Call   `json:"-"`
	CallID    string       `json:"call_id,omitempty"`
	Channel   string       `json:"channel,omitempty"`
	Dialled   string       `json:"dialled,omitempty"`
	E164      string       `json:"e164,omitempty"`
	Country   string       `json:"country,omitempty"`
	Reason    string       `json:"reason"`
	Evidence  []string     `json:"evidence,omitempty"` // dialled strings that made the case
	// Spared are addresses seen in the case that the response does not
	// ban, each with the reason (see docs/fraud.md, "never punish the real
	// user").
	Spared   []Spared `json:"spared,omitempty"`
	Response Response `json:"response"`
}

// Spared is an address a finding does not ban, and why.
type Spared struct {
	Addr   netip.Addr `json:"addr"`
	Reason string     `json:"reason"`
}

// maxCallAge: a call the engine still thinks live after this long had its
// end missed (the tracker forgets such calls too).
const maxCallAge = 4 * time.Hour

// intlCall is an international call the engine remembers.
type intlCall struct {
	id         string
	channel    string
	at, end    time.Time
	dialled    string
	e164       string
	prefix     string
	form       numbers.Form
	countryKey string // ISO code, or "+882" for non-geographic numbers
	addr       netip.Addr
	live       bool
}

// AddrHistory is what the engine knows of one source address of an
// extension: when it first and last authenticated or placed a call, and
// how often.
type AddrHistory struct {
	Addr        netip.Addr
	First, Last time.Time
	Auths       int // successful authentications seen
	Calls       int // calls placed from it
}

// maxAddrsPerExt bounds the addresses remembered per extension.
const maxAddrsPerExt = 16

type extState struct {
	addrs     []AddrHistory
	recent    []intlCall
	fired     map[Rule]time.Time
	countries []string // countries it authenticated from (new-country rule)
	contained bool
	// lockPending: the containment's AstDB lock is decided but its
	// response has not run yet; meanwhile a missing key is no unlock by
	// hand.
	lockPending bool
	banned      []netip.Addr // addresses a finding already asked to ban
	lastSeen    time.Time
	score       int
}

// Engine evaluates the rules. It is not safe for concurrent use.
type Engine struct {
	cfg      Config
	nums     *numbers.Normalizer
	ext      map[string]*extState
	ignore   map[string]bool
	highRisk map[string]bool
	unauth   map[netip.Addr]time.Time
	// hostile: addresses with a hostile signal (failed authentication,
	// unauthenticated international call attempt), when last seen.
	hostile map[netip.Addr]time.Time
}

// NewEngine returns an engine reading dialled strings with nums.
func NewEngine(cfg Config, nums *numbers.Normalizer) (*Engine, error) {
	if nums == nil {
		return nil, fmt.Errorf("fraud: no number normaliser (configure the home country)")
	}
	cfg.defaults()
	e := &Engine{
		cfg:      cfg,
		nums:     nums,
		ext:      make(map[string]*extState),
		ignore:   make(map[string]bool),
		highRisk: make(map[string]bool),
		unauth:   make(map[netip.Addr]time.Time),
		hostile:  make(map[netip.Addr]time.Time),
	}
	for _, x := range cfg.IgnoreExtensions {
		e.ignore[x] = true
	}
	for _, c := range cfg.HighRiskCountries {
		if len(c) != 2 {
			return nil, fmt.Errorf("fraud: high-risk country %q is not an ISO 3166 alpha-2 code (e.g. CU, SO)", c)
		}
		e.highRisk[strings.ToUpper(c)] = true
	}
	for r := range cfg.Responses {
		if _, ok := defaultResponses[r]; !ok {
			return nil, fmt.Errorf("fraud: responses: unknown rule %q (rules: %v)", r, allRules)
		}
	}
	return e, nil
}

// Config returns the effective configuration.
func (e *Engine) Config() Config { return e.cfg }

func (e *Engine) response(r Rule) Response {
	if resp, ok := e.cfg.Responses[r]; ok {
		return resp
	}
	return defaultResponses[r]
}

func (e *Engine) state(ext string, now time.Time) *extState {
	s := e.ext[ext]
	if s == nil {
		if len(e.ext) >= e.cfg.MaxExtensions {
			e.evict(now)
			if len(e.ext) >= e.cfg.MaxExtensions {
				return nil
			}
		}
		s = &extState{fired: make(map[Rule]time.Time, 4)}
		e.ext[ext] = s
	}
	s.lastSeen = now
	return s
}

// evict drops extensions idle for longer than the window and not contained.
// Extensions idle for longer than EstablishedAfter go first (their
// address history with them); when that is not enough, those idle longer
// than the window.
func (e *Engine) evict(now time.Time) {
	for _, idle := range []time.Duration{e.cfg.EstablishedAfter, e.cfg.Window} {
		for k, s := range e.ext {
			if !s.contained && now.Sub(s.lastSeen) > idle {
				delete(e.ext, k)
			}
		}
		if len(e.ext) < e.cfg.MaxExtensions {
			return
		}
	}
}

// Contained reports whether ext has been contained (locked) by a finding.
func (e *Engine) Contained(ext string) bool {
	s := e.ext[ext]
	return s != nil && s.contained
}

// LockDone records that the response that locks ext has run (whatever
// its result): from now on the AstDB says whether ext is locked.
func (e *Engine) LockDone(ext string) {
	if s := e.ext[ext]; s != nil {
		s.lockPending = false
	}
}

// LockPending reports whether ext's containment lock is decided but not
// yet carried out (LockDone).
func (e *Engine) LockPending(ext string) bool {
	s := e.ext[ext]
	return s != nil && s.contained && s.lockPending
}

// Release forgets that ext was contained (after "incident unlock"): its
// calls, findings and bans are forgotten, so that every later call is
// judged afresh and a new incident locks it again. What the engine knows
// of its addresses (their registration history) stays.
func (e *Engine) Release(ext string) {
	if s := e.ext[ext]; s != nil {
		s.contained = false
		s.lockPending = false
		s.recent = s.recent[:0]
		s.banned = s.banned[:0]
		clear(s.fired)
		s.score = 0
	}
}

// Addrs returns what the engine knows of ext's source addresses, oldest
// first (a pre-call decider asks whether a call's address is new).
func (e *Engine) Addrs(ext string) []AddrHistory {
	s := e.ext[ext]
	if s == nil {
		return nil
	}
	return slices.Clone(s.addrs)
}

// Established reports whether a is an established address of ext at now:
// authenticated at least twice, first at least EstablishedAfter ago, and
// no hostile signal from it within EstablishedAfter.
func (e *Engine) Established(ext string, a netip.Addr, now time.Time) bool {
	s := e.ext[ext]
	return s != nil && e.established(s, a, now)
}

func (e *Engine) established(s *extState, a netip.Addr, now time.Time) bool {
	h := findAddr(s.addrs, a)
	if h == nil || h.Auths < 2 || now.Sub(h.First) < e.cfg.EstablishedAfter {
		return false
	}
	return !e.Hostile(a, now)
}

// Hostile reports whether a showed a hostile signal (NoteHostile, an
// unauthenticated international call attempt) within EstablishedAfter.
func (e *Engine) Hostile(a netip.Addr, now time.Time) bool {
	t, ok := e.hostile[a.Unmap()]
	return ok && now.Sub(t) < e.cfg.EstablishedAfter
}

// NoteHostile records a hostile signal from a at now: a failed
// authentication, an ACL violation, an unknown account (AMI security
// events or log events). It is the second, independent signal that lets a
// response ban an established address.
func (e *Engine) NoteHostile(a netip.Addr, now time.Time) {
	if !a.IsValid() {
		return
	}
	a = a.Unmap()
	if _, ok := e.hostile[a]; !ok && len(e.hostile) >= e.cfg.MaxExtensions {
		for k, t := range e.hostile {
			if now.Sub(t) >= e.cfg.EstablishedAfter {
				delete(e.hostile, k)
			}
		}
		if len(e.hostile) >= e.cfg.MaxExtensions {
			return
		}
	}
	e.hostile[a] = now
}

// RecentCall is one international call of an extension within the window.
type RecentCall struct {
	ID      string
	At      time.Time
	Dialled string
	E164    string
	Prefix  string
	Addr    netip.Addr
	Live    bool
}

// Recent returns ext's international calls within the window at now,
// oldest first.
func (e *Engine) Recent(ext string, now time.Time) []RecentCall {
	s := e.ext[ext]
	if s == nil {
		return nil
	}
	e.prune(s, now)
	out := make([]RecentCall, 0, len(s.recent))
	for _, r := range s.recent {
		out = append(out, RecentCall{ID: r.id, At: r.at, Dialled: r.dialled, E164: r.e164, Prefix: r.prefix, Addr: r.addr, Live: r.live})
	}
	return out
}

func findAddr(hs []AddrHistory, a netip.Addr) *AddrHistory {
	a = a.Unmap()
	for i := range hs {
		if hs[i].Addr == a {
			return &hs[i]
		}
	}
	return nil
}

// seen records that ext used a at now (an authentication or a call).
func (s *extState) seen(a netip.Addr, now time.Time, auth bool) {
	if !a.IsValid() {
		return
	}
	a = a.Unmap()
	h := findAddr(s.addrs, a)
	if h == nil {
		if len(s.addrs) >= maxAddrsPerExt { // forget the address idle longest
			old := 0
			for i := range s.addrs {
				if s.addrs[i].Last.Before(s.addrs[old].Last) {
					old = i
				}
			}
			s.addrs = slices.Delete(s.addrs, old, old+1)
		}
		s.addrs = append(s.addrs, AddrHistory{Addr: a, First: now})
		h = &s.addrs[len(s.addrs)-1]
	}
	if now.After(h.Last) {
		h.Last = now
	}
	if auth {
		h.Auths++
	} else {
		h.Calls++
	}
}

// Risk returns ext's risk score (0..100): the highest finding score in the
// window, or a small score for international calls alone.
func (e *Engine) Risk(ext string, now time.Time) int {
	s := e.ext[ext]
	if s == nil {
		return 0
	}
	e.prune(s, now)
	r := s.score
	if r == 0 {
		r = min(10*len(s.recent), 40)
	}
	if s.contained {
		r = 100
	}
	return r
}

func (e *Engine) prune(s *extState, now time.Time) {
	for i := range s.recent {
		if s.recent[i].live && now.Sub(s.recent[i].at) > maxCallAge {
			s.recent[i].live = false // its end was missed
		}
	}
	cut := now.Add(-e.cfg.Window)
	i := 0
	for i < len(s.recent) && s.recent[i].at.Before(cut) && !s.recent[i].live {
		i++
	}
	if i > 0 {
		s.recent = append(s.recent[:0], s.recent[i:]...)
	}
	if len(s.recent) == 0 {
		if !s.contained {
			s.score = 0
		}
	}
}

// Observe feeds one call update at now and returns the findings it caused.
func (e *Engine) Observe(u calls.Update, now time.Time) []Finding {
	switch u.Kind {
	case calls.EndpointAuth:
		return e.observeAuth(u, now)
	case calls.CallStarted:
		return e.observeCall(u.Call, now, false)
	case calls.Reset:
		for _, st := range e.ext {
			for i := range st.recent {
				st.recent[i].live = false
			}
		}
	case calls.CallEnded:
		if u.Call.Source == calls.SourceCDR {
			return e.observeCall(u.Call, now, true)
		}
		if s := e.ext[u.Call.Extension]; s != nil {
			for i := range s.recent {
				if s.recent[i].id == u.Call.ID {
					s.recent[i].live = false
					s.recent[i].end = u.Call.End
				}
			}
		}
	}
	return nil
}

func (e *Engine) observeAuth(u calls.Update, now time.Time) []Finding {
	if u.Call.Extension == "" || e.ignore[u.Call.Extension] {
		return nil
	}
	s := e.state(u.Call.Extension, now)
	if s == nil {
		return nil
	}
	s.seen(u.Call.SourceAddr, now, true)
	if e.cfg.CountryOf == nil {
		return nil
	}
	country := e.cfg.CountryOf(u.Call.SourceAddr)
	if country == "" {
		return nil // unknown (private, documentation, unrouted): neither a baseline nor news
	}
	if slices.Contains(s.countries, country) {
		return nil
	}
	first := len(s.countries) == 0
	if len(s.countries) < 16 {
		s.countries = append(s.countries, country)
	}
	if first {
		return nil // the first country is the baseline
	}
	f := e.finding(s, RuleNewCountry, SeverityMedium, 50, now, u.Call,
		fmt.Sprintf("extension %s authenticated from %s (%s), new after %s", u.Call.Extension, u.Call.SourceAddr, country, strings.Join(s.countries[:len(s.countries)-1], ",")))
	f.Addrs = []netip.Addr{u.Call.SourceAddr}
	f.Country = country
	if !e.cooldown(s, f.Rule, now) {
		return nil
	}
	return []Finding{f}
}

// cooldown reports whether rule may fire for s now, and marks it fired.
func (e *Engine) cooldown(s *extState, r Rule, now time.Time) bool {
	if last, ok := s.fired[r]; ok && now.Sub(last) < e.cfg.Window {
		return false
	}
	s.fired[r] = now
	return true
}

func (e *Engine) finding(s *extState, r Rule, sev Severity, score int, now time.Time, c calls.Call, reason string) Finding {
	if s != nil && score > s.score {
		s.score = score
	}
	return Finding{
		Rule: r, Severity: sev, Score: score, Time: now, Extension: c.Extension, Call: c,
		CallID: c.ID, Channel: c.Channel, Dialled: c.Dialled, Reason: reason, Response: e.response(r),
	}
}

func countryKey(c numbers.Candidate) string {
	if c.Country != "" {
		return c.Country
	}
	return fmt.Sprintf("+%d", c.CountryCode)
}

func (e *Engine) observeCall(c calls.Call, now time.Time, ended bool) []Finding {
	if c.Extension == "" || e.ignore[c.Extension] {
		return nil
	}
	res := e.nums.Normalize(c.Dialled)
	best, ok := res.BestCandidate()
	if !ok || !best.Valid {
		if e.Contained(c.Extension) && !ended {
			return e.lockedCall(c, now)
		}
		if s := e.ext[c.Extension]; s != nil && !ended {
			s.seen(c.SourceAddr, now, false)
		}
		return nil
	}
	s := e.state(c.Extension, now)
	if s == nil {
		return nil
	}
	e.prune(s, now)
	// The same call seen twice (AMI at its start, its CDR row at hang-up;
	// AMI and CEL) counts once: by uniqueid, or by channel name when the
	// CDR carries no uniqueid (cdr.conf loguniqueid=no).
	for i := range s.recent {
		r := &s.recent[i]
		if (c.ID != "" && r.id == c.ID) || (c.ID == "" || r.id == "") && c.Channel != "" && r.channel == c.Channel {
			if ended {
				r.live = false
				r.end = c.End
			}
			return nil
		}
	}
	if !ended {
		s.seen(c.SourceAddr, now, false)
	}
	var out []Finding
	if s.contained && !ended {
		out = append(out, e.lockedCall(c, now)...)
	}
	// Per-number type rules (domestic premium numbers count too): the call
	// itself is the evidence, its address the one to ban.
	switch best.Type {
	case numbers.TypePremium:
		out = e.fire(out, s, RulePremium, SeverityCritical, 90, now, c, fmt.Sprintf("call to premium-rate number %s (%s)", best.E164, c.Dialled))
	case numbers.TypeSharedCost:
		out = e.fire(out, s, RuleSharedCost, SeverityMedium, 40, now, c, fmt.Sprintf("call to shared-cost number %s (%s)", best.E164, c.Dialled))
	case numbers.TypeSatellite, numbers.TypeInternationalNetwork:
		out = e.fire(out, s, RuleSatellite, SeverityCritical, 90, now, c, fmt.Sprintf("call to satellite/international-network number %s (%s)", best.E164, c.Dialled))
	}
	if !best.International {
		return e.decorate(out, s, best, now)
	}
	ic := intlCall{
		id: c.ID, channel: c.Channel, at: c.Start, dialled: c.Dialled, e164: best.E164, prefix: best.Prefix, form: best.Form,
		countryKey: countryKey(best), addr: c.SourceAddr.Unmap(), live: !ended,
	}
	if ic.at.IsZero() {
		ic.at = now
	}
	if ended {
		ic.end = c.End
	}
	if len(s.recent) >= e.cfg.MaxPerExtension {
		s.recent = append(s.recent[:0], s.recent[1:]...)
	}
	s.recent = append(s.recent, ic)
	trigger := len(s.recent) - 1

	// Prefix guessing: this number reached through ≥ PrefixForms prefixes,
	// one of them a prefix this PBX's own users do not dial (another
	// country's IDD, a truncated IDD, a bare country code), or ≥ 3 of them.
	// "+44…" from a phone's contact list and "01144…" typed on a US desk
	// phone are both normal: two such forms alone are not guessing.
	var forms, evidence []string
	var pattern []int // indexes in s.recent of the calls to this number
	odd := false
	for i, r := range s.recent {
		if r.e164 != ic.e164 {
			continue
		}
		pattern = append(pattern, i)
		if !slices.Contains(forms, r.prefix) {
			forms = append(forms, r.prefix)
			evidence = append(evidence, r.dialled)
			if oddForm(r.form) {
				odd = true
			}
		}
	}
	if len(forms) >= e.cfg.PrefixForms && (odd || len(forms) >= 3) {
		f := e.finding(s, RulePrefixGuessing, SeverityCritical, 95, now, c,
			fmt.Sprintf("%s dialled with %d prefixes (%s) within %s", ic.e164, len(forms), strings.Join(evidence, ", "), e.cfg.Window))
		f.Evidence = evidence
		// Per address: the prefix forms it dialled itself. An address is
		// in the pattern when it dialled ≥ 2 forms, or placed the call that
		// completed the pattern with a form this PBX's users do not dial;
		// one ordinary call to the number (the real user's) is not.
		f.Addrs, f.Spared = e.attribute(s, pattern, trigger, func(a netip.Addr) bool {
			var own []string
			for _, i := range pattern {
				if r := s.recent[i]; r.addr == a && !slices.Contains(own, r.prefix) {
					own = append(own, r.prefix)
				}
			}
			return len(own) >= 2 || s.recent[trigger].addr == a && oddForm(ic.form)
		}, "placed one ordinary call to the number, not the guessing")
		out = e.fireF(out, s, f, now)
	}
	all := make([]int, len(s.recent))
	for i := range all {
		all[i] = i
	}
	// The rate rules: an address is in the pattern when it placed ≥ 2 of
	// the calls counted.
	twoCalls := func(set []int) func(netip.Addr) bool {
		return func(a netip.Addr) bool {
			n := 0
			for _, i := range set {
				if s.recent[i].addr == a {
					n++
				}
			}
			return n >= 2
		}
	}
	if n := len(s.recent); n >= e.cfg.IntlPerWindow {
		f := e.finding(s, RuleIntlRate, SeverityHigh, 80, now, c, fmt.Sprintf("%d international calls within %s (threshold %d)", n, e.cfg.Window, e.cfg.IntlPerWindow))
		f.Addrs, f.Spared = e.attribute(s, all, trigger, twoCalls(all), "placed only one of the calls counted")
		out = e.fireF(out, s, f, now)
	}
	var concurrent []int
	for i, r := range s.recent {
		if ended { // CDR: the calls whose span covers this call's start
			if !r.at.After(ic.at) && (r.end.IsZero() || r.end.After(ic.at)) {
				concurrent = append(concurrent, i)
			}
		} else if r.live {
			concurrent = append(concurrent, i)
		}
	}
	if len(concurrent) >= e.cfg.ConcurrentIntl {
		f := e.finding(s, RuleConcurrentIntl, SeverityHigh, 80, now, c, fmt.Sprintf("%d international calls at once (threshold %d)", len(concurrent), e.cfg.ConcurrentIntl))
		f.Addrs, f.Spared = e.attribute(s, concurrent, trigger, twoCalls(concurrent), "placed only one of the calls counted")
		out = e.fireF(out, s, f, now)
	}
	var countries []string
	for _, r := range s.recent {
		if !slices.Contains(countries, r.countryKey) {
			countries = append(countries, r.countryKey)
		}
	}
	if len(countries) >= e.cfg.CountriesPerWindow {
		f := e.finding(s, RuleCountries, SeverityHigh, 75, now, c, fmt.Sprintf("%d destination countries within %s: %s", len(countries), e.cfg.Window, strings.Join(countries, ",")))
		f.Addrs, f.Spared = e.attribute(s, all, trigger, twoCalls(all), "placed only one of the calls counted")
		out = e.fireF(out, s, f, now)
	}
	if e.highRisk[best.Country] {
		out = e.fire(out, s, RuleHighRiskCountry, SeverityMedium, 60, now, c, fmt.Sprintf("call to high-risk country %s: %s", best.Country, best.E164))
	}
	if e.cfg.Hours != nil && !e.cfg.Hours.Within(ic.at) {
		out = e.fire(out, s, RuleOffHours, SeverityMedium, 50, now, c, fmt.Sprintf("international call to %s outside business hours", best.E164))
	}
	return e.decorate(out, s, best, now)
}

func oddForm(f numbers.Form) bool {
	switch f {
	case numbers.FormForeignIDD, numbers.FormTruncated, numbers.FormBare:
		return true
	}
	return false
}

// attribute splits the addresses of the calls set (indexes in s.recent)
// into those in the pattern (inPattern) and those spared, with why. The
// empty, non-nil result means "no address to ban" (decorate then leaves
// it empty rather than taking the call's).
func (e *Engine) attribute(s *extState, set []int, trigger int, inPattern func(netip.Addr) bool, notInPattern string) (addrs []netip.Addr, spared []Spared) {
	addrs = []netip.Addr{}
	var seen []netip.Addr
	consider := append(slices.Clone(set), trigger)
	for _, i := range consider {
		a := s.recent[i].addr
		if !a.IsValid() || slices.Contains(seen, a) {
			continue
		}
		seen = append(seen, a)
		if inPattern(a) {
			addrs = append(addrs, a)
		} else {
			spared = append(spared, Spared{Addr: a, Reason: notInPattern})
		}
	}
	return addrs, spared
}

func (e *Engine) fire(out []Finding, s *extState, r Rule, sev Severity, score int, now time.Time, c calls.Call, reason string) []Finding {
	return e.fireF(out, s, e.finding(s, r, sev, score, now, c, reason), now)
}

func (e *Engine) fireF(out []Finding, s *extState, f Finding, now time.Time) []Finding {
	if !e.cooldown(s, f.Rule, now) {
		return out
	}
	return append(out, f)
}

// decorate fills the addresses, number and country of the findings, and
// marks the extension contained when a finding's response locks it.
//
// The addresses (the ones a response bans) are those of the call that made
// the rule fire — and for prefix guessing those of every call in the
// evidence — never every address the extension called from in the window:
// the real user's office phone may have placed a legitimate international
// call from its own address minutes before the attacker took over.
func (e *Engine) decorate(out []Finding, s *extState, best numbers.Candidate, now time.Time) []Finding {
	for i := range out {
		f := &out[i]
		if f.Addrs == nil && f.Call.SourceAddr.IsValid() {
			f.Addrs = []netip.Addr{f.Call.SourceAddr.Unmap()}
		}
		// The real user's phone: an established address is banned only
		// with a second, independent signal (Hostile).
		if f.Response.Ban && len(f.Addrs) > 0 {
			keep := f.Addrs[:0:0]
			for _, a := range f.Addrs {
				if e.established(s, a, now) {
					h := findAddr(s.addrs, a)
					f.Spared = append(f.Spared, Spared{Addr: a, Reason: fmt.Sprintf(
						"established address of %s (authenticated %d times since %s) with no second signal (no failed authentication or unauthenticated call attempt from it)",
						f.Extension, h.Auths, h.First.UTC().Format(time.RFC3339))})
					continue
				}
				keep = append(keep, a)
			}
			f.Addrs = keep
		}
		if f.E164 == "" {
			f.E164 = best.E164
			f.Country = best.Country
		}
		// Once contained, later findings do not lock again nor ban the
		// same addresses again; they still hang up and alert.
		if f.Response.Lock {
			if s.contained {
				f.Response.Lock = false
			} else {
				s.lockPending = true
			}
			s.contained = true
		}
		if f.Response.Ban {
			fresh := f.Addrs[:0:0]
			for _, a := range f.Addrs {
				if !slices.Contains(s.banned, a) {
					fresh = append(fresh, a)
					if len(s.banned) < 64 {
						s.banned = append(s.banned, a)
					}
				}
			}
			if len(fresh) == 0 {
				f.Response.Ban = false
			} else {
				f.Addrs = fresh
			}
		}
	}
	return out
}

func (e *Engine) lockedCall(c calls.Call, now time.Time) []Finding {
	return []Finding{{
		Rule: RuleLocked, Severity: SeverityHigh, Score: 100, Time: now, Extension: c.Extension,
		Call: c, CallID: c.ID, Channel: c.Channel, Dialled: c.Dialled,
		Reason:   fmt.Sprintf("call from contained extension %s to %s", c.Extension, c.Dialled),
		Response: e.response(RuleLocked),
	}}
}

// ObserveEvent feeds a log-detector event. A CallRejected event whose
// Account is an international number (an unauthenticated INVITE to
// "011972…") becomes an unauth_intl finding against the event's address,
// once per address per window.
func (e *Engine) ObserveEvent(ev event.Event, now time.Time) []Finding {
	if ev.Kind != event.CallRejected || !ev.Addr.IsValid() || ev.Account == "" {
		return nil
	}
	res := e.nums.Normalize(ev.Account)
	best, ok := res.BestCandidate()
	if !ok || !best.Valid || !best.International {
		return nil
	}
	if last, ok := e.unauth[ev.Addr]; ok && now.Sub(last) < e.cfg.Window {
		return nil
	}
	if len(e.unauth) >= e.cfg.MaxExtensions {
		for a, t := range e.unauth {
			if now.Sub(t) >= e.cfg.Window {
				delete(e.unauth, a)
			}
		}
		if len(e.unauth) >= e.cfg.MaxExtensions {
			return nil
		}
	}
	e.unauth[ev.Addr] = now
	e.NoteHostile(ev.Addr, now)
	return []Finding{{
		Rule: RuleUnauthIntl, Severity: SeverityHigh, Score: 70, Time: now, Addrs: []netip.Addr{ev.Addr},
		Dialled: ev.Account, E164: best.E164, Country: best.Country,
		Reason:   fmt.Sprintf("unauthenticated %s call attempt from %s to international number %s (%s)", ev.Service, ev.Addr, best.E164, ev.Account),
		Response: e.response(RuleUnauthIntl),
	}}
}

// AllRules lists every rule, in the order findings are evaluated (a copy).
func AllRules() []Rule { return slices.Clone(allRules) }

// Contain is the response that hangs up, locks, bans and alerts.
func Contain() Response { return respContain }

// AlertOnly is the response that only alerts.
func AlertOnly() Response { return respAlertOnly }

// DefaultHighRiskCountries are the destinations the high-risk rule
// watches unless configured (a copy).
func DefaultHighRiskCountries() []string { return slices.Clone(defaultHighRiskCountries) }

// DefaultResponses are the responses of each rule unless configured (a
// copy).
func DefaultResponses() map[Rule]Response { return maps.Clone(defaultResponses) }
