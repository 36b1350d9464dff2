package audit

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
)

// checks is the explicit list of checks, run in this order.
var checks = []func(*env) []Finding{
	checkConfigDiags,
	checkSIPGeneral,
	checkSIPInsecure,
	checkNoSecret,
	checkPJSIPEndpoints,
	checkWeakSecrets,
	checkACLOpen,
	checkACLMissing,
	checkAMI,
	checkHTTP,
	checkIntlOpen,
	checkWildcard,
	checkNoLimit,
	checkSecurityLog,
}

// env holds what the checks share.
type env struct {
	cfg     *Config
	opts    Options
	trusted map[string]bool
	dp      *Dialplan
}

func newEnv(cfg *Config, opts Options) *env {
	if cfg == nil {
		cfg = &Config{}
	}
	if cfg.Files == nil {
		cfg.Files = map[string]*File{}
	}
	e := &env{cfg: cfg, opts: opts, trusted: map[string]bool{}}
	for _, t := range opts.TrustedEndpoints {
		e.trusted[strings.ToLower(strings.TrimSpace(t))] = true
	}
	e.dp = parseDialplan(cfg.Files["extensions.conf"])
	return e
}

func (e *env) file(name string) *File { return e.cfg.Files[name] }

// moduleLoaded reads modules.conf like the module loader: noload wins, an
// explicit load/require/preload loads, otherwise autoload decides. Without
// modules.conf everything is assumed loaded.
func (e *env) moduleLoaded(module string) bool {
	f := e.file("modules.conf")
	if f == nil {
		return true
	}
	s := f.Section("modules")
	if s == nil {
		return true
	}
	explicit := false
	for _, v := range s.Vars {
		if !strings.EqualFold(strings.TrimSuffix(v.Value, ".so"), module) {
			continue
		}
		switch strings.ToLower(v.Name) {
		case "noload":
			return false
		case "load", "require", "preload", "preload-require":
			explicit = true
		}
	}
	return explicit || isTrue(s.Value("autoload", "no"))
}

func (e *env) sipEnabled() bool {
	return e.file("sip.conf") != nil && e.moduleLoaded("chan_sip")
}

func (e *env) pjsipEnabled() bool {
	return e.file("pjsip.conf") != nil && e.moduleLoaded("res_pjsip") && e.moduleLoaded("chan_pjsip")
}

func (e *env) iaxEnabled() bool {
	return e.file("iax.conf") != nil && e.moduleLoaded("chan_iax2")
}

// isTrue is ast_true.
func isTrue(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "y", "t", "1", "on":
		return true
	}
	return false
}

// isFalse is ast_false.
func isFalse(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "no", "false", "n", "f", "0", "off":
		return true
	}
	return false
}

func finding(id string, sev Severity, pos Pos, msg, fix string) Finding {
	return Finding{ID: id, Severity: sev, File: pos.File, Line: pos.Line, Message: msg, Fix: fix}
}

func secPos(s *Section, name string) Pos {
	if v, ok := s.Get(name); ok {
		return v.Pos
	}
	return s.Pos
}

// ---------------------------------------------------------------- config.*

