package daemon

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/pbxguard/pbxguard/internal/audit"
	"github.com/pbxguard/pbxguard/internal/config"
)

// AuditStatus is the result of the Asterisk configuration audit the daemon
// runs at start, as `pbxguard status` shows it.
type AuditStatus struct {
	Enabled bool   `json:"enabled"`
	Dir     string `json:"dir,omitempty"`
	// Error is set when the directory could not be read (a warning: the
	// daemon runs anyway).
	Error string `json:"error,omitempty"`
	// Findings counts findings per severity; all five are present.
	Findings map[string]int `json:"findings"`
}

// runAudit audits the Asterisk configuration directory of cfg, logs a
// one-line summary and each critical or high finding, and never fails: an
// unreadable directory is a warning.
func runAudit(cfg config.Audit, log *slog.Logger) AuditStatus {
	st := AuditStatus{Enabled: cfg.Enabled, Dir: cfg.AsteriskDir, Findings: map[string]int{}}
	for _, s := range audit.Severities() {
		st.Findings[s.String()] = 0
	}
	if !cfg.Enabled {
		return st
	}
	rep, err := audit.Run(cfg.AsteriskDir, audit.Options{TrustedEndpoints: cfg.TrustedEndpoints})
	if err != nil {
		st.Error = err.Error()
		hint := "set audit.asterisk_dir to Asterisk's configuration directory, or audit.enabled: false"
		if !errors.Is(err, audit.ErrUnreadable) {
			hint = "run pbxguard audit --asterisk-dir " + cfg.AsteriskDir + " to see why"
		}
		log.Warn("asterisk config audit: not run", "dir", cfg.AsteriskDir, "err", err, "hint", hint)
		return st
	}
	for s, n := range rep.CountBySeverity() {
		st.Findings[s.String()] = n
	}
	log.Info(fmt.Sprintf("asterisk config audit of %s: %d critical, %d high, %d medium, %d low, %d info finding(s)",
		cfg.AsteriskDir, st.Findings["critical"], st.Findings["high"], st.Findings["medium"], st.Findings["low"], st.Findings["info"]),
		"details", "pbxguard audit --asterisk-dir "+cfg.AsteriskDir)
	for _, f := range rep.Findings {
		if f.Severity < audit.High {
			continue
		}
		log.Warn("asterisk config audit finding", "severity", f.Severity.String(), "id", f.ID,
			"at", audit.Pos{File: f.File, Line: f.Line}.String(), "message", f.Message, "fix", f.Fix)
	}
	return st
}
