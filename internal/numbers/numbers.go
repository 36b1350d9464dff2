// Package numbers turns the string a caller dialled into E.164 candidates
// with a country and a number type.
//
// libphonenumber (github.com/nyaruka/phonenumbers) does the per-country work
// but it only strips the calling region's own international prefix (IDD):
// "00442079460349" dialled on a US PBX parses as the invalid "+1 0044…". It
// has no satellite type either (+870/881/882/883 are "001" non-geographic
// entities, often reported invalid) and no cost data. Fraudsters probe a
// PBX's dial-out pattern by dialling one number with every prefix they know,
// so this package reads a dialled string every plausible way — national, the
// home IDD, the IDDs of other regions (00, 011, 0011, 810, 010, 001), "+", a
// missing leading digit ("11" for "011") and a bare country code — keeps
// every reading as a Candidate and picks the best valid one.
//
// The package is pure: no I/O, no clock. A Normalizer caches results per
// dialled string (bounded) and is safe for concurrent use.
package numbers

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// Type is the kind of number a candidate reaches.
type Type uint8

// Types. Satellite and InternationalNetwork come from this package's own
// list, the others from libphonenumber's metadata.
const (
	TypeUnknown Type = iota
	TypeFixed
	TypeMobile
	TypeFixedOrMobile
	TypeTollFree
	TypePremium
	TypeSharedCost
	TypeVoIP
	TypePersonal
	TypePager
	TypeUAN
	TypeVoicemail
	TypeSatellite
	TypeInternationalNetwork
	numTypes
)

var typeNames = [numTypes]string{
	"unknown", "fixed", "mobile", "fixed_or_mobile", "toll_free", "premium",
	"shared_cost", "voip", "personal", "pager", "uan", "voicemail", "satellite",
	"international_network",
}

