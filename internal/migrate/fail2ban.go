// Package migrate turns another tool's configuration into pbxguard's.
// fail2ban.go reads fail2ban's jail configuration (jail.conf, jail.d/*.conf,
// jail.local, jail.d/*.local, in fail2ban's own order) and writes a
// pbxguard YAML that `pbxguard config check` accepts, with a comment on
// every fail2ban setting that has no counterpart.
package migrate

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ini is fail2ban's configuration: sections of keys, later files overriding
// earlier ones key by key (Python's ConfigParser, as fail2ban uses it).
type ini struct {
	order    []string                     // section names, first appearance
	sections map[string]map[string]string // section -> key -> value
	origin   map[string]map[string]string // section -> key -> "file:line"
}

func newINI() *ini {
	return &ini{sections: map[string]map[string]string{}, origin: map[string]map[string]string{}}
}

// read parses one file into the configuration. Keys are case-insensitive
// (lower-cased); continuation lines (indented) extend the previous value;
// '#' and ';' start comment lines; an inline " ;" or " #" starts a comment.
func (c *ini) read(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return c.parse(f, path)
}

func (c *ini) parse(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	section, key := "", ""
	n := 0
	for sc.Scan() {
		n++
		raw := sc.Text()
		line := strings.TrimRight(raw, " \t\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' || trimmed[0] == ';' {
			if trimmed == "" {
				key = ""
			}
			continue
		}
		if (raw[0] == ' ' || raw[0] == '\t') && key != "" && section != "" {
			c.sections[section][key] += "\n" + stripInline(trimmed)
			continue
		}
		if trimmed[0] == '[' {
			end := strings.IndexByte(trimmed, ']')
			if end < 0 {
				return fmt.Errorf("%s:%d: section header without ']': %q", name, n, trimmed)
			}
			section, key = strings.TrimSpace(trimmed[1:end]), ""
			if _, ok := c.sections[section]; !ok {
				c.sections[section] = map[string]string{}
				c.origin[section] = map[string]string{}
				c.order = append(c.order, section)
			}
			continue
		}
		if section == "" {
			return fmt.Errorf("%s:%d: a setting before any [section]: %q", name, n, trimmed)
		}
		i := strings.IndexAny(trimmed, "=:")
		if i <= 0 {
			return fmt.Errorf("%s:%d: not a 'key = value' line: %q", name, n, trimmed)
		}
		key = strings.ToLower(strings.TrimSpace(trimmed[:i]))
		c.sections[section][key] = stripInline(strings.TrimSpace(trimmed[i+1:]))
		c.origin[section][key] = fmt.Sprintf("%s:%d", filepath.Base(name), n)
	}
	return sc.Err()
}

func stripInline(v string) string {
	for _, m := range []string{" ;", " #", "\t;", "\t#"} {
		if i := strings.Index(v, m); i >= 0 {
			v = v[:i]
		}
	}
	return strings.TrimSpace(v)
}

var interp = regexp.MustCompile(`%\(([^)]+)\)s`)

// get returns a jail's value with fail2ban's fallbacks: the section, then
// [DEFAULT]; %(name)s is expanded from the same places (depth-bounded).
func (c *ini) get(section, key string) (string, bool) {
	v, ok := c.lookup(section, key)
	if !ok {
		return "", false
	}
	for depth := 0; depth < 10 && strings.Contains(v, "%("); depth++ {
		v = interp.ReplaceAllStringFunc(v, func(m string) string {
			name := strings.ToLower(interp.FindStringSubmatch(m)[1])
			if name == "__name__" {
				return section
			}
			if r, ok := c.lookup(section, name); ok && name != key {
				return r
			}
			return m
		})
	}
	return v, true
}

func (c *ini) lookup(section, key string) (string, bool) {
	if v, ok := c.sections[section][key]; ok {
		return v, true
	}
	v, ok := c.sections["DEFAULT"][key]
	return v, ok
}

