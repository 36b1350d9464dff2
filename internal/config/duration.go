package config

import (
	"time"

	"github.com/pbxguard/pbxguard/internal/confyaml"
)

// MaxDuration is the longest duration accepted anywhere (ten years).
const MaxDuration = confyaml.MaxDuration

// ParseDuration reads a duration the way an administrator writes one:
// Go durations (90s, 1h30m), plus days and weeks (1d, 2w, 1w2d), and a bare
// integer as seconds (fail2ban's bantime = 3600). Negative values and values
// above MaxDuration are refused (see confyaml.ParseDuration).
func ParseDuration(s string) (time.Duration, error) { return confyaml.ParseDuration(s) }

// FormatDuration writes d compactly with days and weeks (1w2d3h4m5s).
func FormatDuration(d time.Duration) string { return confyaml.FormatDuration(d) }

// ErrDurationRange is ParseDuration's error for a value above MaxDuration.
var ErrDurationRange = confyaml.ErrDurationRange