// String returns the type's snake_case name.
func (t Type) String() string {
	if t < numTypes {
		return typeNames[t]
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (t Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// Form says how a candidate reading reached the number: which prefix the
// dialled string used.
type Form uint8

// Forms.
const (
	FormNone       Form = iota
	FormNational        // dialled as a national number (with or without the trunk prefix)
	FormPlus            // "+CC…"
	FormHomeIDD         // the home region's own international prefix (011 in the US, 00 in the UK)
	FormForeignIDD      // another region's international prefix (00 from the US, 0011 from the UK, …)
	FormTruncated       // an international prefix missing its first digit ("11" for 011)
	FormBare            // the country code with no prefix at all
	numForms
)

var formNames = [numForms]string{"none", "national", "plus", "home_idd", "foreign_idd", "truncated_idd", "bare_cc"}

// String returns the form's snake_case name.
func (f Form) String() string {
	if f < numForms {
		return formNames[f]
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (f Form) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// Candidate is one reading of a dialled string.
type Candidate struct {
	E164        string // "+442079460349"
	CountryCode int    // 44
	Country     string // ISO 3166 alpha-2 ("GB"); "" for non-geographic numbers (satellite, 88x)
	National    string // national significant number ("2079460349")
	Type        Type
	Form        Form
	Prefix      string // the literal prefix this reading stripped: "011", "00", "+", "11", "0", ""
	Valid       bool   // the number is valid for its country (or in the satellite list)
	// International is true when the number is outside the home country
	// (its calling code differs from the home calling code).
	International bool
}

// Result is every reading of one dialled string. Results are shared through
// the cache: treat them as read-only.
type Result struct {
	Dialled string // as given
	Digits  string // after removing the access code and punctuation ("+" kept)
	// Internal is true for short strings (extensions, feature codes, emergency
	// numbers): they have no candidates.
	Internal   bool
	Candidates []Candidate // Candidates[Best] is the best reading; the rest in preference order
	Best       int         // index into Candidates, -1 when there is none
}

// BestCandidate returns the best reading, ok=false when there is none.
func (r *Result) BestCandidate() (Candidate, bool) {
	if r == nil || r.Best < 0 || r.Best >= len(r.Candidates) {
		return Candidate{}, false
	}
	return r.Candidates[r.Best], true
}

// International reports whether the best reading is a valid number outside
// the home country.
func (r *Result) International() bool {
	c, ok := r.BestCandidate()
	return ok && c.Valid && c.International
}

// Config configures a Normalizer.
type Config struct {
	// HomeRegion is the PBX's country, ISO 3166 alpha-2 ("US", "GB", "AU", "DE").
	HomeRegion string
	// AccessCode is the outbound access code stripped before anything else
	// ("9" when users dial 9 for an outside line); "" for none.
	AccessCode string
	// InternalMaxLen: dialled strings with at most this many digits are
	// internal (extensions, feature codes). 0 means 5.
	InternalMaxLen int
	// CacheSize bounds the per-dialled-string cache. 0 means 4096.
	CacheSize int
}

// Normalizer reads dialled strings. Create it with New.
type Normalizer struct {
	home        string
	homeCC      int
	homeIDD     []string // the home region's international prefixes, longest first
	homeNDD     string
	accessCode  string
	internalMax int
	cacheSize   int

	mu    sync.RWMutex
	cache map[string]*Result
	old   map[string]*Result // previous generation: the cache is two maps swapped when full
}

// iddPrefixes are the international prefixes in use around the world (the
// common ones); each dialled string is tried with every one, longest first.
var iddPrefixes = []string{"0011", "0010", "0019", "011", "810", "010", "001", "00"}

// truncated are international prefixes missing their first digit, as an
// attacker guessing a dial plan produces ("11" for the NANP's "011").
var truncated = []string{"11"}

// satellite and international-network calling codes. libphonenumber knows
// some of them only as non-geographic entities, reports many valid
// satellite numbers invalid and has no satellite type.
var satelliteCodes = map[int]Type{
	870: TypeSatellite,            // Inmarsat
	881: TypeSatellite,            // GMSS (Iridium, Globalstar, ICO, …)
	882: TypeInternationalNetwork, // international networks (Thuraya, EMSAT, …)
	883: TypeInternationalNetwork, // international networks
}

// New checks cfg and returns a Normalizer.
func New(cfg Config) (*Normalizer, error) {
	region := strings.ToUpper(strings.TrimSpace(cfg.HomeRegion))
	cc := phonenumbers.GetCountryCodeForRegion(region)
	if region == "" || cc == 0 {
		return nil, fmt.Errorf("numbers: home region %q is not an ISO 3166 country code libphonenumber knows (try US, GB, AU, DE)", cfg.HomeRegion)
	}
	for _, r := range cfg.AccessCode {
		if r < '0' || r > '9' {
			return nil, fmt.Errorf("numbers: access code %q must be digits only (e.g. 9)", cfg.AccessCode)
		}
	}
	n := &Normalizer{
		home:        region,
		homeCC:      cc,
		homeNDD:     phonenumbers.GetNddPrefixForRegion(region, true),
		accessCode:  cfg.AccessCode,
		internalMax: cfg.InternalMaxLen,
		cacheSize:   cfg.CacheSize,
		cache:       make(map[string]*Result),
	}
	if n.internalMax <= 0 {
		n.internalMax = 5
	}
	if n.cacheSize <= 0 {
		n.cacheSize = 4096
	}
	n.homeIDD = homeIDDs(region)
	return n, nil
}

// homeIDDs returns the international prefixes a caller in region dials.
// libphonenumber keeps them as a pattern; the table covers the regions
// whose pattern is not a single literal.
func homeIDDs(region string) []string {
	switch region {
	case "US", "CA", "PR", "VI", "GU", "AS", "MP", "AG", "AI", "BB", "BM", "BS", "DM", "DO", "GD", "JM", "KN", "KY", "LC", "MS", "SX", "TC", "TT", "VC", "VG":
		return []string{"011"}
	case "AU":
		return []string{"0011", "0014", "0015", "0018", "0019"}
	case "JP":
		return []string{"010"}
	case "RU", "KZ", "BY":
		return []string{"810", "00"}
	case "IL":
		return []string{"00", "012", "013", "014"}
	}
	return []string{"00"}
}

// Home returns the home region.
func (n *Normalizer) Home() string { return n.home }

// HomeCountryCode returns the home calling code.
func (n *Normalizer) HomeCountryCode() int { return n.homeCC }

// Normalize reads dialled. The result is cached and shared: do not modify it.
func (n *Normalizer) Normalize(dialled string) *Result {
	n.mu.RLock()
	r, ok := n.cache[dialled]
	if !ok {
		r, ok = n.old[dialled]
	}
	n.mu.RUnlock()
	if ok {
		return r
	}
	r = n.normalize(dialled)
	n.mu.Lock()
	if len(n.cache) >= n.cacheSize {
		n.old = n.cache
		n.cache = make(map[string]*Result, n.cacheSize)
	}
	n.cache[dialled] = r
	n.mu.Unlock()
	return r
}

// cleanDigits keeps digits and a leading "+", drops spaces, dashes, dots and
// parentheses; any other character makes the string not a number.
func cleanDigits(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '@'); i >= 0 { // a dial string "0044…@carrier"
		s = s[:i]
	}
	if i := strings.IndexByte(s, '/'); i >= 0 { // "PJSIP/0044…"
		s = s[i+1:]
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		case c == '+' && b.Len() == 0:
			b.WriteByte(c)
		case c == ' ' || c == '-' || c == '.' || c == '(' || c == ')':
		default:
			return "", false
		}
	}
	return b.String(), b.Len() > 0
}

func (n *Normalizer) normalize(dialled string) *Result {
	r := &Result{Dialled: dialled, Best: -1}
	d, ok := cleanDigits(dialled)
	if !ok {
		return r
	}
	if n.accessCode != "" && strings.HasPrefix(d, n.accessCode) && len(d)-len(n.accessCode) > n.internalMax {
		d = d[len(n.accessCode):]
	}
	r.Digits = d
	if d[0] != '+' && len(d) <= n.internalMax {
		r.Internal = true
		return r
	}
	cands := make([]Candidate, 0, 4)
	add := func(c Candidate, ok bool) {
		if !ok {
			return
		}
		for _, o := range cands {
			if o.E164 == c.E164 && o.Prefix == c.Prefix {
				return
			}
		}
		cands = append(cands, c)
	}
	if d[0] == '+' {
		add(n.international(d[1:], "+", FormPlus))
	} else {
		add(n.national(d))
		for _, p := range n.homeIDD {
			if strings.HasPrefix(d, p) {
				add(n.international(d[len(p):], p, FormHomeIDD))
			}
		}
		for _, p := range iddPrefixes {
			if strings.HasPrefix(d, p) && !contains(n.homeIDD, p) {
				add(n.international(d[len(p):], p, FormForeignIDD))
			}
		}
		for _, p := range truncated {
			if strings.HasPrefix(d, p) {
				add(n.international(d[len(p):], p, FormTruncated))
			}
		}
		add(n.international(d, "", FormBare))
	}
	r.Candidates = cands
	r.Best = n.pickBest(cands)
	return r
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// rank orders readings: a valid one always beats an invalid one; among
// valid ones the dial plan's own forms (national, "+", home IDD) come first,
// then another region's IDD, a truncated IDD, and a bare country code.
//
// In countries whose trunk prefix is "0" (GB, DE, AU, …) a long number
// dialled without it is a local number only by the letter of
// libphonenumber's permissive patterns (Germany accepts almost any digit
// string): such a national reading ranks after every valid international one.
func (n *Normalizer) rank(c Candidate) int {
	r := 0
	if !c.Valid {
		r += 100
	}
	switch c.Form {
	case FormNational:
		if n.homeNDD == "0" && c.Prefix == "" && len(c.National) > 8 {
			r += 35
		}
	case FormPlus, FormHomeIDD:
	case FormForeignIDD:
		r += 10
	case FormTruncated:
		r += 20
	default:
		r += 30
	}
	return r
}

func (n *Normalizer) pickBest(cands []Candidate) int {
	best, bestRank := -1, 1<<30
	for i, c := range cands {
		if k := n.rank(c); k < bestRank {
			best, bestRank = i, k
		}
	}
	return best
}

// national reads d as a number dialled inside the home country.
func (n *Normalizer) national(d string) (Candidate, bool) {
	num, err := phonenumbers.ParseAndKeepRawInput(d, n.home)
	if err != nil || num.GetCountryCodeSource() == phonenumbers.PhoneNumber_FROM_NUMBER_WITH_IDD {
		// libphonenumber stripped the home IDD itself: the IDD reading covers it.
		return Candidate{}, false
	}
	c := n.fill(num, "", FormNational)
	if strings.HasSuffix(d, c.National) {
		c.Prefix = d[:len(d)-len(c.National)] // trunk prefix "0", "1" or ""
	}
	return c, true
}

// international reads rest as "country code + national number".
func (n *Normalizer) international(rest, prefix string, form Form) (Candidate, bool) {
	if len(rest) < 4 || rest[0] == '0' || strings.IndexByte(rest, '+') >= 0 {
		return Candidate{}, false
	}
	for l := 3; l >= 2; l-- { // satellite / international networks first: libphonenumber misreads them
		if len(rest) <= l {
			continue
		}
		cc, _ := strconv.Atoi(rest[:l])
		if t, ok := satelliteCodes[cc]; ok {
			nsn := rest[l:]
			return Candidate{
				E164: "+" + rest, CountryCode: cc, National: nsn, Type: t, Form: form, Prefix: prefix,
				Valid: len(nsn) >= 6 && len(nsn) <= 12, International: cc != n.homeCC,
			}, true
		}
	}
	num, err := phonenumbers.Parse("+"+rest, n.home)
	if err != nil {
		return Candidate{}, false
	}
	return n.fill(num, prefix, form), true
}

func (n *Normalizer) fill(num *phonenumbers.PhoneNumber, prefix string, form Form) Candidate {
	cc := int(num.GetCountryCode())
	nsn := phonenumbers.GetNationalSignificantNumber(num)
	c := Candidate{
		E164:          "+" + strconv.Itoa(cc) + nsn,
		CountryCode:   cc,
		National:      nsn,
		Form:          form,
		Prefix:        prefix,
		International: cc != n.homeCC,
	}
	if t, ok := satelliteCodes[cc]; ok {
		c.Type = t
		c.Valid = len(nsn) >= 6 && len(nsn) <= 12
		return c
	}
	c.Valid = phonenumbers.IsValidNumber(num)
	if region := phonenumbers.GetRegionCodeForNumber(num); region != "" && region != "001" && region != "ZZ" {
		c.Country = region
	} else if region = phonenumbers.GetRegionCodeForCountryCode(cc); region != "001" && region != "ZZ" {
		c.Country = region
	}
	if c.Valid {
		c.Type = mapType(phonenumbers.GetNumberType(num))
	}
	return c
}

func mapType(t phonenumbers.PhoneNumberType) Type {
	switch t {
	case phonenumbers.FIXED_LINE:
		return TypeFixed
	case phonenumbers.MOBILE:
		return TypeMobile
	case phonenumbers.FIXED_LINE_OR_MOBILE:
		return TypeFixedOrMobile
	case phonenumbers.TOLL_FREE:
		return TypeTollFree
	case phonenumbers.PREMIUM_RATE:
		return TypePremium
	case phonenumbers.SHARED_COST:
		return TypeSharedCost
	case phonenumbers.VOIP:
		return TypeVoIP
	case phonenumbers.PERSONAL_NUMBER:
		return TypePersonal
	case phonenumbers.PAGER:
		return TypePager
	case phonenumbers.UAN:
		return TypeUAN
	case phonenumbers.VOICEMAIL:
		return TypeVoicemail
	}
	return TypeUnknown
}
