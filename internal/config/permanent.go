package config

import (
	"math"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Permanent is the bantime of a ban that never ends (`bantime: permanent`,
// fail2ban's -1; `pbxguard ban --for permanent`): the largest duration, the
// same value as jail.Permanent, store.Permanent and firewall.Permanent.
const Permanent time.Duration = math.MaxInt64

// isPermanent reports whether s spells a permanent ban: "permanent" or
// fail2ban's -1.
func isPermanent(s string) bool {
	s = strings.TrimSpace(s)
	return strings.EqualFold(s, "permanent") || s == "-1"
}

// ParseBanTime reads a ban duration: a duration (ParseDuration), or
// "permanent" (or -1) for Permanent.
func ParseBanTime(s string) (time.Duration, error) {
	if isPermanent(s) {
		return Permanent, nil
	}
	return ParseDuration(s)
}

// FormatBanTime is FormatDuration, and "permanent" for Permanent.
func FormatBanTime(d time.Duration) string {
	if d >= Permanent {
		return "permanent"
	}
	return FormatDuration(d)
}

// banTime reads bantime/maxbantime: a duration or permanent.
func (p *parser) banTime(k string, v *yaml.Node) time.Duration {
	if v != nil && v.Kind == yaml.ScalarNode && isPermanent(v.Value) {
		return Permanent
	}
	return p.duration(k, v)
}
