package fraud

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/confyaml"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// Settings is the `fraud:` section of the configuration file:
//
//	fraud:
//	  country: US                 # the PBX's home country (required)
//	  access_code: "9"            # outbound access code, if users dial one
//	  trunks: [carrier]           # endpoints that are trunks, never judged
//	  ami: {addr: 127.0.0.1:5038, user: pbxguard, secret_file: /etc/pbxguard/ami.secret, md5: true}
//	  cdr: /var/log/asterisk/cdr-csv/Master.csv   # fallback source (optional)
//	  window: 10m
//	  intl_per_window: 5
//	  concurrent_intl: 3
//	  countries_per_window: 3
//	  prefix_forms: 2
//	  high_risk_countries: [CU, SO, SL]
//	  business_hours: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri], timezone: Europe/London}
//	  new_country: true
//	  never_ban: [198.51.100.0/24]
//	  dry_run: false
//	  ban_for: 24h
//	  hangup_cause: 21
//	  pjsip_hangup: false
//	  maintenance: false
//	  responses: {high_risk_country: [alert], prefix_guessing: [hangup, lock, ban, alert]}
//	  alerts:
//	    webhook: {url: "https://hooks.example.org/pbx", headers: {Authorization: "Bearer …"}}
//	    email: {addr: "127.0.0.1:25", from: pbxguard@example.org, to: [admin@example.org]}
//	    syslog: {tag: pbxguard}
//	  incident_log: /var/lib/pbxguard/incidents.jsonl
type Settings struct {
	Country    string
	AccessCode string
	Trunks     []string

	AMIAddr, AMIUser, AMISecretFile string
	AMIMD5                          bool
	CDR                             string
	CEL                             string

	Engine      Config // thresholds, lists, hours, responses (CountryOf set when new_country)
	DryRun      bool
	BanFor      time.Duration
	HangupCause int
	PJSIPHangup bool
	// PJSIPHangupCode is the SIP response code of PJSIPHangup (400–699).
	PJSIPHangupCode int
	Maintenance     bool

	Webhook     *WebhookAlerter
	Email       *SMTPAlerter
	Syslog      *SyslogAlerter
	IncidentLog string

	AGI *AGISettings // fraud.agi: the decision before the call (nil: off); see agi_settings.go
}

// SettingsError is an error of the fraud: section: confyaml's, the one
// error type of every section (Line, Key, Msg, Suggest). A Key built
// outside the Walker ("agi.listen") is made "fraud.agi.listen" by joinErrs.
type SettingsError = confyaml.Error

// sp reads the fraud: section through confyaml, the one dialect of the
// configuration file: errors are confyaml.Error values (line, key path
// fraud.…, message, did-you-mean), every one of them collected in one pass.
type sp struct {
	w    *confyaml.Walker
	errs []error // errors made outside the Walker (sub-parsers), folded in by joinErrs
}

// joinErrs folds errs into one confyaml.Errors, in file order: each
// *SettingsError keyed under fraud., anything else as a message.
func joinErrs(errs []error) error {
	var out confyaml.Errors
	for _, e := range errs {
		var es confyaml.Errors
		if errors.As(e, &es) {
			out = append(out, es...)
			continue
		}
		var ce confyaml.Error
		if pe := (*confyaml.Error)(nil); errors.As(e, &pe) {
			ce = *pe
		} else if !errors.As(e, &ce) {
			out = append(out, confyaml.Error{Key: "fraud", Msg: e.Error()})
			continue
		}
		if ce.Key != "fraud" && !strings.HasPrefix(ce.Key, "fraud.") {
			ce.Key = confyaml.Join("fraud", ce.Key)
		}
		out = append(out, ce)
	}
	out.Sort()
	return out.Err()
}

func (p *sp) errf(n *yaml.Node, key, format string, args ...any) {
	p.w.ErrorAt(n, key, format, args...)
}

// mapping returns key → value nodes, reporting unknown keys (with the
// nearest known one) and duplicates.
func (p *sp) mapping(n *yaml.Node, prefix string, known ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n == nil {
		return out
	}
	fields := confyaml.Fields{}
	for _, k := range known {
		fields[k] = func(_ string, v *yaml.Node) { out[k] = v }
	}
	p.w.MappingWith(n, strings.TrimSuffix(prefix, "."), fields, "expected a mapping (key: value), found %s")
	return out
}

func (p *sp) str(m map[string]*yaml.Node, k, key string) string {
	v := m[k]
	if v == nil {
		return ""
	}
	return p.w.String(key, v)
}

