package config

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
)

// Jail defaults, safe for an Asterisk box.
const (
	DefaultMaxRetry         = 5
	DefaultFindTime         = 10 * time.Minute
	DefaultBanTime          = time.Hour
	DefaultMaxBanTime       = 7 * 24 * time.Hour
	DefaultIncrement        = 2.0
	DefaultIPv6Prefix       = 64
	DefaultChallengeTimeout = 5 * time.Second
	DefaultMaxTracked       = 100000
)

// defaultJailNames are the jails of a configuration without `jails:`.
var defaultJailNames = []string{"asterisk", "sshd"}

func knownDetectors() []string {
	names := append([]string{"asterisk", "sshd", "auto"}, detect.Names()...)
	sort.Strings(names)
	out := names[:0]
	for i, n := range names {
		if i == 0 || names[i-1] != n {
			out = append(out, n)
		}
	}
	return out
}

func newJail(name string) Jail {
	j := Jail{
		Name:             name,
		Enabled:          true,
		Source:           "log",
		MaxRetry:         DefaultMaxRetry,
		FindTime:         DefaultFindTime,
		BanTime:          DefaultBanTime,
		MaxBanTime:       DefaultMaxBanTime,
		Increment:        DefaultIncrement,
		IPv6Prefix:       DefaultIPv6Prefix,
		ChallengeTimeout: DefaultChallengeTimeout,
		MaxTracked:       DefaultMaxTracked,
	}
	switch name {
	case "asterisk", "sshd":
		j.Detector = name
	default:
		j.Detector = "auto"
	}
	return j
}

