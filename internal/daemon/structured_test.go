package daemon

import (
	"testing"

	"github.com/pbxguard/pbxguard/internal/config"
)

func TestFollowsStructured(t *testing.T) {
	cases := []struct {
		jc   config.Jail
		want bool
	}{
		{config.Jail{Files: []string{"/var/log/asterisk/messages.log", "/var/log/asterisk/security.log"}}, true},
		{config.Jail{Files: []string{"/var/log/asterisk/messages"}}, false},
		{config.Jail{Files: []string{"/var/log/asterisk/Security"}}, true},
		{config.Jail{Source: "ami"}, true},
		{config.Jail{Files: []string{"/var/log/security-cameras/x/messages"}}, false},
	}
	for _, c := range cases {
		if got := followsStructured(c.jc); got != c.want {
			t.Errorf("followsStructured(%+v) = %v, want %v", c.jc, got, c.want)
		}
	}
}
