package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestHistoryRetention(t *testing.T) {
	for _, c := range []struct {
		yaml string
		want time.Duration
		err  string
	}{
		{"", DefaultRetention, ""},
		{"history: {retention: 30d}\n", 30 * 24 * time.Hour, ""},
		{"history: {retention: forever}\n", 0, ""},
		{"history: {retention: 1h}\n", 0, "shorter than a day"},
		{"history: {retention: soon}\n", 0, "not a duration"},
		{"history: {keep: 1d}\n", 0, "unknown key"},
	} {
		cfg, err := Parse([]byte(c.yaml), Options{HostPrefixes: func() []netip.Prefix { return nil }})
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		h, err := ParseHistory(cfg.History)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("%q: err %v, want %q", c.yaml, err, c.err)
			}
			continue
		}
		if err != nil || h.Retention != c.want {
			t.Fatalf("%q: %v, %v; want %v", c.yaml, h.Retention, err, c.want)
		}
	}
}