// LoadFail2ban reads dir as fail2ban does: jail.conf, jail.d/*.conf,
// jail.local, jail.d/*.local (each glob in name order).
func LoadFail2ban(dir string) (files []string, cfg *ini, err error) {
	cfg = newINI()
	var list []string
	add := func(p string) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			list = append(list, p)
		}
	}
	glob := func(pattern string) {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		sort.Strings(m)
		for _, p := range m {
			add(p)
		}
	}
	add(filepath.Join(dir, "jail.conf"))
	glob("jail.d/*.conf")
	add(filepath.Join(dir, "jail.local"))
	glob("jail.d/*.local")
	if len(list) == 0 {
		return nil, nil, fmt.Errorf("no jail.conf, jail.local or jail.d/ in %s (is fail2ban's configuration there? use --dir)", dir)
	}
	for _, p := range list {
		if err := cfg.read(p); err != nil {
			return nil, nil, err
		}
	}
	return list, cfg, nil
}

// Fail2banDuration parses fail2ban's time syntax (str2seconds): a number of
// seconds, or units y, mo, w, d, h, m, s and their long names, combined
// ("1h 30m", "1d12h"). -1 (or any negative number) is permanent.
func Fail2banDuration(s string) (d time.Duration, permanent bool, err error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return 0, false, fmt.Errorf("empty time")
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, true, nil
		}
		if f > 100*365*24*3600 {
			return 0, false, fmt.Errorf("%q: more than 100 years", s)
		}
		return time.Duration(f * float64(time.Second)), false, nil
	}
	units := []struct {
		names []string
		d     time.Duration
	}{
		{[]string{"years", "year", "yea", "ye", "y"}, 365 * 24 * time.Hour},
		{[]string{"months", "month", "mon", "mo"}, 30 * 24 * time.Hour},
		{[]string{"weeks", "week", "wee", "we", "w"}, 7 * 24 * time.Hour},
		{[]string{"days", "day", "da", "dd", "d"}, 24 * time.Hour},
		{[]string{"hours", "hour", "hou", "ho", "hh", "h"}, time.Hour},
		{[]string{"minutes", "minute", "mins", "min", "mi", "mm", "m"}, time.Minute},
		{[]string{"seconds", "second", "secs", "sec", "se", "ss", "s"}, time.Second},
	}
	rest := s
	var total float64
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t+")
		if rest == "" {
			break
		}
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, false, fmt.Errorf("%q: not a fail2ban time (try 600, 10m, 1h, 1d, 1w, -1)", s)
		}
		n, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil {
			return 0, false, fmt.Errorf("%q: %v", s, err)
		}
		rest = strings.TrimLeft(rest[i:], " \t")
		matched := false
		for _, u := range units {
			for _, name := range u.names {
				if strings.HasPrefix(rest, name) {
					total += n * float64(u.d)
					rest = rest[len(name):]
					matched = true
					break
				}
			}
			if matched {
				break
			}
		}
		if !matched {
			if rest == "" {
				total += n * float64(time.Second)
				break
			}
			return 0, false, fmt.Errorf("%q: unknown unit at %q (try s, m, h, d, w, mo, y)", s, rest)
		}
	}
	if total > float64(100*365*24*time.Hour) {
		return 0, false, fmt.Errorf("%q: more than 100 years", s)
	}
	return time.Duration(total), false, nil
}

// Jail is one fail2ban jail as pbxguard will run it.
type Jail struct {
	Name      string
	Enabled   bool
	Detector  string // "" = pbxguard has no detector for it
	MaxRetry  int
	FindTime  time.Duration
	BanTime   time.Duration
	Permanent bool
	MaxBan    time.Duration // 0 = pbxguard's default
	Increment float64       // 1 = no growth (fail2ban's default)
	Files     []string
	Journal   bool     // fail2ban backend = systemd
	Notes     []string // fail2ban settings without a counterpart, said in comments
}