func (p *sp) boolean(m map[string]*yaml.Node, k, key string, def bool) bool {
	s := p.str(m, k, key)
	if s == "" {
		return def
	}
	if b, ok := confyaml.ParseBool(s); ok {
		return b
	}
	b, err := strconv.ParseBool(s) // 1, t, F…: accepted before the dialect was one
	if err != nil {
		p.errf(m[k], key, "%q is not true or false", s)
	}
	return b
}

func (p *sp) integer(m map[string]*yaml.Node, k, key string, lo, hi int) int {
	if m[k] == nil {
		return 0
	}
	return p.w.Int(key, m[k], lo, hi)
}

func (p *sp) duration(m map[string]*yaml.Node, k, key string) time.Duration {
	if m[k] == nil {
		return 0
	}
	d, _ := p.w.Duration(key, m[k], time.Second, 0, "try 10m, 1h, 24h")
	return d
}

func (p *sp) list(m map[string]*yaml.Node, k, key string) []string {
	if m[k] == nil {
		return nil
	}
	return p.w.Strings(key, m[k])
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func clockTime(s string) (time.Duration, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok {
		return 0, false
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, false
	}
	return time.Duration(hh)*time.Hour + time.Duration(mm)*time.Minute, true
}

// DefaultSettings are the settings of an empty fraud: section (without
// the country it requires): the daemon's AMI jails use them when there is
// no fraud: section.
func DefaultSettings() *Settings {
	return &Settings{AMIAddr: "127.0.0.1:5038", AMIUser: "pbxguard", AMISecretFile: "/etc/pbxguard/ami.secret", AMIMD5: true,
		BanFor: 24 * time.Hour, HangupCause: 21, PJSIPHangupCode: 403}
}

// ParseSettings reads the `fraud:` section. Errors carry the line and say
// what to write instead; all of them are returned, as confyaml.Errors.
func ParseSettings(n *yaml.Node) (*Settings, error) {
	p := &sp{w: &confyaml.Walker{Prefix: "fraud"}}
	s := DefaultSettings()
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	m := p.mapping(n, "", "country", "access_code", "trunks", "ami", "cdr", "cel", "window", "intl_per_window", "concurrent_intl",
		"countries_per_window", "prefix_forms", "established_after", "high_risk_countries", "business_hours", "new_country", "never_ban", "dry_run",
		"ban_for", "hangup_cause", "pjsip_hangup", "pjsip_hangup_code", "maintenance", "responses", "alerts", "incident_log", "agi")
	s.Country = strings.ToUpper(p.str(m, "country", "country"))
	if s.Country == "" {
		line := 0
		if n != nil {
			line = n.Line
		}
		p.w.Errorf(line, "country", "missing: set the PBX's home country (ISO 3166: US, GB, AU, DE, …)")
	} else if _, err := numbers.New(numbers.Config{HomeRegion: s.Country}); err != nil {
		p.errf(m["country"], "country", "%q is not a country code libphonenumber knows (try US, GB, AU, DE)", s.Country)
	}
	s.AccessCode = p.str(m, "access_code", "access_code")
	if strings.Trim(s.AccessCode, "0123456789") != "" {
		p.errf(m["access_code"], "access_code", "%q must be digits (e.g. \"9\")", s.AccessCode)
	}
	s.Trunks = p.list(m, "trunks", "trunks")
	s.Engine.IgnoreExtensions = s.Trunks
	am := p.mapping(m["ami"], "ami.", "addr", "user", "secret_file", "md5")
	if v := p.str(am, "addr", "ami.addr"); v != "" {
		if err := confyaml.CheckHostPort(v); err != nil {
			p.errf(am["addr"], "ami.addr", "%q is not host:port (try \"127.0.0.1:5038\"; Asterisk's manager.conf port, 5038 by default)", v)
		}
		s.AMIAddr = v
	}
	if v := p.str(am, "user", "ami.user"); v != "" {
		s.AMIUser = v
	}
	if v := p.str(am, "secret_file", "ami.secret_file"); v != "" {
		s.AMISecretFile = v
	}
	s.AMIMD5 = p.boolean(am, "md5", "ami.md5", true)
	s.CDR = p.str(m, "cdr", "cdr")
	s.CEL = p.str(m, "cel", "cel")
	for _, k := range []string{"cdr", "cel"} {
		if v := p.str(m, k, k); v != "" && !strings.HasPrefix(v, "/") {
			p.errf(m[k], k, "%q is not an absolute path (write it from /)", v)
		}
	}
	s.Engine.Window = p.duration(m, "window", "window")
	s.Engine.IntlPerWindow = p.integer(m, "intl_per_window", "intl_per_window", 1, 100000)
	s.Engine.ConcurrentIntl = p.integer(m, "concurrent_intl", "concurrent_intl", 1, 100000)
	s.Engine.CountriesPerWindow = p.integer(m, "countries_per_window", "countries_per_window", 1, 300)
	s.Engine.PrefixForms = p.integer(m, "prefix_forms", "prefix_forms", 2, 10)
	s.Engine.EstablishedAfter = p.duration(m, "established_after", "established_after")
	if l := p.list(m, "high_risk_countries", "high_risk_countries"); l != nil {
		for _, c := range l {
			if len(c) != 2 {
				p.errf(m["high_risk_countries"], "high_risk_countries", "%q is not an ISO 3166 alpha-2 code (e.g. CU)", c)
			}
		}
		s.Engine.HighRiskCountries = l
	}
	if bh := m["business_hours"]; bh != nil {
		hm := p.mapping(bh, "business_hours.", "start", "end", "days", "timezone")
		h := &Hours{Location: time.Local}
		var ok bool
		if h.Start, ok = clockTime(p.str(hm, "start", "business_hours.start")); !ok {
			p.errf(bh, "business_hours.start", "want a time of day like \"08:00\"")
		}
		if h.End, ok = clockTime(p.str(hm, "end", "business_hours.end")); !ok {
			p.errf(bh, "business_hours.end", "want a time of day like \"19:00\"")
		}
		for _, d := range p.list(hm, "days", "business_hours.days") {
			wd, ok := weekdays[strings.ToLower(d)]
			if !ok {
				p.errf(hm["days"], "business_hours.days", "%q is not a day (mon, tue, wed, thu, fri, sat, sun)", d)
			}
			h.Days = append(h.Days, wd)
		}
		if tz := p.str(hm, "timezone", "business_hours.timezone"); tz != "" {
			loc, err := time.LoadLocation(tz)
			if err != nil {
				p.errf(hm["timezone"], "business_hours.timezone", "%q is not a time zone (e.g. Europe/London)", tz)
			} else {
				h.Location = loc
			}
		}
		s.Engine.Hours = h
	}
	if p.boolean(m, "new_country", "new_country", true) {
		s.Engine.CountryOf = IPCountry
	}
	for _, v := range p.list(m, "never_ban", "never_ban") {
		pfx, err := netip.ParsePrefix(v)
		if err != nil {
			a, err2 := netip.ParseAddr(v)
			if err2 != nil {
				p.errf(m["never_ban"], "never_ban", "%q is neither an address nor a prefix (e.g. 198.51.100.0/24)", v)
				continue
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		s.Engine.NeverBan = append(s.Engine.NeverBan, pfx.Masked())
	}
	s.DryRun = p.boolean(m, "dry_run", "dry_run", false)
	if d := p.duration(m, "ban_for", "ban_for"); d > 0 {
		s.BanFor = d
	}
	if c := p.integer(m, "hangup_cause", "hangup_cause", 1, 127); c > 0 {
		s.HangupCause = c
	}
	s.PJSIPHangup = p.boolean(m, "pjsip_hangup", "pjsip_hangup", false)
	if c := p.integer(m, "pjsip_hangup_code", "pjsip_hangup_code", 400, 699); c > 0 {
		s.PJSIPHangupCode = c
	}
	s.Maintenance = p.boolean(m, "maintenance", "maintenance", false)
	if rn := m["responses"]; rn != nil {
		known := make([]string, 0, len(defaultResponses))
		for r := range defaultResponses {
			known = append(known, string(r))
		}
		slices.Sort(known)
		rm := p.mapping(rn, "responses.", known...)
		s.Engine.Responses = map[Rule]Response{}
		for r, v := range rm {
			var resp Response
			for _, a := range p.list(rm, r, "responses."+r) {
				switch a {
				case "hangup":
					resp.Hangup = true
				case "lock":
					resp.Lock = true
				case "ban":
					resp.Ban = true
				case "alert":
					resp.Alert = true
				case "none":
				default:
					p.errf(v, "responses."+r, "%q is not an action (hangup, lock, ban, alert, none)", a)
				}
			}
			s.Engine.Responses[Rule(r)] = resp
		}
	}
	al := p.mapping(m["alerts"], "alerts.", "webhook", "email", "syslog")
	if wn := al["webhook"]; wn != nil {
		wm := p.mapping(wn, "alerts.webhook.", "url", "headers")
		w := &WebhookAlerter{URL: p.str(wm, "url", "alerts.webhook.url"), Header: map[string]string{}}
		if !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://") {
			p.errf(wn, "alerts.webhook.url", "%q is not an http(s) URL", w.URL)
		}
		if hn := wm["headers"]; hn != nil {
			if hn.Kind != yaml.MappingNode {
				p.errf(hn, "alerts.webhook.headers", "expected a mapping (Header: value)")
			} else {
				for i := 0; i+1 < len(hn.Content); i += 2 {
					w.Header[hn.Content[i].Value] = hn.Content[i+1].Value
				}
			}
		}
		s.Webhook = w
	}
	if en := al["email"]; en != nil {
		em := p.mapping(en, "alerts.email.", "addr", "from", "to", "username", "password_file")
		e := &SMTPAlerter{Addr: p.str(em, "addr", "alerts.email.addr"), From: p.str(em, "from", "alerts.email.from"),
			To: p.list(em, "to", "alerts.email.to"), Username: p.str(em, "username", "alerts.email.username")}
		if e.Addr == "" || e.From == "" || len(e.To) == 0 {
			p.errf(en, "alerts.email", "needs addr (host:port), from and to")
		}
		if pf := p.str(em, "password_file", "alerts.email.password_file"); pf != "" {
			b, err := os.ReadFile(pf)
			if err != nil {
				p.errf(em["password_file"], "alerts.email.password_file", "%v", err)
			}
			e.Password = strings.TrimSpace(string(b))
		}
		s.Email = e
	}
	if sn := al["syslog"]; sn != nil {
		sm := p.mapping(sn, "alerts.syslog.", "network", "addr", "tag")
		s.Syslog = &SyslogAlerter{Network: p.str(sm, "network", "alerts.syslog.network"), Addr: p.str(sm, "addr", "alerts.syslog.addr"), Tag: p.str(sm, "tag", "alerts.syslog.tag")}
	}
	s.IncidentLog = p.str(m, "incident_log", "incident_log")
	var agiErrs []error
	s.AGI, agiErrs = parseAGISettings(n)
	p.errs = append(p.errs, agiErrs...)
	if len(p.errs) > 0 || len(p.w.Errs) > 0 {
		return nil, joinErrs(append([]error{p.w.Errs}, p.errs...))
	}
	return s, nil
}

// Normalizer returns the number reader for the settings.
func (s *Settings) Normalizer() (*numbers.Normalizer, error) {
	return numbers.New(numbers.Config{HomeRegion: s.Country, AccessCode: s.AccessCode})
}

// Alerters returns the configured alerters.
func (s *Settings) Alerters() []Alerter {
	var out []Alerter
	if s.Webhook != nil {
		out = append(out, s.Webhook)
	}
	if s.Email != nil {
		out = append(out, s.Email)
	}
	if s.Syslog != nil {
		out = append(out, s.Syslog)
	}
	return out
}

// AMIConfig returns the AMI client configuration of the settings, reading
// the secret from AMISecretFile. The daemon (internal/daemon/ami.go) does
// this, with the one monitor NewMonitor builds:
//
//	set, err := fraud.ParseSettings(cfg.Fraud)
//	acfg, err := set.AMIConfig(log)
//	client, err := ami.New(acfg)
//	events := client.Subscribe(0, nil) // the whole session
//	mon, err := fraud.NewMonitor(set, fraud.Deps{AMI: client, Log: log,
//		Banner:   fraud.BanFunc(func(ctx context.Context, a netip.Addr, d time.Duration, reason string) error {
//			_, err := daemon.Ban(ctx, netip.PrefixFrom(a, a.BitLen()), d, "fraud", reason)
//			return err
//		}),
//		Recorder: fraud.StoreRecorder{Store: st}}) // and set.IncidentLog, when set
//	go mon.Run(ctx, events.C()) // starts the response worker
//	// log-detector events (never blocks): mon.HandleEvent(ctx, ev, ev.Time)
//	// CDR lines when set.CDR is followed: mon.HandleCDRLine(ctx, line, cfg.Location, time.Now())
//	// CEL lines when set.CEL is followed:  mon.HandleCELLine(ctx, line)
func (s *Settings) AMIConfig(log *slog.Logger) (ami.Config, error) {
	b, err := os.ReadFile(s.AMISecretFile)
	if err != nil {
		return ami.Config{}, fmt.Errorf("fraud: ami.secret_file: %w (write the secret of the manager.conf user %q into it, mode 0600)", err, s.AMIUser)
	}
	return ami.Config{
		Addr: s.AMIAddr, Username: s.AMIUser, Secret: strings.TrimSpace(string(b)), UseMD5: s.AMIMD5,
		// call events for the tracker, security events for the addresses,
		// system for FullyBooted/Shutdown (forget live calls after a gap);
		// the responses (Hangup, DBPut) need write = call,system in manager.conf.
		Events: "system,call,security", Logger: log,
	}, nil
}
