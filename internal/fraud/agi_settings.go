package fraud

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// AGISettings is `fraud.agi:`, the decision before the call (FastAGI):
//
//	fraud:
//	  agi:
//	    listen: 127.0.0.1:4573      # required to turn it on
//	    allow_from: [127.0.0.1, ::1] # the Asterisk hosts that may ask (default: loopback)
//	    timeout: 2s                 # one AGI session, from connect to close
//	    international: trusted      # trusted (default): only trusted endpoints call abroad; all: everyone
//	    trusted_endpoints: [1001]   # default: audit.trusted_endpoints
//	    new_address: true           # deny international calls from an address new for the extension
//	    new_address_for: 24h        # an address is new for this long after its first allowed call
//	    calls_per_window: 60        # calls per extension per fraud.window
//	    intl_per_window: 4          # international calls per extension per fraud.window
//	    spend_per_window: 0         # estimated cost per extension per window (0: off)
//	    rates: /etc/pbxguard/rates.csv  # "GB,0.02" / "+88213,4.50" per minute
//	    assumed_minutes: 10         # minutes each call is priced for
//	    default_rate: 0             # per minute, destinations without a rate
type AGISettings struct {
	Listen  string
	Timeout time.Duration
	// AllowFrom are the peers that may ask: Asterisk's addresses (default
	// loopback). Anyone else could forge requests that hold an extension or
	// name an address to ban.
	AllowFrom []netip.Prefix
	// Trusted is nil when trusted_endpoints is not set (the daemon then
	// takes audit.trusted_endpoints).
	Trusted  []string
	TrustAll bool
	Decide   DecideConfig // the budgets, new-address rule and rates
}

