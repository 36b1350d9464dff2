package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runAuditCmd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"audit"}, args...))
	err := root.Execute()
	if err == nil {
		return out.String(), exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String(), ee.code
	}
	return out.String(), exitUsage
}

func writeAsteriskDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestAuditCommand(t *testing.T) {
	logger := "[logfiles]\nsecurity => security\n"
	bad := writeAsteriskDir(t, map[string]string{"sip.conf": "[general]\nallowguest=yes\nalwaysauthreject=yes\n", "logger.conf": logger})
	good := writeAsteriskDir(t, map[string]string{"sip.conf": "[general]\nallowguest=no\n", "logger.conf": logger})
	medium := writeAsteriskDir(t, map[string]string{"sip.conf": "[general]\nallowguest=no\nalwaysauthreject=no\n", "logger.conf": logger})

	out, code := runAuditCmd(t, "--asterisk-dir", bad, "--format", "json")
	if code != exitFindings {
		t.Errorf("bad config: exit %d", code)
	}
	var rep struct {
		Findings []struct {
			ID       string `json:"id"`
			Severity string `json:"severity"`
			File     string `json:"file"`
			Line     int    `json:"line"`
		} `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].ID != "sip.allowguest" || rep.Findings[0].Severity != "high" || rep.Findings[0].File != "sip.conf" || rep.Findings[0].Line != 2 {
		t.Errorf("findings %+v", rep.Findings)
	}
	if _, code := runAuditCmd(t, "--asterisk-dir", bad, "--fail-on", "critical"); code != exitOK {
		t.Errorf("--fail-on critical with a high finding: exit %d", code)
	}
	if out, code := runAuditCmd(t, "--asterisk-dir", good); code != exitOK || !strings.Contains(out, "no findings") {
		t.Errorf("good config: exit %d\n%s", code, out)
	}
	if _, code := runAuditCmd(t, "--asterisk-dir", medium); code != exitOK {
		t.Errorf("medium finding with default --fail-on high: exit %d", code)
	}
	if out, code := runAuditCmd(t, "--asterisk-dir", medium, "--fail-on", "medium"); code != exitFindings || !strings.Contains(out, "MEDIUM (1)") {
		t.Errorf("--fail-on medium: exit %d\n%s", code, out)
	}
	if out, code := runAuditCmd(t, "--asterisk-dir", bad, "--format", "sarif"); code != exitFindings || !strings.Contains(out, `"version": "2.1.0"`) {
		t.Errorf("sarif: exit %d\n%s", code, out)
	}
	if _, code := runAuditCmd(t, "--asterisk-dir", filepath.Join(bad, "nope")); code != exitUsage {
		t.Errorf("unreadable dir: exit %d", code)
	}
	if _, code := runAuditCmd(t, "--asterisk-dir", good, "--format", "xml"); code != exitUsage {
		t.Errorf("bad format: exit %d", code)
	}
	if _, code := runAuditCmd(t, "--asterisk-dir", good, "--fail-on", "severe"); code != exitUsage {
		t.Errorf("bad fail-on: exit %d", code)
	}
}

func TestAuditCommandTrustedEndpoint(t *testing.T) {
	dir := writeAsteriskDir(t, map[string]string{
		"logger.conf":     "[logfiles]\nsecurity => security\n",
		"pjsip.conf":      "[100]\ntype=endpoint\ncontext=intl\nauth=100\n[100]\ntype=auth\nusername=100\npassword=Xk4vQ9mT2rLp8Wz\n",
		"extensions.conf": "[intl]\nexten => _00ZX.,1,Set(GROUP()=intl)\n same => n,GotoIf($[${GROUP_COUNT()} > 1]?full)\n same => n,Dial(PJSIP/${EXTEN}@carrier)\n",
	})
	if out, code := runAuditCmd(t, "--asterisk-dir", dir); code != exitFindings || !strings.Contains(out, "dialplan.intl-open") {
		t.Errorf("untrusted: exit %d\n%s", code, out)
	}
	if out, code := runAuditCmd(t, "--asterisk-dir", dir, "--trusted-endpoint", "100"); code != exitOK {
		t.Errorf("trusted: exit %d\n%s", code, out)
	}
}