// Import is the result: jails, the allowlist, and notes for the whole file.
type Import struct {
	Files     []string
	Jails     []Jail
	Allowlist []netip.Prefix
	Notes     []string
}

// detectors maps fail2ban jail names (and their filters) to pbxguard's.
var detectors = map[string]string{"asterisk": "asterisk", "sshd": "sshd", "ssh": "sshd", "sshd-ddos": "sshd"}

// keys pbxguard understands per jail; anything else set in a jail section
// is reported in a comment.
var handled = map[string]bool{
	"enabled": true, "maxretry": true, "findtime": true, "bantime": true, "logpath": true, "backend": true,
	"bantime.increment": true, "bantime.factor": true, "bantime.maxtime": true, "ignoreip": true, "filter": true,
	"ignoreself": true, "port": true, "protocol": true, "action": true, "banaction": true, "banaction_allports": true,
	"chain": true, "journalmatch": true, "usedns": true, "logencoding": true, "mode": true, "__name__": true,
}

// Convert turns a loaded fail2ban configuration into an Import.
func Convert(files []string, c *ini) (*Import, error) {
	im := &Import{Files: files}
	// ignoreip from [DEFAULT] and every jail: one allowlist.
	seen := map[netip.Prefix]bool{}
	addIgnore := func(where, v string) {
		for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == '\n' || r == '\t' }) {
			p, err := netip.ParsePrefix(tok)
			if err != nil {
				a, aerr := netip.ParseAddr(tok)
				if aerr != nil {
					im.Notes = append(im.Notes, fmt.Sprintf("ignoreip %q (%s): pbxguard never resolves names; add its addresses to allowlist by hand", tok, where))
					continue
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			p = p.Masked()
			if !seen[p] {
				seen[p] = true
				im.Allowlist = append(im.Allowlist, p)
			}
		}
	}
	if v, ok := c.sections["DEFAULT"]["ignoreip"]; ok {
		addIgnore("[DEFAULT]", v)
	}
	if v, ok := c.sections["DEFAULT"]["ignoreself"]; ok && strings.EqualFold(v, "false") {
		im.Notes = append(im.Notes, "ignoreself = false: pbxguard always allowlists the host's own addresses")
	}
	var recidive *Jail
	for _, name := range c.order {
		if name == "DEFAULT" || name == "INCLUDES" || name == "Definition" || name == "Init" {
			continue
		}
		j := Jail{Name: name, Detector: detectors[name], Increment: 1}
		if f, ok := c.get(name, "filter"); ok && j.Detector == "" {
			j.Detector = detectors[strings.Fields(f + " ")[0]]
		}
		en, _ := c.get(name, "enabled")
		j.Enabled = strings.EqualFold(en, "true") || en == "1" || strings.EqualFold(en, "yes")
		where := func(k string) string {
			if o := c.origin[name][k]; o != "" {
				return o
			}
			return c.origin["DEFAULT"][k]
		}
		var err error
		intOf := func(k string, def int) int {
			v, ok := c.get(name, k)
			if !ok {
				return def
			}
			n, e := strconv.Atoi(strings.TrimSpace(v))
			if e != nil || n < 1 || n > 255 {
				err = fmt.Errorf("%s: [%s] %s = %q: want a number from 1 to 255", where(k), name, k, v)
			}
			return n
		}
		durOf := func(k string, def time.Duration) (time.Duration, bool) {
			v, ok := c.get(name, k)
			if !ok {
				return def, false
			}
			d, perm, e := Fail2banDuration(v)
			if e != nil {
				err = fmt.Errorf("%s: [%s] %s: %v", where(k), name, k, e)
			}
			return d, perm
		}
		// fail2ban's own defaults (jail.conf): 5 in 10m, 10m ban.
		j.MaxRetry = intOf("maxretry", 5)
		j.FindTime, _ = durOf("findtime", 10*time.Minute)
		j.BanTime, j.Permanent = durOf("bantime", 10*time.Minute)
		if inc, ok := c.get(name, "bantime.increment"); ok && strings.EqualFold(inc, "true") {
			j.Increment = 2
			if f, ok := c.get(name, "bantime.factor"); ok {
				if x, e := strconv.ParseFloat(f, 64); e == nil && x != 1 {
					j.Notes = append(j.Notes, fmt.Sprintf("bantime.factor = %s: fail2ban multiplies every ban by it; pbxguard's bantime is the first ban and increment the growth, so bantime was multiplied by %s", f, f))
					j.BanTime = time.Duration(float64(j.BanTime) * x)
				}
			}
			if d, _ := durOf("bantime.maxtime", 0); d > 0 {
				j.MaxBan = d
			}
			for _, k := range []string{"bantime.formula", "bantime.multipliers", "bantime.rndtime", "bantime.overalljails"} {
				if v, ok := c.get(name, k); ok {
					j.Notes = append(j.Notes, fmt.Sprintf("%s = %s: no counterpart (pbxguard grows bantime × increment per earlier ban, up to maxbantime, over every jail's history)", k, oneLine(v)))
				}
			}
		}
		if err != nil {
			return nil, err
		}
		if v, ok := c.get(name, "backend"); ok && strings.EqualFold(strings.TrimSpace(v), "systemd") {
			j.Journal = true
		}
		if v, ok := c.get(name, "logpath"); ok && j.Detector == "asterisk" {
			j.Notes = append(j.Notes, fmt.Sprintf("logpath %s: pbxguard finds Asterisk's logs itself through logger.conf (messages and the security log, which fail2ban does not read); set files: to override", oneLine(v)))
		} else if ok && !j.Journal {
			for _, p := range strings.Fields(v) {
				if strings.Contains(p, "%(") {
					j.Notes = append(j.Notes, fmt.Sprintf("logpath %s: defined in a file pbxguard did not read (paths-*.conf); the log files are found by pbxguard's discovery instead", p))
					continue
				}
				if strings.ContainsAny(p, "*?[") {
					m, _ := filepath.Glob(p)
					if len(m) == 0 {
						j.Notes = append(j.Notes, fmt.Sprintf("logpath %s: a glob that matches nothing now; pbxguard takes file names, so list them", p))
					}
					j.Files = append(j.Files, m...)
					continue
				}
				j.Files = append(j.Files, p)
			}
		}
		if v, ok := c.sections[name]["ignoreip"]; ok {
			addIgnore("["+name+"]", v)
		}
		for _, k := range sortedKeys(c.sections[name]) {
			if !handled[k] && !strings.HasPrefix(k, "bantime.") {
				j.Notes = append(j.Notes, fmt.Sprintf("%s = %s: no counterpart in pbxguard", k, oneLine(c.sections[name][k])))
			}
		}
		if a, ok := c.sections[name]["action"]; ok {
			j.Notes = append(j.Notes, fmt.Sprintf("action = %s: pbxguard bans in the kernel itself (firewall.backend); alerts are the fraud section's", oneLine(a)))
		}
		if name == "recidive" {
			r := j
			recidive = &r
			continue
		}
		if j.Detector == "" {
			if j.Enabled {
				im.Notes = append(im.Notes, fmt.Sprintf("jail [%s]: pbxguard has no detector for it (it reads Asterisk, sshd and the SIP wire); keep fail2ban for it, or drop it", name))
			}
			continue
		}
		im.Jails = append(im.Jails, j)
	}
	if recidive != nil && recidive.Enabled {
		ban := recidive.BanTime
		for i := range im.Jails {
			j := &im.Jails[i]
			if j.Increment <= 1 {
				j.Increment = 2
			}
			if recidive.Permanent {
				j.Notes = append(j.Notes, "recidive bans permanently: pbxguard's increments grow the ban instead, up to maxbantime (set bantime: permanent here to ban repeat offenders for good)")
			} else if ban > j.MaxBan {
				j.MaxBan = ban
			}
			j.Notes = append(j.Notes, fmt.Sprintf("recidive (%d bans in %s → %s): pbxguard counts every earlier ban of the address (90 days of history) and grows bantime × %g per earlier ban, up to maxbantime", recidive.MaxRetry, fmtDur(recidive.FindTime, false), fmtDur(ban, recidive.Permanent), j.Increment))
		}
	}
	for i := range im.Jails {
		j := &im.Jails[i]
		if j.MaxBan > 0 && j.MaxBan < j.BanTime {
			j.MaxBan = j.BanTime
		}
		if j.MaxBan == 0 && j.Increment > 1 {
			j.MaxBan = max(7*24*time.Hour, j.BanTime)
		}
	}
	return im, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// fmtDur writes a duration in pbxguard's config syntax (1w2d, 1h30m, 45s).
func fmtDur(d time.Duration, permanent bool) string {
	if permanent {
		return "permanent"
	}
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		s string
		d time.Duration
	}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.s)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "1s"
	}
	return b.String()
}