// jails parses the `jails:` mapping; v == nil means the built-in jails.
func (p *parser) jails(k string, v *yaml.Node) []Jail {
	var out []Jail
	if v == nil {
		for _, name := range defaultJailNames {
			j := newJail(name)
			p.finishJail(&j, nil)
			out = append(out, j)
		}
		return out
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, k, "expected a mapping of jail names (jails: {asterisk: {...}}), found %s", describe(v))
		return nil
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		kn, vn := v.Content[i], v.Content[i+1]
		name := kn.Value
		full := join(k, name)
		if seen[name] {
			p.errorf(kn.Line, full, "jail appears twice (keep one)")
			continue
		}
		seen[name] = true
		if !validName(name) {
			p.errorf(kn.Line, full, "jail names are letters, digits, - and _ (at most 32)")
			continue
		}
		j := newJail(name)
		j.Line = kn.Line
		set := map[string]bool{}
		fields := map[string]func(string, *yaml.Node){
			"enabled":  func(k string, v *yaml.Node) { j.Enabled = p.boolean(k, v) },
			"detector": func(k string, v *yaml.Node) { j.Detector = p.oneOf(k, v, knownDetectors()...) },
			"source":   func(k string, v *yaml.Node) { j.Source = p.oneOf(k, v, "log", "ami") },
			"files": func(k string, v *yaml.Node) {
				set["files"] = true
				for _, f := range p.strings(k, v) {
					if !strings.HasPrefix(f, "/") {
						p.errorf(v.Line, k, "%q is not an absolute path (write it from /)", f)
						continue
					}
					j.Files = append(j.Files, f)
				}
			},
			"journal": func(k string, v *yaml.Node) {
				set["journal"] = true
				for _, m := range p.strings(k, v) {
					if m != "+" && !strings.Contains(m, "=") && !strings.HasPrefix(m, "/") {
						p.errorf(v.Line, k, "%q is not a journalctl match (write FIELD=value, e.g. _SYSTEMD_UNIT=ssh.service)", m)
						continue
					}
					j.Journal = append(j.Journal, m)
				}
			},
			"maxretry":          func(k string, v *yaml.Node) { j.MaxRetry = p.intRange(k, v, 1, 255) },
			"findtime":          func(k string, v *yaml.Node) { j.FindTime = p.duration(k, v) },
			"bantime":           func(k string, v *yaml.Node) { j.BanTime = p.banTime(k, v) },
			"maxbantime":        func(k string, v *yaml.Node) { j.MaxBanTime = p.banTime(k, v) },
			"increment":         func(k string, v *yaml.Node) { j.Increment = p.float(k, v, 1, 100) },
			"ipv6_prefix":       func(k string, v *yaml.Node) { j.IPv6Prefix = p.intRange(k, v, 16, 128) },
			"challenge_timeout": func(k string, v *yaml.Node) { j.ChallengeTimeout = p.duration(k, v) },
			"max_tracked":       func(k string, v *yaml.Node) { j.MaxTracked = p.intRange(k, v, 1, 100000000) },
			"weights": func(k string, v *yaml.Node) {
				j.Weights = map[event.Kind]int{}
				if v.Kind != yaml.MappingNode {
					p.errorf(v.Line, k, "expected kind: weight pairs (weights: {scan: 5, auth_failure: 1}), found %s", describe(v))
					return
				}
				var kinds []string
				for kd := event.Kind(1); int(kd) < event.NumKinds; kd++ {
					kinds = append(kinds, kd.String())
				}
				for i := 0; i+1 < len(v.Content); i += 2 {
					kn, wn := v.Content[i], v.Content[i+1]
					kd, ok := event.ParseKind(kn.Value)
					if !ok || kd == event.KindNone {
						if s := suggest(kn.Value, kinds); s != "" {
							p.Suggestf(kn.Line, join(k, kn.Value), s, "unknown event kind")
						} else {
							p.errorf(kn.Line, join(k, kn.Value), "unknown event kind (known: %s)", strings.Join(kinds, ", "))
						}
						continue
					}
					if kd == event.AuthSuccess {
						p.errorf(kn.Line, join(k, kn.Value), "a success cannot count as a failure (remove it)")
						continue
					}
					j.Weights[kd] = p.intRange(join(k, kn.Value), wn, 0, 255)
				}
			},
		}
		p.mapping(vn, full, fields)
		if j.BanTime <= 0 {
			j.BanTime = DefaultBanTime
		}
		if j.FindTime <= 0 {
			j.FindTime = DefaultFindTime
		}
		if j.MaxBanTime < j.BanTime {
			if p.lineOf[full+".maxbantime"] > 0 {
				p.errorf(p.lineOf[full+".maxbantime"], full+".maxbantime", "%s is shorter than bantime %s (make it at least the bantime)", FormatBanTime(j.MaxBanTime), FormatBanTime(j.BanTime))
			}
			j.MaxBanTime = j.BanTime
		}
		p.finishJail(&j, set)
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

func (p *parser) float(k string, v *yaml.Node, lo, hi float64) float64 { return p.Float(k, v, lo, hi) }

// finishJail fills in the files or journal the user left out. Weights the
// user left out take the jail's defaults (1 per failure and per unanswered
// challenge, maxretry for a scan).
func (p *parser) finishJail(j *Jail, set map[string]bool) {
	if j.Source == "ami" || set["files"] || set["journal"] {
		return
	}
	switch j.Detector {
	case "asterisk":
		logs := readLoggerConf(p.opts.LoggerConf, p.opts.AsteriskLogs)
		j.Files = logs.Files
		if !logs.Found {
			// Missing is missing: whether the security log is on is not
			// known without it.
			p.warnf("jail %s: Asterisk's %s is missing or unreadable (is audit.asterisk_dir right?); following %s, guessed from the log directory "+
				"(set jails.%s.files to choose)", j.Name, p.opts.LoggerConf, strings.Join(logs.Files, ", "), j.Name)
		} else if !logs.Security {
			p.warnf("jail %s: Asterisk's security log is off, so pbxguard misses attacks Asterisk only reports there "+
				"(enumeration, alwaysauthreject=yes). Add the line `security.log => security` under [logfiles] in %s, "+
				"then run: asterisk -rx 'logger reload'", j.Name, p.opts.LoggerConf)
		}
	case "sshd":
		if _, err := os.Stat(p.opts.AuthLog); err == nil || !p.opts.HaveJournal() {
			j.Files = []string{p.opts.AuthLog}
		} else {
			j.Journal = []string{"_SYSTEMD_UNIT=ssh.service", "_SYSTEMD_UNIT=sshd.service"}
		}
	default:
		if j.Enabled {
			hint := ""
			if h := suggest(j.Name, defaultJailNames); h != "" {
				hint = fmt.Sprintf("; did you mean the %q jail?", h)
			}
			p.errorf(j.Line, "jails."+j.Name, "has no files and no journal (add files: [/var/log/...] or journal: [_SYSTEMD_UNIT=...])%s", hint)
		}
	}
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// DefaultJailNames are the jails of a configuration without `jails:` (a
// copy).
func DefaultJailNames() []string { return slices.Clone(defaultJailNames) }
