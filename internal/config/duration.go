package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a duration the way an administrator writes one:
// Go durations (90s, 1h30m), plus days and weeks (1d, 2w, 1w2d), and a bare
// integer as seconds (fail2ban's bantime = 3600).
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("negative duration")
		}
		return time.Duration(n) * time.Second, nil
	}
	var total time.Duration
	rest := s
	// Peel off leading w/d components, hand the rest to time.ParseDuration.
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9') {
			i++
		}
		if i == 0 || i == len(rest) {
			break
		}
		unit := rest[i]
		if unit != 'w' && unit != 'd' {
			break
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil {
			return 0, err
		}
		if unit == 'w' {
			total += time.Duration(n) * 7 * 24 * time.Hour
		} else {
			total += time.Duration(n) * 24 * time.Hour
		}
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		total += d
	}
	if total < 0 {
		return 0, fmt.Errorf("negative duration")
	}
	return total, nil
}

// FormatDuration writes d compactly with days and weeks (1w2d3h4m5s).
func FormatDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		d time.Duration
		s string
	}{{7 * 24 * time.Hour, "w"}, {24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.s)
			d -= n * u.d
		}
	}
	return b.String()
}
