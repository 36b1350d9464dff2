package confyaml

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MaxDuration is the longest duration pbxguard accepts anywhere (a ban, a
// window, a timeout): ten years. Longer values are mistakes (a bare number
// of seconds with too many digits) and, past ~292 years, overflow
// time.Duration into something short (18446744074 s was a 288 ms ban).
const MaxDuration = 10 * 365 * 24 * time.Hour

// Permanent is the sentinel a ban duration takes for "never expires"
// (`bantime: permanent`, `ban --for permanent`). It is reserved here so that
// no parsed duration can collide with it: ParseDuration never returns it
// (nor anything above MaxDuration); the readers of ban durations that accept
// the word "permanent" map it to this value.
const Permanent time.Duration = math.MaxInt64

// ErrDurationRange is returned by ParseDuration for values above MaxDuration.
var ErrDurationRange = fmt.Errorf("duration out of range (at most %s)", FormatDuration(MaxDuration))

// ParseDuration reads a duration the way an administrator writes one: Go
// durations (90s, 1h30m, 1.5h, 250ms), plus days and weeks (1d, 2w, 1w2d),
// and a bare whole number as seconds (fail2ban's bantime = 3600). Negative
// values are refused, and so is anything above MaxDuration
// (ErrDurationRange), checked before any multiplication can overflow.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("negative duration")
	}
	if isDigits(s) {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n > uint64(MaxDuration/time.Second) {
			return 0, ErrDurationRange
		}
		return time.Duration(n) * time.Second, nil
	}
	var total time.Duration
	rest := strings.TrimPrefix(s, "+")
	if rest == "" {
		return 0, fmt.Errorf("bad duration %q", s)
	}
	for rest != "" {
		// One component: digits [. digits] unit.
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		if i == 0 || j == i {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		num, unit := rest[:i], rest[i:j]
		var d time.Duration
		switch unit {
		case "w", "d":
			if !isDigits(num) {
				return 0, fmt.Errorf("bad duration %q (days and weeks are whole numbers)", s)
			}
			n, err := strconv.ParseUint(num, 10, 64)
			per := 24 * time.Hour
			if unit == "w" {
				per *= 7
			}
			if err != nil || n > uint64(MaxDuration/per) {
				return 0, ErrDurationRange
			}
			d = time.Duration(n) * per
		case "h", "m", "s", "ms", "us", "µs", "ns":
			var err error
			d, err = time.ParseDuration(num + unit)
			if err != nil {
				if strings.Count(num, ".") <= 1 && strings.Trim(num, ".") != "" {
					return 0, ErrDurationRange // well formed: it overflowed
				}
				return 0, fmt.Errorf("bad duration %q", s)
			}
		default:
			return 0, fmt.Errorf("bad duration %q", s)
		}
		if d > MaxDuration || total > MaxDuration-d {
			return 0, ErrDurationRange
		}
		total += d
		rest = rest[j:]
	}
	return total, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatDuration writes d compactly with days and weeks (1w2d3h4m5s);
// Permanent is "permanent".
func FormatDuration(d time.Duration) string {
	if d == Permanent {
		return "permanent"
	}
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
