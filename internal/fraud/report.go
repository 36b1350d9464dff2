package fraud

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// Rates is a per-country (or per E.164 prefix) price table for estimating
// the cost of calls, read with ParseRates.
type Rates struct {
	country map[string]float64
	prefix  map[string]float64 // "+88213" → rate
	maxLen  int
}

// ParseRates reads "key,per-minute rate" lines: key is an ISO country
// ("GB") or an E.164 prefix ("+88213"); "#" comments, blank lines and a
// header line are skipped.
func ParseRates(r io.Reader) (*Rates, error) {
	rt := &Rates{country: map[string]float64{}, prefix: map[string]float64{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ",")
		if !ok {
			return nil, fmt.Errorf("rates: line %d: %q: want \"country-or-+prefix,rate per minute\" (e.g. GB,0.02 or +88213,4.50)", n, line)
		}
		k = strings.TrimSpace(k)
		v, _, _ = strings.Cut(strings.TrimSpace(v), ",")
		rate, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
			if n == 1 {
				continue // header
			}
			return nil, fmt.Errorf("rates: line %d: rate %q is not a non-negative number", n, v)
		}
		switch {
		case strings.HasPrefix(k, "+") && len(k) > 1 && strings.Trim(k[1:], "0123456789") == "":
			rt.prefix[k] = rate
			rt.maxLen = max(rt.maxLen, len(k))
		case len(k) == 2:
			rt.country[strings.ToUpper(k)] = rate
		default:
			return nil, fmt.Errorf("rates: line %d: key %q is neither an ISO country (GB) nor an E.164 prefix (+44)", n, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("rates: %w", err)
	}
	return rt, nil
}

// PerMinute returns the rate for a number: the longest matching E.164
// prefix, else its country.
func (r *Rates) PerMinute(c numbers.Candidate) (float64, bool) {
	if r == nil {
		return 0, false
	}
	for l := min(len(c.E164), r.maxLen); l >= 2; l-- {
		if rate, ok := r.prefix[c.E164[:l]]; ok {
			return rate, true
		}
	}
	rate, ok := r.country[c.Country]
	return rate, ok
}

// Destination is one number an extension called.
type Destination struct {
	Dialled string `json:"dialled"`
	E164    string `json:"e164,omitempty"`
	Country string `json:"country,omitempty"`
	Type    string `json:"type,omitempty"`
	Form    string `json:"form,omitempty"`
	Calls   int    `json:"calls"`
	Billsec int    `json:"billsec"`
}

// PrefixEvidence is one number reached through several prefix forms.
type PrefixEvidence struct {
	E164    string   `json:"e164"`
	Dialled []string `json:"dialled"`
}

// ExtensionReport is one extension in an incident report.
type ExtensionReport struct {
	Extension          string           `json:"extension"`
	Suspicious         bool             `json:"suspicious"`
	Calls              int              `json:"calls"`
	InternationalCalls int              `json:"international_calls"`
	Countries          []string         `json:"countries"`
	PrefixGuessing     bool             `json:"prefix_guessing"`
	Addrs              []string         `json:"addrs"`
	FirstCall          string           `json:"first_call"`
	Reasons            []string         `json:"reasons"`
	LastCall           string           `json:"last_call"`
	NonGeographic      []string         `json:"non_geographic,omitempty"` // "+882": satellite / international networks
	Rules              []Rule           `json:"rules,omitempty"`
	Destinations       []Destination    `json:"destinations"`
	PrefixEvidence     []PrefixEvidence `json:"prefix_evidence,omitempty"`
	Billsec            int              `json:"billsec"`
	EstimatedCost      *float64         `json:"estimated_cost,omitempty"`
	UnpricedCalls      int              `json:"unpriced_calls,omitempty"`
}

// Report is the after-the-fact view of calls.
type Report struct {
	Extensions []ExtensionReport `json:"extensions"`
}

// Suspicious returns the suspicious extensions.
func (r *Report) Suspicious() []ExtensionReport {
	var out []ExtensionReport
	for _, e := range r.Extensions {
		if e.Suspicious {
			out = append(out, e)
		}
	}
	return out
}

// ReportInput is what BuildReport reads.
type ReportInput struct {
	Calls []calls.Call // ended calls (CDR rows)
	Auths []calls.Auth // successful authentications (security log), for addresses
	Since time.Time    // zero: all
	Rates *Rates       // nil: no cost estimate
	// AuthSlack is how long after a call's (second-resolution) CDR start
	// its INVITE's authentication may be logged (0: 1s: the CDR start is the
	// Newchannel second, and the INVITE authenticates just before it).
	AuthSlack time.Duration
}

// BuildReport runs the engine's rules over the calls (in start order, as CDR
// rows) and summarises each extension. The engine's config decides what is
// suspicious; a fresh engine is built from cfg and nums.
func BuildReport(cfg Config, nums *numbers.Normalizer, in ReportInput) (*Report, error) {
	eng, err := NewEngine(cfg, nums)
	if err != nil {
		return nil, err
	}
	cs := make([]calls.Call, 0, len(in.Calls))
	for _, c := range in.Calls {
		if !in.Since.IsZero() && c.Start.Before(in.Since) {
			continue
		}
		if c.Extension == "" || eng.ignore[c.Extension] {
			continue
		}
		cs = append(cs, c)
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].Start.Before(cs[j].Start) })
	slack := in.AuthSlack
	if slack <= 0 {
		slack = time.Second
	}
	auths := slices.Clone(in.Auths)
	sort.SliceStable(auths, func(i, j int) bool { return auths[i].Time.Before(auths[j].Time) })

	type acc struct {
		r          ExtensionReport
		dest       map[string]int // dialled → index
		countries  map[string]bool
		nongeo     map[string]bool
		addrs      map[netip.Addr]bool
		rules      map[Rule]bool
		evidence   map[string][]string
		cost       float64
		priced     bool
		first      time.Time
		last       time.Time
		suspicious bool
	}
	byExt := map[string]*acc{}
	var order []string
	for _, c := range cs {
		a := byExt[c.Extension]
		if a == nil {
			a = &acc{r: ExtensionReport{Extension: c.Extension}, dest: map[string]int{}, countries: map[string]bool{},
				nongeo: map[string]bool{}, addrs: map[netip.Addr]bool{}, rules: map[Rule]bool{}, evidence: map[string][]string{}}
			byExt[c.Extension] = a
			order = append(order, c.Extension)
		}
		if !c.SourceAddr.IsValid() {
			c.SourceAddr = addrAt(auths, c.Extension, c.Start.Add(slack))
		}
		a.r.Calls++
		a.r.Billsec += c.Billsec
		if a.first.IsZero() || c.Start.Before(a.first) {
			a.first = c.Start
		}
		if c.Start.After(a.last) {
			a.last = c.Start
		}
		res := nums.Normalize(c.Dialled)
		best, _ := res.BestCandidate()
		di, ok := a.dest[c.Dialled]
		if !ok {
			d := Destination{Dialled: c.Dialled}
			if best.Valid {
				d.E164, d.Country, d.Type, d.Form = best.E164, best.Country, best.Type.String(), best.Form.String()
			}
			a.r.Destinations = append(a.r.Destinations, d)
			di = len(a.r.Destinations) - 1
			a.dest[c.Dialled] = di
		}
		a.r.Destinations[di].Calls++
		a.r.Destinations[di].Billsec += c.Billsec
		if best.Valid && best.International {
			a.r.InternationalCalls++
			if best.Country != "" {
				a.countries[best.Country] = true
			} else {
				a.nongeo[fmt.Sprintf("+%d", best.CountryCode)] = true
			}
			if c.SourceAddr.IsValid() {
				a.addrs[c.SourceAddr] = true
			}
		}
		if best.Valid && (best.International || best.Type == numbers.TypePremium) && in.Rates != nil && c.Billsec > 0 {
			if rate, ok := in.Rates.PerMinute(best); ok {
				a.cost += rate * float64(c.Billsec) / 60
				a.priced = true
			} else {
				a.r.UnpricedCalls++
			}
		}
		for _, f := range eng.Observe(calls.Update{Kind: calls.CallEnded, Call: c}, c.End) {
			if f.Rule == RuleLocked {
				continue
			}
			a.suspicious = true
			if !a.rules[f.Rule] {
				a.rules[f.Rule] = true
				a.r.Rules = append(a.r.Rules, f.Rule)
				a.r.Reasons = append(a.r.Reasons, string(f.Rule)+": "+f.Reason)
			}
			if f.Rule == RulePrefixGuessing {
				a.r.PrefixGuessing = true
			}
			for _, ad := range f.Addrs {
				a.addrs[ad] = true
			}
		}
		// Evidence of prefix guessing: every international number with its forms.
		if best.Valid && best.International && !slices.Contains(a.evidence[best.E164], c.Dialled) {
			a.evidence[best.E164] = append(a.evidence[best.E164], c.Dialled)
		}
	}
	rep := &Report{Extensions: make([]ExtensionReport, 0, len(order))}
	for _, ext := range order {
		a := byExt[ext]
		r := a.r
		r.Suspicious = a.suspicious
		r.Countries = sortedKeys(a.countries)
		r.NonGeographic = sortedKeys(a.nongeo)
		r.Addrs = make([]string, 0, len(a.addrs))
		addrs := make([]netip.Addr, 0, len(a.addrs))
		for ad := range a.addrs {
			addrs = append(addrs, ad)
		}
		slices.SortFunc(addrs, func(x, y netip.Addr) int { return x.Compare(y) })
		for _, ad := range addrs {
			r.Addrs = append(r.Addrs, ad.String())
		}
		r.FirstCall = a.first.UTC().Format(time.RFC3339)
		r.LastCall = a.last.UTC().Format(time.RFC3339)
		if r.Reasons == nil {
			r.Reasons = []string{}
		}
		if r.PrefixGuessing {
			var keys []string
			for k, v := range a.evidence {
				if len(v) >= 2 {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				r.PrefixEvidence = append(r.PrefixEvidence, PrefixEvidence{E164: k, Dialled: a.evidence[k]})
			}
		}
		if a.priced {
			cost := math.Round(a.cost*100) / 100
			r.EstimatedCost = &cost
		}
		rep.Extensions = append(rep.Extensions, r)
	}
	sort.SliceStable(rep.Extensions, func(i, j int) bool {
		if rep.Extensions[i].Suspicious != rep.Extensions[j].Suspicious {
			return rep.Extensions[i].Suspicious
		}
		return rep.Extensions[i].Extension < rep.Extensions[j].Extension
	})
	return rep, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// addrAt returns the address ext last authenticated from at or before t
// (auths sorted by time).
func addrAt(auths []calls.Auth, ext string, t time.Time) netip.Addr {
	i := sort.Search(len(auths), func(i int) bool { return auths[i].Time.After(t) })
	for j := i - 1; j >= 0; j-- {
		if auths[j].Account == ext {
			return auths[j].Addr
		}
	}
	return netip.Addr{}
}
