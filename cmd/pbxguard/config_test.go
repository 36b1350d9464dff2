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

func TestConfigCheckShowsTrunks(t *testing.T) {
	etc, err := filepath.Abs("../../testdata/corpus/asterisk-20/etc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(path, []byte("audit: {asterisk_dir: "+etc+"}\nstate_dir: "+dir+"\njails:\n  asterisk:\n    files: ["+dir+"/m.log]\n"), 0o600)
	var b bytes.Buffer
	if err := runConfigCheck(&b, path, true, false); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	var out checkJSON
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Trunks) != 1 || out.Trunks[0].Prefix.String() != "203.0.113.250/32" || out.Trunks[0].At != "pjsip.conf:117" {
		t.Fatalf("trunks = %+v", out.Trunks)
	}

	os.WriteFile(path, []byte("audit: {asterisk_dir: "+etc+"}\nallowlist_asterisk_trunks: false\nstate_dir: "+dir+"\njails:\n  asterisk:\n    files: ["+dir+"/m.log]\n"), 0o600)
	b.Reset()
	if err := runConfigCheck(&b, path, true, false); err != nil {
		t.Fatal(err)
	}
	out = checkJSON{}
	json.Unmarshal(b.Bytes(), &out)
	if len(out.Trunks) != 0 {
		t.Fatalf("option off, trunks = %+v", out.Trunks)
	}
}

// Issue 9 point 5: `config check` and `run` share one preflight. A config
// whose AMI secret is missing was passed by `config check` (exit 0) and
// refused by `run` only after it had opened the store; now both refuse it
// (exit 2) with the line, and run touches nothing.
func TestCheckAndRunShareThePreflight(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	path := filepath.Join(dir, "pbxguard.yaml")
	os.WriteFile(path, []byte("state_dir: "+state+"\njails:\n  asterisk:\n    files: ["+dir+"/m.log]\nfraud:\n  country: US\n  ami:\n    addr: 127.0.0.1\n    secret_file: "+dir+"/ami.secret\ncontrol: {socket: "+dir+"/run/s.sock}\n"), 0o600)
	var b bytes.Buffer
	err := runConfigCheck(&b, path, true, false)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage {
		t.Fatalf("config check: %v, want exit 2\n%s", err, b.String())
	}
	var out checkJSON
	if err := json.Unmarshal(b.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	want := []checkError{
		{Line: 8, Key: "fraud.ami.addr", Message: `"127.0.0.1" is not host:port (try "127.0.0.1:5038"; Asterisk's manager.conf port, 5038 by default)`},
		{Line: 9, Key: "fraud.ami.secret_file", Message: "AMI secret file " + dir + "/ami.secret does not exist (write the secret of the manager.conf user \"pbxguard\" into " + dir + "/ami.secret, mode 0600, or set fraud.ami.secret_file)"},
	}
	if out.OK || out.Exit != 2 || len(out.Errors) != 2 || out.Errors[0] != want[0] || out.Errors[1] != want[1] {
		t.Fatalf("errors = %+v\nwant %+v", out.Errors, want)
	}
	if len(out.Warnings) != 1 || out.Warnings[0].Key != "jails.asterisk.files" || out.Warnings[0].Line != 4 {
		t.Fatalf("warnings = %+v (want the missing log file, line 4)", out.Warnings)
	}
	if code := run([]string{"run", "--config", path}); code != exitUsage {
		t.Fatalf("run: exit %d, want %d", code, exitUsage)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("run created %s before refusing the configuration (%v)", state, err)
	}

	// Warnings only: exit 0, or 1 with --strict.
	os.WriteFile(dir+"/ami.secret", []byte("s3cret\n"), 0o600)
	os.WriteFile(path, []byte("state_dir: "+state+"\njails:\n  asterisk:\n    files: ["+dir+"/m.log]\nfraud:\n  country: US\n  ami: {secret_file: "+dir+"/ami.secret}\ncontrol: {socket: "+dir+"/run/s.sock}\n"), 0o600)
	b.Reset()
	if err := runConfigCheck(&b, path, false, false); err != nil {
		t.Fatalf("warnings only: %v\n%s", err, b.String())
	}
	if !strings.Contains(b.String(), "warning: line 4: jails.asterisk.files: jail asterisk: log file "+dir+"/m.log does not exist yet") {
		t.Fatalf("output:\n%s", b.String())
	}
	if err := runConfigCheck(&b, path, false, true); !errors.As(err, &ee) || ee.code != exitFindings {
		t.Fatalf("--strict with warnings: %v, want exit 1", err)
	}
}
