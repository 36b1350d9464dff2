package audit

import (
	"sort"
	"strings"
	"testing"
)

// TestFreePBXLayout: the audit reads a FreePBX-shaped directory through its
// #include'd generated and custom files, and finds what matters there.
func TestFreePBXLayout(t *testing.T) {
	rep, err := Run("../../testdata/freepbx/etc/asterisk", Options{TrustedEndpoints: []string{"1001"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var ids []string
	for _, f := range rep.Findings {
		got[f.ID] = f.File
		ids = append(ids, f.ID+"@"+f.File)
	}
	sort.Strings(ids)
	for id, file := range map[string]string{
		"secret.weak":        "pjsip.auth.conf",            // 1002's password is its number
		"dialplan.intl-open": "extensions_additional.conf", // outrt-1 _011. reaches 1002 (untrusted)
	} {
		if got[id] != file {
			t.Errorf("%s: in %q, want %s\nfindings: %s", id, got[id], file, strings.Join(ids, " "))
		}
	}
	if _, ok := got["logging.security-off"]; ok {
		t.Errorf("the security channel in logger_logfiles_custom.conf was not seen: %s", strings.Join(ids, " "))
	}
}