// parseAGISettings reads the agi: key of the fraud: mapping node n; nil
// when absent.
func parseAGISettings(n *yaml.Node) (*AGISettings, []error) {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	var an *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "agi" {
			an = n.Content[i+1]
		}
	}
	if an == nil {
		return nil, nil
	}
	var errs []error
	bad := func(node *yaml.Node, key, format string, args ...any) {
		errs = append(errs, &SettingsError{Line: node.Line, Key: strings.TrimSuffix("agi."+key, "."), Msg: fmt.Sprintf(format, args...)})
	}
	if an.Kind != yaml.MappingNode {
		bad(an, "", "expected a mapping (listen: 127.0.0.1:4573)")
		return nil, errs
	}
	known := []string{"listen", "allow_from", "timeout", "international", "trusted_endpoints", "new_address", "new_address_for",
		"calls_per_window", "intl_per_window", "spend_per_window", "rates", "assumed_minutes", "default_rate"}
	a := &AGISettings{Timeout: 2 * time.Second, Decide: DecideConfig{NewAddress: true}}
	seen := map[string]bool{}
	for i := 0; i+1 < len(an.Content); i += 2 {
		k, v := an.Content[i], an.Content[i+1]
		key := k.Value
		if seen[key] {
			bad(k, key, "appears twice (keep one)")
		}
		seen[key] = true
		if key == "allow_from" {
			if v.Kind != yaml.SequenceNode {
				bad(v, key, "expected a list of addresses or networks ([127.0.0.1, 192.0.2.10])")
				continue
			}
			a.AllowFrom = []netip.Prefix{}
			for _, e := range v.Content {
				p, err := netip.ParsePrefix(e.Value)
				if err != nil {
					ad, err2 := netip.ParseAddr(e.Value)
					if err2 != nil || e.Kind != yaml.ScalarNode {
						bad(e, key, "%q is neither an address nor a network (192.0.2.10, 192.0.2.0/24)", e.Value)
						continue
					}
					p = netip.PrefixFrom(ad, ad.BitLen())
				}
				a.AllowFrom = append(a.AllowFrom, p.Masked())
			}
			continue
		}
		if key == "trusted_endpoints" {
			if v.Kind != yaml.SequenceNode {
				bad(v, key, "expected a list ([1001, PJSIP/1002])")
				continue
			}
			a.Trusted = []string{}
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode || strings.TrimSpace(e.Value) == "" {
					bad(e, key, "expected endpoint names (1001, PJSIP/1001)")
					continue
				}
				a.Trusted = append(a.Trusted, strings.TrimSpace(e.Value))
			}
			continue
		}
		if v.Kind != yaml.ScalarNode {
			bad(v, key, "expected a single value")
			continue
		}
		s := strings.TrimSpace(v.Value)
		num := func(lo, hi float64) float64 {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(f) || f < lo || f > hi {
				bad(v, key, "%q is not a number from %g to %g", s, lo, hi)
				return 0
			}
			return f
		}
		dur := func() time.Duration {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				bad(v, key, "%q is not a duration (try 2s, 1h, 24h)", s)
			}
			return d
		}
		switch key {
		case "listen":
			host, port, err := net.SplitHostPort(s)
			if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
				bad(v, key, "%q is not host:port (write 127.0.0.1:4573)", s)
			}
			a.Listen = s
		case "timeout":
			a.Timeout = dur()
		case "international":
			switch s {
			case "trusted":
			case "all":
				a.TrustAll = true
			default:
				bad(v, key, "%q: write trusted (only trusted_endpoints call abroad) or all", s)
			}
		case "new_address":
			b, err := strconv.ParseBool(s)
			if err != nil {
				bad(v, key, "%q is not true or false", s)
			}
			a.Decide.NewAddress = b
		case "new_address_for":
			a.Decide.NewAddressFor = dur()
		case "calls_per_window":
			a.Decide.CallsPerWindow = int(num(1, 1e6))
		case "intl_per_window":
			a.Decide.IntlPerWindow = int(num(1, 1e6))
		case "spend_per_window":
			a.Decide.SpendPerWindow = num(0, 1e9)
		case "assumed_minutes":
			a.Decide.AssumedMinutes = num(0.1, 1e4)
		case "default_rate":
			a.Decide.DefaultRate = num(0, 1e6)
		case "rates":
			f, err := os.Open(s)
			if err != nil {
				bad(v, key, "%v (write one \"GB,0.02\" or \"+88213,4.50\" line per destination)", err)
				continue
			}
			r, err := ParseRates(f)
			f.Close()
			if err != nil {
				bad(v, key, "%s: %v", s, err)
				continue
			}
			a.Decide.Rates = r
		default:
			bad(k, key, "unknown key (known here: %s)", strings.Join(known, ", "))
		}
	}
	if a.AllowFrom == nil {
		a.AllowFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if a.Listen == "" && len(errs) == 0 {
		bad(an, "listen", "missing: set the FastAGI address, e.g. 127.0.0.1:4573 (the dialplan calls agi://127.0.0.1:4573/outbound)")
	}
	return a, errs
}

// Allowed reports whether peer may ask (AllowFrom).
func (a *AGISettings) Allowed(peer netip.Addr) bool {
	peer = peer.Unmap()
	for _, p := range a.AllowFrom {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// Decider builds the decision before the call from the settings: the
// engine's window, prefix forms, trunks and responses, fraud.agi's
// budgets, and the trusted endpoints (fraud.agi.trusted_endpoints, else
// auditTrusted: audit.trusted_endpoints).
func (s *Settings) Decider(auditTrusted []string) (*Decider, error) {
	if s.AGI == nil {
		return nil, fmt.Errorf("fraud: no fraud.agi section")
	}
	nums, err := s.Normalizer()
	if err != nil {
		return nil, err
	}
	cfg := s.AGI.Decide
	cfg.TrustAll = s.AGI.TrustAll
	cfg.Trusted = s.AGI.Trusted
	if cfg.Trusted == nil {
		cfg.Trusted = auditTrusted
	}
	eng := s.Engine
	eng.defaults()
	cfg.Window, cfg.PrefixForms, cfg.Trunks, cfg.Responses = eng.Window, eng.PrefixForms, s.Trunks, eng.Responses
	resp := func(r Rule) Response {
		if x, ok := eng.Responses[r]; ok {
			return x
		}
		return defaultResponses[r]
	}
	cfg.DenyPremium = resp(RulePremium).Lock || resp(RulePremium).Hangup
	cfg.DenySatellite = resp(RuleSatellite).Lock || resp(RuleSatellite).Hangup
	return NewDecider(cfg, nums)
}
