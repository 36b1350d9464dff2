package config

import (
	"strings"
	"testing"
)

func TestPermanentBanTime(t *testing.T) {
	c, err := Parse([]byte("jails:\n  asterisk:\n    bantime: permanent\n  sshd:\n    bantime: -1\n"), testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range c.Jails {
		if j.BanTime != Permanent || j.MaxBanTime != Permanent {
			t.Fatalf("jail %s: bantime %v, maxbantime %v, want permanent", j.Name, j.BanTime, j.MaxBanTime)
		}
	}
	if got := FormatBanTime(Permanent); got != "permanent" {
		t.Fatalf("FormatBanTime = %q", got)
	}
	if d, err := ParseBanTime("permanent"); err != nil || d != Permanent {
		t.Fatalf("ParseBanTime(permanent) = %v, %v", d, err)
	}
	if d, err := ParseBanTime("10m"); err != nil || d.Minutes() != 10 {
		t.Fatalf("ParseBanTime(10m) = %v, %v", d, err)
	}
	_, err = Parse([]byte("jails:\n  asterisk:\n    bantime: forever\n"), testOpts(t))
	if err == nil || !strings.Contains(err.Error(), "bantime") {
		t.Fatalf("bantime: forever: %v, want an error", err)
	}
}
