package fraud

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/confyaml"
)

// The fraud: section speaks the one dialect (issue 10 point 3): the same
// error type as every section (line, fraud.… key path, did-you-mean), the
// same durations (days, weeks; overflow and > 10 years refused, issue 16).
func TestSettingsDialect(t *testing.T) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("country: US\nban_for: 2d\nwindow: 1w\n"), &n); err != nil {
		t.Fatal(err)
	}
	s, err := ParseSettings(&n)
	if err != nil || s.BanFor != 48*time.Hour || s.Engine.Window != 7*24*time.Hour {
		t.Fatalf("settings %+v, %v", s, err)
	}
	if err := yaml.Unmarshal([]byte("country: US\nban_for: 18446744074s\nwindw: 10m\nami: {adr: x, addr: 127.0.0.1}\n"), &n); err != nil {
		t.Fatal(err)
	}
	_, err = ParseSettings(&n)
	var es confyaml.Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v (%T), want confyaml.Errors", err, err)
	}
	want := []string{
		`config: line 2: fraud.ban_for: "18446744074s" is out of range (at most 521w3d)`,
		`config: line 3: fraud.windw: unknown key (did you mean "window"?)`,
		`config: line 4: fraud.ami.adr: unknown key (did you mean "addr"?)`,
		`config: line 4: fraud.ami.addr: "127.0.0.1" is not host:port`,
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(es[i].Error(), w) {
			t.Errorf("error %d = %q, want prefix %q", i, es[i].Error(), w)
		}
	}
}

// Errors made outside the Walker (a sub-parser's *SettingsError keyed
// "agi.listen") join the section's, keyed under fraud., in file order.
func TestJoinErrs(t *testing.T) {
	err := joinErrs([]error{
		confyaml.Errors{{Line: 5, Key: "fraud.window", Msg: "bad"}},
		&SettingsError{Line: 2, Key: "agi.listen", Msg: "not host:port"},
		errors.New("plain"),
	})
	want := "config: fraud: plain\nconfig: line 2: fraud.agi.listen: not host:port\nconfig: line 5: fraud.window: bad"
	if err == nil || err.Error() != want {
		t.Fatalf("got:\n%v\nwant:\n%s", err, want)
	}
}
