package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const corpusEtc = "../../testdata/corpus/asterisk-20/etc"

// copyCorpus copies the corpus configuration to a temporary directory. With
// windows, the two .window fragments are put in place under their real names
// (pjsip_anonymous.conf, sip_guest.conf), as the lab did during the
// misconfiguration window: pjsip.conf and sip.conf already #tryinclude them.
func copyCorpus(t *testing.T, windows bool) string {
	t.Helper()
	ents, err := os.ReadDir(corpusEtc)
	if err != nil {
		t.Skipf("corpus not available: %v", err)
	}
	dir := t.TempDir()
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(corpusEtc, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		name := e.Name()
		if windows {
			name = strings.TrimSuffix(name, ".window")
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func find(fs []Finding, id, loc, text string) *Finding {
	for i, f := range fs {
		if f.ID == id && (loc == "" || Pos{f.File, f.Line}.String() == loc) && strings.Contains(f.Message, text) {
			return &fs[i]
		}
	}
	return nil
}

func TestCorpusAsterisk20(t *testing.T) {
	type want struct{ id, loc, text string }
	always := []want{
		{"secret.weak", "pjsip.conf:84", "pjsip auth 1004: password is weak"},
		{"dialplan.intl-open", "extensions.conf:29", "context from-internal can dial international numbers (_00X., _011X., _+X., _X.)"},
		{"dialplan.intl-open", "extensions.conf:29", "9 endpoint(s) not marked trusted: PJSIP/1001, PJSIP/1002, PJSIP/1003, PJSIP/1004, PJSIP/1005, SIP/2001, SIP/2002, SIP/2003, IAX2/5001"},
		{"dialplan.wildcard", "extensions.conf:29", "_X."},
		{"ami.exposed", "manager.conf:16", "AMI user monitor"},
		{"ami.exposed", "manager.conf:16", "no permit/deny ACL"},
		{"dialplan.no-limit", "extensions.conf:34", "trunk carrier"},
	}
	window := []want{
		{"pjsip.anonymous-endpoint", "pjsip_anonymous.conf:2", "anonymous"},
		{"sip.allowguest", "sip_guest.conf:2", "allowguest=yes"},
	}
	for _, withWindows := range []bool{true, false} {
		name := "without-windows"
		if withWindows {
			name = "with-windows"
		}
		t.Run(name, func(t *testing.T) {
			dir := copyCorpus(t, withWindows)
			r, err := Run(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := r.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", text.String())
			for _, w := range always {
				if find(r.Findings, w.id, w.loc, w.text) == nil {
					t.Errorf("missing %s at %s with %q", w.id, w.loc, w.text)
				}
			}
			for _, w := range window {
				got := find(r.Findings, w.id, "", "")
				if withWindows && find(r.Findings, w.id, w.loc, w.text) == nil {
					t.Errorf("missing %s at %s with %q", w.id, w.loc, w.text)
				}
				if !withWindows && got != nil {
					t.Errorf("%s must be gone without the window fragments: %+v", w.id, *got)
				}
			}
			// pbxadmin has an ACL: no ami.exposed for it, only the write=all note
			if f := find(r.Findings, "ami.exposed", "", "pbxadmin"); f != nil {
				t.Errorf("pbxadmin has an ACL: %+v", *f)
			}
			if f := find(r.Findings, "ami.too-powerful", "manager.conf:13", "pbxadmin"); f == nil || f.Severity != Medium {
				t.Errorf("ami.too-powerful for pbxadmin: %+v", f)
			}
			// the corpus logs security events and its other secrets are strong
			for _, id := range []string{"logging.security-off", "config.syntax", "config.include", "acl.open"} {
				if f := find(r.Findings, id, "", ""); f != nil {
					t.Errorf("unexpected %+v", *f)
				}
			}
			if n := len(withID(r.Findings, "secret.weak")); n != 2 { // 1004 and monitor
				t.Errorf("secret.weak findings = %d, want 2:%s", n, show(r.Findings))
			}
			if r.AtOrAbove(High) == 0 || r.CountBySeverity()[Critical] != 2 {
				t.Errorf("counts %v", r.CountBySeverity())
			}
		})
	}
}