// yamlString quotes a value for YAML (paths may hold anything).
func yamlString(s string) string { return strconv.Quote(s) }

// WriteYAML writes the pbxguard configuration, with every note as a comment.
func (im *Import) WriteYAML(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# pbxguard configuration imported from fail2ban by `pbxguard import fail2ban`.\n")
	fmt.Fprintf(&b, "# Read from: %s\n", strings.Join(im.Files, ", "))
	b.WriteString("# Check it with: pbxguard config check FILE. Every key: /usr/share/doc/pbxguard (deploy/pbxguard.yaml).\n")
	for _, n := range im.Notes {
		fmt.Fprintf(&b, "# NOTE: %s\n", n)
	}
	b.WriteString("\n# fail2ban's ignoreip. Loopback and this host's own addresses are always added.\nallowlist:\n")
	if len(im.Allowlist) == 0 {
		b.WriteString("  - 127.0.0.0/8\n")
	}
	for _, p := range im.Allowlist {
		fmt.Fprintf(&b, "  - %s\n", yamlString(p.String()))
	}
	b.WriteString("\njails:\n")
	if len(im.Jails) == 0 {
		b.WriteString("  {}\n")
	}
	for _, j := range im.Jails {
		fmt.Fprintf(&b, "  %s:\n", j.Name)
		for _, n := range j.Notes {
			fmt.Fprintf(&b, "    # fail2ban: %s\n", n)
		}
		fmt.Fprintf(&b, "    enabled: %t\n", j.Enabled)
		if j.Detector != "" {
			fmt.Fprintf(&b, "    detector: %s\n", j.Detector)
		} else {
			b.WriteString("    detector: auto\n")
		}
		fmt.Fprintf(&b, "    maxretry: %d\n", j.MaxRetry)
		fmt.Fprintf(&b, "    findtime: %s\n", fmtDur(j.FindTime, false))
		fmt.Fprintf(&b, "    bantime: %s\n", fmtDur(j.BanTime, j.Permanent))
		if j.Increment > 1 {
			fmt.Fprintf(&b, "    increment: %g\n", j.Increment)
			if j.MaxBan > 0 && !j.Permanent {
				fmt.Fprintf(&b, "    maxbantime: %s\n", fmtDur(j.MaxBan, false))
			}
		} else {
			b.WriteString("    increment: 1                # fail2ban bans for the same time on every repeat (bantime.increment off)\n")
			if !j.Permanent {
				fmt.Fprintf(&b, "    maxbantime: %s\n", fmtDur(j.BanTime, false))
			}
		}
		if len(j.Files) > 0 {
			b.WriteString("    files:\n")
			for _, f := range j.Files {
				fmt.Fprintf(&b, "      - %s\n", yamlString(f))
			}
		} else if j.Journal {
			b.WriteString("    # fail2ban: backend = systemd: pbxguard reads the journal for this jail by default\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
