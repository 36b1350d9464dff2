package config

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/pbxguard/pbxguard/internal/audit"
)

// AsteriskLogs is what Asterisk's logger.conf says about the files pbxguard
// should follow.
type AsteriskLogs struct {
	// Files are the log files that carry NOTICE (the chan_sip/res_pjsip
	// failures) or SECURITY (res_security_log) lines, absolute paths.
	Files []string
	// Security is true when some file channel receives the security level.
	Security bool
	// Found is false when logger.conf could not be read; Files then holds
	// the best guess from what exists in the log directory.
	Found bool
}

// readLoggerConf reads Asterisk's logger.conf (its [logfiles] section) and
// returns the file channels that receive notice or security messages.
// logDir is where relative channel names live (astlogdir, by default
// /var/log/asterisk). A missing file is not an error: the result then guesses
// from the files present (Asterisk 19+ writes messages.log, older messages).
func readLoggerConf(path, logDir string) AsteriskLogs {
	// Asterisk's own config syntax (includes, as FreePBX's
	// logger_logfiles_custom.conf; \; escapes; block comments), read by the
	// audit's faithful parser.
	conf := parseAsteriskConf(path)
	if conf == nil {
		return guessAsteriskLogs(logDir)
	}
	out := AsteriskLogs{Found: true}
	// The same message goes to every channel that takes its level: follow
	// one file for notices and one for security events (the channel with the
	// fewest levels: "messages" rather than "full"), never two copies.
	type channel struct {
		path             string
		notice, security bool
		levels           int
	}
	var best [2]*channel // 0: notice, 1: security
	for _, sec := range conf.Sections {
		if !strings.EqualFold(sec.Name, "logfiles") {
			continue
		}
		for _, v := range sec.Vars {
			name := strings.TrimSpace(v.Name)
			if name == "" || name == "console" || strings.HasPrefix(name, "syslog") {
				continue
			}
			c := &channel{path: name}
			if !filepath.IsAbs(c.path) {
				c.path = filepath.Join(logDir, c.path)
			}
			for _, lv := range strings.Split(v.Value, ",") {
				lv = strings.ToLower(strings.TrimSpace(lv))
				// "[plain]" / "[json]" formatter prefixes (Asterisk 16.14+).
				if i := strings.IndexByte(lv, ']'); strings.HasPrefix(lv, "[") && i > 0 {
					lv = strings.TrimSpace(lv[i+1:])
				}
				if lv == "" {
					continue
				}
				c.levels++
				switch lv {
				case "notice":
					c.notice = true
				case "security":
					c.security = true
				case "*":
					c.notice, c.security = true, true
					c.levels += 100
				}
			}
			for i, has := range []bool{c.notice, c.security} {
				if has && (best[i] == nil || c.levels < best[i].levels) {
					best[i] = c
				}
			}
		}
	}
	for _, c := range best {
		if c != nil {
			out.Files = appendUnique(out.Files, c.path)
		}
	}
	out.Security = best[1] != nil
	return out
}

func guessAsteriskLogs(logDir string) AsteriskLogs {
	var out AsteriskLogs
	for _, n := range []string{"messages.log", "messages"} {
		if _, err := os.Stat(filepath.Join(logDir, n)); err == nil {
			out.Files = append(out.Files, filepath.Join(logDir, n))
			break
		}
	}
	if len(out.Files) == 0 {
		out.Files = []string{filepath.Join(logDir, "messages.log")}
	}
	for _, n := range []string{"security.log", "security"} {
		if _, err := os.Stat(filepath.Join(logDir, n)); err == nil {
			out.Files = append(out.Files, filepath.Join(logDir, n))
			out.Security = true
			break
		}
	}
	return out
}

// readAstLogDir returns astlogdir from asterisk.conf, or def.
func readAstLogDir(asteriskConf, def string) string {
	conf := parseAsteriskConf(asteriskConf)
	if conf == nil {
		return def
	}
	for _, sec := range conf.Sections {
		if v, ok := sec.Get("astlogdir"); ok && strings.TrimSpace(v.Value) != "" {
			return strings.TrimSpace(v.Value)
		}
	}
	return def
}

// parseAsteriskConf parses one of Asterisk's configuration files with its
// includes (relative to its directory), or returns nil when it cannot be read.
func parseAsteriskConf(path string) *audit.File {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	return audit.Parse(os.DirFS(filepath.Dir(path)), filepath.Base(path))
}

func appendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}