func checkConfigDiags(e *env) []Finding {
	var out []Finding
	for _, name := range configFiles {
		f := e.file(name)
		if f == nil {
			continue
		}
		for _, d := range f.Diags {
			switch {
			case d.Kind == "exec":
				out = append(out, finding("config.exec", Medium, d.Pos, d.Msg,
					"Replace #exec with a static file written by your provisioning, and keep execincludes=no in asterisk.conf."))
			case d.Kind == "include":
				out = append(out, finding("config.include", Medium, d.Pos, d.Msg,
					"Fix the path (relative to the Asterisk configuration directory) or remove the include cycle; use #tryinclude only for files that may legitimately be absent."))
			case d.Fatal:
				out = append(out, finding("config.syntax", Medium, d.Pos, d.Msg,
					"Fix the line: while the file is refused Asterisk runs without it (or keeps the old settings until the next restart)."))
			default:
				out = append(out, finding("config.syntax", Low, d.Pos, d.Msg,
					"Fix or remove the line so that the file says what Asterisk does."))
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- chan_sip

func (e *env) sipGeneral() *Section {
	if s := e.file("sip.conf").Section("general"); s != nil {
		return s
	}
	return &Section{Name: "general", Pos: Pos{File: "sip.conf"}}
}

// sipPeers are the [peer]/[user]/[friend] sections of sip.conf.
func (e *env) sipPeers() []*Section {
	var out []*Section
	for _, s := range e.file("sip.conf").Concrete() {
		switch strings.ToLower(s.Value("type", "")) {
		case "peer", "friend", "user":
			out = append(out, s)
		}
	}
	return out
}

func (e *env) sipGuestAllowed() (bool, Pos) {
	g := e.sipGeneral()
	if v, ok := g.Get("allowguest"); ok {
		return !isFalse(v.Value), v.Pos
	}
	return true, g.Pos // chan_sip: DEFAULT_ALLOWGUEST TRUE
}

func checkSIPGeneral(e *env) []Finding {
	if !e.sipEnabled() {
		return nil
	}
	var out []Finding
	g := e.sipGeneral()
	if on, pos := e.sipGuestAllowed(); on {
		msg := "chan_sip allowguest=yes: anyone on the network can place calls without a password into context " +
			fmt.Sprintf("%q", g.Value("context", "default")) + "; scanners try this within minutes"
		if _, set := g.Get("allowguest"); !set {
			msg = "chan_sip allowguest is not set and defaults to yes: anyone can place calls without a password into context " +
				fmt.Sprintf("%q", g.Value("context", "default"))
		}
		out = append(out, finding("sip.allowguest", High, pos, msg,
			"Set allowguest=no in [general] of sip.conf (and give [general] context= a context that only plays a message or hangs up)."))
	}
	if v, ok := g.Get("alwaysauthreject"); ok && isFalse(v.Value) {
		out = append(out, finding("sip.alwaysauthreject", Medium, v.Pos,
			"chan_sip alwaysauthreject=no: unknown users get a different answer than wrong passwords, so scanners (svwar) can list your extensions",
			"Set alwaysauthreject=yes in [general] of sip.conf."))
	}
	return out
}

func checkSIPInsecure(e *env) []Finding {
	if !e.sipEnabled() {
		return nil
	}
	var out []Finding
	for _, s := range e.file("sip.conf").Concrete() {
		v, ok := s.Get("insecure")
		if !ok {
			continue
		}
		val := strings.ToLower(v.Value)
		if !strings.Contains(val, "invite") && val != "very" {
			continue
		}
		host := strings.ToLower(s.Value("host", "dynamic"))
		sev, where := Medium, "from host "+host
		if host == "dynamic" || strings.EqualFold(s.Name, "general") {
			sev, where = High, "from wherever it registers"
		}
		out = append(out, finding("sip.insecure", sev, v.Pos,
			fmt.Sprintf("[%s] insecure=%s: INVITEs %s are accepted without a password challenge", s.Name, v.Value, where),
			"Remove insecure=invite; for a carrier, match it by a fixed host= plus deny=0.0.0.0/0.0.0.0 and permit=<carrier address>."))
	}
	return out
}

func sipNoSecret(s *Section) bool {
	return s.Value("secret", "") == "" && s.Value("md5secret", "") == "" && s.Value("remotesecret", "") == ""
}

func iaxNoSecret(s *Section) bool {
	return s.Value("secret", "") == "" && s.Value("dbsecret", "") == "" && s.Value("inkeys", "") == ""
}

func checkNoSecret(e *env) []Finding {
	var out []Finding
	if e.sipEnabled() {
		g := e.sipGeneral()
		if v, ok := g.Get("autocreatepeer"); ok && !isFalse(v.Value) {
			out = append(out, finding("sip.autocreatepeer", Critical, v.Pos,
				"chan_sip autocreatepeer="+v.Value+": any device that registers becomes a peer, without a password, in context "+fmt.Sprintf("%q", g.Value("context", "default")),
				"Set autocreatepeer=no in [general] of sip.conf."))
		}
		for _, s := range e.sipPeers() {
			if !sipNoSecret(s) || !strings.EqualFold(s.Value("host", "dynamic"), "dynamic") {
				continue
			}
			out = append(out, finding("sip.no-secret", High, s.Pos,
				fmt.Sprintf("chan_sip %s %s has host=dynamic and no secret: anyone can register as %s and call into context %q", s.Value("type", ""), s.Name, s.Name, s.Value("context", g.Value("context", "default"))),
				"Add secret=<16+ random characters> to the peer, or give it a fixed host= with deny/permit for a trunk."))
		}
	}
	if e.iaxEnabled() {
		for _, s := range e.file("iax.conf").Concrete() {
			switch strings.ToLower(s.Value("type", "")) {
			case "user", "friend":
			default:
				continue
			}
			if !iaxNoSecret(s) {
				continue
			}
			out = append(out, finding("iax.no-secret", High, s.Pos,
				fmt.Sprintf("IAX2 %s %s has no secret: calls that name it are accepted without a password into context %q", s.Value("type", ""), s.Name, s.Value("context", "default")),
				"Add secret=<16+ random characters> (auth=md5) or inkeys= (auth=rsa), or remove the section (the stock [guest] user included)."))
		}
	}
	return out
}

// ---------------------------------------------------------------- pjsip

type pjsipModel struct {
	endpoints  []*Section
	auths      map[string]*Section
	identified map[string]bool
	globalACL  bool
}

func (e *env) pjsip() *pjsipModel {
	m := &pjsipModel{auths: map[string]*Section{}, identified: map[string]bool{}}
	f := e.file("pjsip.conf")
	if f == nil {
		return m
	}
	for _, s := range f.Concrete() {
		switch strings.ToLower(s.Value("type", "")) {
		case "endpoint":
			m.endpoints = append(m.endpoints, s)
		case "auth":
			if _, dup := m.auths[s.Name]; !dup {
				m.auths[s.Name] = s
			}
		case "identify":
			if s.Value("match", "") != "" || s.Value("match_header", "") != "" || s.Value("match_request_uri", "") != "" {
				m.identified[s.Value("endpoint", "")] = true
			}
		case "acl":
			m.globalACL = true
		}
	}
	return m
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// pjsipUnauth says why an endpoint accepts requests without a password
// ("" when it does not).
func (m *pjsipModel) unauth(ep *Section) string {
	if strings.EqualFold(ep.Name, "anonymous") {
		return "it is the anonymous endpoint: every request that matches no other endpoint lands on it, without a password"
	}
	if len(splitList(ep.Value("auth", ""))) == 0 && !m.identified[ep.Name] {
		return "it has no auth= and no identify section: any request with this name as From user is accepted without a password"
	}
	return ""
}

func checkPJSIPEndpoints(e *env) []Finding {
	if !e.pjsipEnabled() {
		return nil
	}
	m := e.pjsip()
	var out []Finding
	for _, ep := range m.endpoints {
		if why := m.unauth(ep); why != "" {
			out = append(out, finding("pjsip.anonymous-endpoint", High, ep.Pos,
				fmt.Sprintf("pjsip endpoint %s (context %q): %s", ep.Name, ep.Value("context", "default"), why),
				"Remove the endpoint, or give it auth= (a type=auth section with a strong password); a carrier needs a type=identify section with match=<its addresses> and a context without international routes."))
		}
		for _, a := range splitList(ep.Value("auth", "")) {
			as, ok := m.auths[a]
			if !ok {
				out = append(out, finding("pjsip.auth-missing", High, secPos(ep, "auth"),
					fmt.Sprintf("pjsip endpoint %s: auth=%s names no type=auth section, so the endpoint has no working credentials", ep.Name, a),
					fmt.Sprintf("Add a [%s] section with type=auth, auth_type=userpass, username and a strong password, or fix the name.", a)))
				continue
			}
			at := strings.ToLower(as.Value("auth_type", "userpass"))
			if (at == "userpass" || at == "digest") && as.Value("password", "") == "" && as.Value("md5_cred", "") == "" {
				out = append(out, finding("pjsip.auth-missing", High, as.Pos,
					fmt.Sprintf("pjsip auth %s (used by endpoint %s) has no password", a, ep.Name),
					"Set password= to a long random secret (16+ characters)."))
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- secrets

// commonPasswords is a small list of passwords that guessing tools try
// first. Compared case-insensitively.
var commonPasswords = []string{
	"0000", "1111", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890",
	"000000", "111111", "123123", "654321", "1234abcd", "abcd1234", "abc123", "a1b2c3",
	"password", "password1", "password123", "passw0rd", "p@ssw0rd", "pass", "pass123", "pass1234",
	"secret", "secret123", "mysecret", "admin", "admin123", "administrator", "root", "toor",
	"asterisk", "asterisk123", "freepbx", "amp111", "amp109", "changeme", "default", "guest",
	"test", "test123", "voip", "voip123", "sip", "sip123", "pbx", "pbx123", "phone", "welcome",
	"welcome1", "letmein", "qwerty", "qwerty123", "qwertyuiop", "iloveyou", "monkey", "dragon",
	"master", "trustno1", "football", "baseball", "sunshine", "princess", "superman", "abc12345",
	"qazwsx", "1q2w3e4r", "1q2w3e", "zaq12wsx", "manager", "operator", "support", "user",
}

// weakReasons explains why secret is weak ("" when it is not). names are
// the user name and extension it must not equal.
func weakReasons(secret string, names ...string) []string {
	var r []string
	lower := strings.ToLower(secret)
	if slices.Contains(commonPasswords, lower) {
		r = append(r, "it is in the list of passwords guessing tools try first")
	}
	for _, n := range names {
		if n != "" && strings.EqualFold(secret, n) {
			r = append(r, "it equals the user name/extension")
			break
		}
	}
	if secret != "" && strings.Trim(secret, "0123456789") == "" {
		r = append(r, "it is only digits")
	}
	if n := len([]rune(secret)); n < 12 {
		r = append(r, fmt.Sprintf("it is %d characters long (use 12 or more)", n))
	}
	return r
}

// weakMD5 checks an md5secret/md5_cred (md5 of user:realm:password) against
// the common passwords and the names.
func weakMD5(hash, user, realm string, names ...string) bool {
	hash = strings.ToLower(strings.TrimSpace(hash))
	cands := append(slices.Clone(commonPasswords), names...)
	for _, c := range cands {
		sum := md5.Sum([]byte(user + ":" + realm + ":" + c))
		if hex.EncodeToString(sum[:]) == hash {
			return true
		}
	}
	return false
}

func severityForWeak(reasons []string) Severity {
	for _, r := range reasons {
		if strings.HasPrefix(r, "it is in the list") || strings.HasPrefix(r, "it equals") {
			return Critical
		}
	}
	return High
}

const weakFix = "Replace it with a random secret of 16+ characters (letters, digits, symbols), for example from `openssl rand -base64 18`, and update the device."

func checkWeakSecrets(e *env) []Finding {
	var out []Finding
	weak := func(where, what, secret string, pos Pos, names ...string) {
		if r := weakReasons(secret, names...); len(r) > 0 {
			out = append(out, finding("secret.weak", severityForWeak(r), pos,
				fmt.Sprintf("%s: %s is weak: %s", where, what, strings.Join(r, "; ")), weakFix))
		}
	}
	if e.sipEnabled() {
		realm := e.sipGeneral().Value("realm", "asterisk")
		for _, s := range e.sipPeers() {
			user := s.Value("defaultuser", s.Value("username", s.Name))
			if v, ok := s.Get("secret"); ok && v.Value != "" {
				weak("chan_sip peer "+s.Name, "secret", v.Value, v.Pos, s.Name, user)
			}
			if v, ok := s.Get("md5secret"); ok && v.Value != "" && weakMD5(v.Value, user, realm, s.Name, user) {
				out = append(out, finding("secret.weak", Critical, v.Pos,
					fmt.Sprintf("chan_sip peer %s: md5secret is the hash of a common password or of the user name", s.Name), weakFix))
			}
		}
	}
	if e.pjsipEnabled() {
		m := e.pjsip()
		users := map[string][]string{}
		for _, ep := range m.endpoints {
			for _, a := range splitList(ep.Value("auth", "")) {
				users[a] = append(users[a], ep.Name)
			}
		}
		for _, s := range e.file("pjsip.conf").Concrete() {
			if !strings.EqualFold(s.Value("type", ""), "auth") {
				continue
			}
			user := s.Value("username", s.Name)
			names := append([]string{s.Name, user}, users[s.Name]...)
			if v, ok := s.Get("password"); ok && v.Value != "" {
				weak("pjsip auth "+s.Name, "password", v.Value, v.Pos, names...)
			}
			if v, ok := s.Get("md5_cred"); ok && v.Value != "" && weakMD5(v.Value, user, s.Value("realm", "asterisk"), names...) {
				out = append(out, finding("secret.weak", Critical, v.Pos,
					fmt.Sprintf("pjsip auth %s: md5_cred is the hash of a common password or of the user name", s.Name), weakFix))
			}
		}
	}
	if e.iaxEnabled() {
		for _, s := range e.file("iax.conf").Concrete() {
			switch strings.ToLower(s.Value("type", "")) {
			case "user", "friend", "peer":
			default:
				continue
			}
			if v, ok := s.Get("secret"); ok && v.Value != "" {
				weak("IAX2 "+s.Value("type", "")+" "+s.Name, "secret", v.Value, v.Pos, s.Name, s.Value("username", ""))
			}
		}
	}
	if f := e.file("manager.conf"); f != nil && e.amiEnabled() {
		for _, s := range f.Concrete() {
			if strings.EqualFold(s.Name, "general") {
				continue
			}
			if v, ok := s.Get("secret"); ok {
				weak("AMI user "+s.Name, "secret", v.Value, v.Pos, s.Name)
			}
		}
	}
	if f := e.file("ari.conf"); f != nil {
		for _, s := range f.Concrete() {
			if !strings.EqualFold(s.Value("type", ""), "user") || strings.EqualFold(s.Value("password_format", "plain"), "crypt") {
				continue
			}
			if v, ok := s.Get("password"); ok {
				weak("ARI user "+s.Name, "password", v.Value, v.Pos, s.Name)
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- ACLs

// aclRule is one parsed permit/deny value.
type aclRule struct {
	permit bool
	prefix netip.Prefix
	v      *Var
}

// acl is what a section says about who may reach it.
type acl struct {
	rules   []aclRule
	named   []*Var // acl=name (acl.conf)
	hasDeny bool
}

var permitKeys = map[string]bool{"permit": true, "contactpermit": true, "contact_permit": true}
var denyKeys = map[string]bool{"deny": true, "contactdeny": true, "contact_deny": true}
var namedKeys = map[string]bool{"acl": true, "contactacl": true, "contact_acl": true}

func aclOf(s *Section) acl {
	var a acl
	for _, v := range s.Vars {
		k := strings.ToLower(v.Name)
		switch {
		case namedKeys[k]:
			a.named = append(a.named, v)
		case permitKeys[k], denyKeys[k]:
			if denyKeys[k] {
				a.hasDeny = true
			}
			for _, item := range splitList(v.Value) {
				if p, ok := parseACLPrefix(item); ok {
					a.rules = append(a.rules, aclRule{permit: permitKeys[k], prefix: p, v: v})
				}
			}
		}
	}
	return a
}

// restricts reports whether the ACL rejects anybody: Asterisk ACLs start
// from "allow", so permit lines alone restrict nothing.
func (a acl) restricts() bool { return a.hasDeny || len(a.named) > 0 }

// remote reports whether the ACL lets in any non-loopback address.
func (a acl) remote() bool {
	if !a.restricts() {
		return true
	}
	if len(a.named) > 0 {
		return true // acl.conf rules are not followed: assume remote
	}
	for _, r := range a.rules {
		if r.permit && !r.prefix.Addr().IsLoopback() {
			return true
		}
	}
	return false
}

// parseACLPrefix reads "addr", "addr/bits" or "addr/dotted-mask", with an
// optional leading '!' (negation, treated like the plain rule here).
func parseACLPrefix(s string) (netip.Prefix, bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "!")
	addrS, maskS, hasMask := strings.Cut(s, "/")
	addr, err := netip.ParseAddr(strings.Trim(addrS, "[]"))
	if err != nil {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap()
	bitsN := addr.BitLen()
	if hasMask {
		if m, err := netip.ParseAddr(maskS); err == nil && m.Is4() {
			b := m.As4()
			v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			bitsN = bits.OnesCount32(v)
		} else {
			n := 0
			if _, err := fmt.Sscanf(maskS, "%d", &n); err != nil || n < 0 || n > addr.BitLen() {
				return netip.Prefix{}, false
			}
			bitsN = n
		}
	}
	p, err := addr.Prefix(bitsN)
	return p, err == nil
}

func checkACLOpen(e *env) []Finding {
	var out []Finding
	for _, name := range []string{"sip.conf", "pjsip.conf", "iax.conf", "manager.conf", "acl.conf"} {
		f := e.file(name)
		if f == nil {
			continue
		}
		for _, s := range f.Concrete() {
			for _, r := range aclOf(s).rules {
				if r.permit && r.prefix.Bits() == 0 {
					out = append(out, finding("acl.open", High, r.v.Pos,
						fmt.Sprintf("[%s] %s=%s permits every address: the ACL protects nothing", s.Name, r.v.Name, r.v.Value),
						"Permit only the networks the devices use (deny=0.0.0.0/0.0.0.0 then permit=<office network>/<mask>; ::/0 for IPv6 likewise)."))
				}
			}
		}
	}
	return out
}

func checkACLMissing(e *env) []Finding {
	var out []Finding
	type cand struct {
		kind   string
		s      *Section
		acl    bool // has its own permit/deny/acl
		exempt bool // identified by IP instead
	}
	report := func(cands []cand, fix string) {
		some := false
		for _, c := range cands {
			some = some || c.acl
		}
		if !some {
			return // nobody has an ACL: a site policy, not an oversight
		}
		for _, c := range cands {
			if !c.acl && !c.exempt {
				out = append(out, finding("acl.missing", Low, c.s.Pos,
					fmt.Sprintf("%s %s has no permit/deny ACL while other %ss have one: it can register and call from any address", c.kind, c.s.Name, c.kind), fix))
			}
		}
	}
	if e.pjsipEnabled() {
		m := e.pjsip()
		if !m.globalACL {
			var cands []cand
			for _, ep := range m.endpoints {
				cands = append(cands, cand{"pjsip endpoint", ep, aclOf(ep).restricts(), m.identified[ep.Name]})
			}
			report(cands, "Add deny=0.0.0.0/0.0.0.0 and permit=<network>/<mask> to the endpoint (or to its template), as the others have.")
		}
	}
	if e.sipEnabled() {
		var cands []cand
		for _, s := range e.sipPeers() {
			cands = append(cands, cand{"chan_sip peer", s, aclOf(s).restricts(), false})
		}
		report(cands, "Add deny=0.0.0.0/0.0.0.0 and permit=<network>/<mask> to the peer, as the others have.")
	}
	if e.iaxEnabled() {
		var cands []cand
		for _, s := range e.file("iax.conf").Concrete() {
			switch strings.ToLower(s.Value("type", "")) {
			case "user", "friend", "peer":
				cands = append(cands, cand{"IAX2 peer", s, aclOf(s).restricts(), false})
			}
		}
		report(cands, "Add deny=0.0.0.0/0.0.0.0 and permit=<network>/<mask> to the peer, as the others have.")
	}
	return out
}

// ---------------------------------------------------------------- AMI, HTTP

func (e *env) amiEnabled() bool {
	f := e.file("manager.conf")
	if f == nil {
		return false
	}
	g := f.Section("general")
	return g != nil && isTrue(g.Value("enabled", "no"))
}

// publicAddr reports whether a bind address is reachable from outside the
// host (anything but loopback). An unparsable host name counts as public.
func publicAddr(s string) bool {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "localhost") {
		return false
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return !ap.Addr().Unmap().IsLoopback()
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return !a.Unmap().IsLoopback()
	}
	return true
}

var dangerousWrite = []string{"all", "system", "command", "originate"}

func checkAMI(e *env) []Finding {
	if !e.amiEnabled() {
		return nil
	}
	f := e.file("manager.conf")
	g := f.Section("general")
	bind := g.Value("bindaddr", "0.0.0.0")
	public := publicAddr(bind)
	if tls := g.Value("tlsenable", "no"); isTrue(tls) && publicAddr(g.Value("tlsbindaddr", "0.0.0.0")) {
		public = true
	}
	if !public {
		return nil
	}
	var out []Finding
	for _, s := range f.Concrete() {
		if strings.EqualFold(s.Name, "general") {
			continue
		}
		a := aclOf(s)
		weak := weakReasons(s.Value("secret", ""), s.Name)
		var why []string
		if !a.restricts() {
			if len(a.rules) > 0 {
				why = append(why, "its permit= lines restrict nothing without a deny= first")
			} else {
				why = append(why, "it has no permit/deny ACL")
			}
		}
		if len(weak) > 0 {
			why = append(why, "its secret is weak")
		}
		if len(why) > 0 {
			sev := High
			if len(why) > 1 {
				sev = Critical
			}
			out = append(out, finding("ami.exposed", sev, s.Pos,
				fmt.Sprintf("AMI user %s can log in from any address that reaches manager.conf bindaddr %s: %s", s.Name, bind, strings.Join(why, " and ")),
				fmt.Sprintf("In [%s] add deny=0.0.0.0/0.0.0.0 and permit=127.0.0.1/255.255.255.255 (plus the management network only), give it a 16+ character secret, or set bindaddr=127.0.0.1 in [general].", s.Name)))
		}
		w, ok := s.Get("write")
		if !ok || !a.remote() {
			continue
		}
		var bad []string
		for _, p := range splitList(strings.ToLower(w.Value)) {
			if slices.Contains(dangerousWrite, p) {
				bad = append(bad, p)
			}
		}
		if len(bad) == 0 {
			continue
		}
		sev, from := Medium, "from the networks its ACL permits"
		if !a.restricts() {
			sev, from = High, "from any address"
		}
		out = append(out, finding("ami.too-powerful", sev, w.Pos,
			fmt.Sprintf("AMI user %s has write=%s and can log in %s: a stolen secret runs shell commands (System, Originate to Application=System) as the Asterisk user", s.Name, strings.Join(bad, ","), from),
			"Give remote AMI users only the classes they need (e.g. write=call,reporting); keep write=all/system/command/originate for a user restricted to 127.0.0.1."))
	}
	return out
}

func checkHTTP(e *env) []Finding {
	f := e.file("http.conf")
	if f == nil {
		return nil
	}
	g := f.Section("general")
	if g == nil || !isTrue(g.Value("enabled", "no")) {
		return nil
	}
	var exposed []string
	var pos Pos
	if v, ok := g.Get("bindaddr"); ok && publicAddr(v.Value) {
		exposed = append(exposed, "bindaddr="+v.Value)
		pos = v.Pos
	}
	if isTrue(g.Value("tlsenable", "no")) {
		if v, ok := g.Get("tlsbindaddr"); ok && publicAddr(v.Value) {
			exposed = append(exposed, "tlsbindaddr="+v.Value)
			if pos.Line == 0 {
				pos = v.Pos
			}
		}
	}
	if len(exposed) == 0 {
		return nil
	}
	var what []string
	if ari := e.file("ari.conf"); ari != nil {
		ag := ari.Section("general")
		if ag == nil || isTrue(ag.Value("enabled", "yes")) {
			for _, s := range ari.Concrete() {
				if strings.EqualFold(s.Value("type", ""), "user") {
					what = append(what, "ARI user "+s.Name)
				}
			}
		}
	}
	if m := e.file("manager.conf"); m != nil && e.amiEnabled() {
		if v, ok := m.Section("general").Get("webenabled"); ok && isTrue(v.Value) {
			what = append(what, "AMI over HTTP (manager.conf webenabled=yes)")
		}
	}
	msg := fmt.Sprintf("Asterisk's HTTP server listens on a public address (%s)", strings.Join(exposed, ", "))
	sev := Medium
	if len(what) > 0 {
		msg += ": reachable there: " + strings.Join(what, ", ")
		sev = High
	}
	return []Finding{finding("http.exposed", sev, pos, msg,
		"Set bindaddr=127.0.0.1 in http.conf and put a reverse proxy with TLS and its own authentication in front if remote access is needed; or firewall port "+g.Value("bindport", "8088")+".")}
}

// ---------------------------------------------------------------- dialplan

// entry is a way into the dialplan: an endpoint, a peer, or guest calls.
type entry struct {
	label   string // "PJSIP/1001", "SIP guests"
	name    string
	context string
	unauth  bool
}

func (e *env) entries() []entry {
	var out []entry
	if e.pjsipEnabled() {
		m := e.pjsip()
		for _, ep := range m.endpoints {
			out = append(out, entry{"PJSIP/" + ep.Name, ep.Name, ep.Value("context", "default"), m.unauth(ep) != ""})
		}
	}
	if e.sipEnabled() {
		g := e.sipGeneral()
		gctx := g.Value("context", "default")
		if on, _ := e.sipGuestAllowed(); on {
			out = append(out, entry{"chan_sip guests (allowguest)", "", gctx, true})
		}
		for _, s := range e.sipPeers() {
			noSecret := sipNoSecret(s)
			insecure := strings.Contains(strings.ToLower(s.Value("insecure", "")), "invite")
			out = append(out, entry{"SIP/" + s.Name, s.Name, s.Value("context", gctx), noSecret || insecure})
		}
	}
	if e.iaxEnabled() {
		for _, s := range e.file("iax.conf").Concrete() {
			switch strings.ToLower(s.Value("type", "")) {
			case "user", "friend":
			default:
				continue
			}
			out = append(out, entry{"IAX2/" + s.Name, s.Name, s.Value("context", "default"), iaxNoSecret(s)})
		}
	}
	return out
}

func (e *env) isTrusted(en entry) bool {
	if en.unauth || en.name == "" {
		return false
	}
	return e.trusted[strings.ToLower(en.name)] || e.trusted[strings.ToLower(en.label)]
}

func checkIntlOpen(e *env) []Finding {
	if e.file("extensions.conf") == nil {
		return nil
	}
	byCtx := map[string][]entry{}
	var order []string
	all := e.entries()
	for _, en := range all {
		if e.isTrusted(en) {
			continue
		}
		if _, ok := byCtx[en.context]; !ok {
			order = append(order, en.context)
		}
		byCtx[en.context] = append(byCtx[en.context], en)
	}
	var out []Finding
	for _, ctx := range order {
		var routes []string
		var first Pos
		firstCatchAll := false
		for _, c := range e.dp.Reachable(ctx) {
			for _, x := range c.Extens {
				if matchesIntl(x.Pattern) && x.routesOut() {
					where := x.Pattern
					if c.Name != ctx {
						where += " (via include " + c.Name + ")"
					}
					routes = append(routes, where)
					// point at the broadest route: a catch-all if there is one
					if first.Line == 0 || isCatchAll(x.Pattern) && !firstCatchAll {
						first, firstCatchAll = x.Pos, isCatchAll(x.Pattern)
					}
				}
			}
		}
		if len(routes) == 0 {
			continue
		}
		ens := byCtx[ctx]
		var who []string
		sev := High
		for _, en := range ens {
			l := en.label
			if en.unauth {
				l += " (no password)"
				sev = Critical
			}
			who = append(who, l)
		}
		users := fmt.Sprintf("%d endpoint(s) not marked trusted", len(ens))
		if len(ens) == len(all) && len(all) > 1 {
			users = fmt.Sprintf("every endpoint (all %d, none marked trusted)", len(all))
		}
		out = append(out, finding("dialplan.intl-open", sev, first,
			fmt.Sprintf("context %s can dial international numbers (%s) and is used by %s: %s",
				ctx, strings.Join(routes, ", "), users, strings.Join(who, ", ")),
			"Keep international patterns in a separate context (e.g. [intl]) included only by the contexts of trusted endpoints (pbxguard audit --trusted-endpoint NAME), and limit those calls (GROUP_COUNT, a PIN, per-destination rules)."))
	}
	return out
}

func checkWildcard(e *env) []Finding {
	var out []Finding
	for _, c := range e.dp.Contexts {
		for _, x := range c.Extens {
			if !isCatchAll(x.Pattern) || !x.routesOut() { // routesOut: dialable too
				continue
			}
			sev := Low
			msg := fmt.Sprintf("context %s: %s matches every number of any length: any digits the caller sends are passed on", c.Name, x.Pattern)
			if p := strings.ToUpper(x.Pattern); p == "_." || p == "_!" {
				sev = Medium
				msg = fmt.Sprintf("context %s: %s matches everything, including the special extensions h, i, t and T, so hang-ups and timeouts run this route too", c.Name, x.Pattern)
			}
			out = append(out, finding("dialplan.wildcard", sev, x.Pos, msg,
				"Write patterns for the numbers you really dial (_NXXNXXXXXX, _1NXXNXXXXXX, _00ZX. only where international is allowed)."))
		}
	}
	return out
}

// trunkTargets returns the trunk names a Dial() data string calls:
// PJSIP/${EXTEN}@carrier, SIP/carrier/${EXTEN}, SIP/${EXTEN}@carrier,
// IAX2/user:secret@carrier/${EXTEN}@context, DAHDI/g1/${EXTEN} -> carrier
// (or DAHDI/g1). A bare PJSIP/100 or SIP/100 is an internal device.
func trunkTargets(data string) []string {
	first, _, _ := strings.Cut(data, ",")
	var out []string
	for _, ch := range strings.Split(first, "&") {
		tech, res, ok := strings.Cut(strings.TrimSpace(ch), "/")
		if !ok {
			continue
		}
		switch strings.ToUpper(tech) {
		case "LOCAL":
		case "DAHDI", "ZAP":
			group, _, _ := strings.Cut(res, "/")
			out = append(out, tech+"/"+group)
		case "IAX2":
			peer, _, hasExten := strings.Cut(res, "/")
			if i := strings.LastIndexByte(peer, '@'); i >= 0 {
				peer = peer[i+1:]
			}
			if hasExten {
				out = append(out, peer)
			}
		default: // PJSIP, SIP and others
			if peer, _, ok := strings.Cut(res, "/"); ok {
				if i := strings.LastIndexByte(peer, '@'); i >= 0 {
					peer = peer[i+1:]
				}
				out = append(out, peer)
			} else if _, peer, ok := strings.Cut(res, "@"); ok {
				out = append(out, peer)
			}
		}
	}
	return out
}

func limited(text string) bool {
	t := strings.ToUpper(text)
	return strings.Contains(t, "GROUP_COUNT") || strings.Contains(t, "GROUP(") || strings.Contains(t, "GROUP_MATCH_COUNT")
}

func (e *env) extenLimited(c *Context, x *Exten) bool {
	for _, p := range x.Priorities {
		if limited(p.App + "(" + p.Data) {
			return true
		}
		switch strings.ToLower(p.App) {
		case "gosub", "macro", "gosubif":
			target, _, _ := strings.Cut(p.Data, ",")
			target = strings.TrimSpace(target)
			if i := strings.LastIndexByte(target, '?'); i >= 0 {
				target = target[i+1:]
			}
			if strings.EqualFold(p.App, "macro") {
				target = "macro-" + target
			}
			if sub := e.dp.Context(target); sub != nil && sub != c {
				for _, sx := range sub.Extens {
					for _, sp := range sx.Priorities {
						if limited(sp.App + "(" + sp.Data) {
							return true
						}
					}
				}
			}
		}
	}
	return false
}

func (e *env) trunkLimited(name string) bool {
	if f := e.file("sip.conf"); f != nil {
		if s := f.Section(name); s != nil && (s.Value("call-limit", "") != "" || s.Value("busylevel", "") != "") {
			return true
		}
	}
	return false
}

func checkNoLimit(e *env) []Finding {
	var out []Finding
	for _, c := range e.dp.Contexts {
		for _, x := range c.Extens {
			for _, p := range x.Priorities {
				if !strings.EqualFold(p.App, "dial") {
					continue
				}
				trunks := trunkTargets(p.Data)
				if len(trunks) == 0 || e.extenLimited(c, x) {
					continue
				}
				unl := slices.DeleteFunc(slices.Clone(trunks), e.trunkLimited)
				if len(unl) == 0 {
					continue
				}
				out = append(out, finding("dialplan.no-limit", Medium, p.Pos,
					fmt.Sprintf("context %s, %s: Dial to trunk %s has no limit on simultaneous calls: a stolen account can run dozens of paid calls at once", c.Name, x.Pattern, strings.Join(unl, ",")),
					"Before the Dial add: same => n,Set(GROUP(outbound)=${CHANNEL(endpoint)}) and same => n,GotoIf($[${GROUP_COUNT(${CHANNEL(endpoint)}@outbound)} > 2]?limit,1) (or call-limit= on a chan_sip trunk)."))
				break
			}
		}
	}
	return out
}

// ---------------------------------------------------------------- logging

func checkSecurityLog(e *env) []Finding {
	f := e.file("logger.conf")
	const fix = "Add to [logfiles] of logger.conf: security => security (then `logger reload`); pbxguard reads that file for failed and successful logins."
	if f == nil {
		return []Finding{finding("logging.security-off", Medium, Pos{File: "logger.conf"},
			"logger.conf is missing: Asterisk logs no security events, so failed and successful authentications are invisible to pbxguard", fix)}
	}
	s := f.Section("logfiles")
	if s != nil {
		for _, v := range s.Vars {
			val := v.Value
			if i := strings.IndexByte(val, ']'); strings.HasPrefix(val, "[") && i > 0 {
				val = val[i+1:]
			}
			for _, lvl := range splitList(strings.ToLower(val)) {
				if lvl == "security" || lvl == "*" {
					return nil
				}
			}
		}
	}
	pos := Pos{File: "logger.conf"}
	if s != nil {
		pos = s.Pos
	}
	return []Finding{finding("logging.security-off", Medium, pos,
		"no logger.conf channel logs the security level: failed and successful authentications (and ACL rejections) are not written anywhere pbxguard can read", fix)}
}
