package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FreePBX's logger.conf defines its channels in included files; the old
// line reader saw none of them.
func TestLoggerConfIncludes(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "logger.conf"), []byte("[general]\ndateformat=%F %T\n\n[logfiles]\n#include logger_logfiles_custom.conf\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "logger_logfiles_custom.conf"), []byte(
		"full => notice,warning,error,verbose,dtmf\nsecurity => security ; res_security_log\nmessages => notice,warning,error\n"), 0o600)
	logs := readLoggerConf(filepath.Join(dir, "logger.conf"), "/var/log/asterisk")
	want := []string{"/var/log/asterisk/messages", "/var/log/asterisk/security"}
	if !logs.Found || !logs.Security || !slices.Equal(logs.Files, want) {
		t.Fatalf("got %+v, want files %v with security", logs, want)
	}
	os.WriteFile(filepath.Join(dir, "asterisk.conf"), []byte("[directories](!)\nastetcdir => /etc/asterisk\nastlogdir => /srv/log/asterisk\n"), 0o600)
	if got := readAstLogDir(filepath.Join(dir, "asterisk.conf"), "/var/log/asterisk"); got != "/srv/log/asterisk" {
		t.Fatalf("astlogdir = %q", got)
	}
}
