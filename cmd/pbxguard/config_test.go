package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
	if err := runConfigCheck(&b, path, true); err != nil {
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
	if err := runConfigCheck(&b, path, true); err != nil {
		t.Fatal(err)
	}
	out = checkJSON{}
	json.Unmarshal(b.Bytes(), &out)
	if len(out.Trunks) != 0 {
		t.Fatalf("option off, trunks = %+v", out.Trunks)
	}
}
