package ami

import (
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadCapture(t *testing.T) {
	dir := t.TempDir()
	stream := "Asterisk Call Manager/9.0.0\r\nEvent: Newchannel\r\nChannel: PJSIP/1004-00000005\r\n\r\n" +
		"this line is no header\r\n\r\n" +
		"Event: Hangup\r\nChannel: PJSIP/1004-00000005\r\n\r\n"
	plain := filepath.Join(dir, "s.raw")
	os.WriteFile(plain, []byte(stream), 0o600)
	gz := filepath.Join(dir, "s.raw.gz")
	f, _ := os.Create(gz)
	zw := gzip.NewWriter(f)
	zw.Write([]byte(stream))
	zw.Close()
	f.Close()
	for _, p := range []string{plain, gz} {
		msgs, err := ReadCapture(p)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: err = %v, want the malformed message reported", p, err)
		}
		if len(msgs) != 2 || msgs[0].Event() != "Newchannel" || msgs[1].Event() != "Hangup" {
			t.Fatalf("%s: got %d messages %v", p, len(msgs), msgs)
		}
	}
	if _, err := ReadCapture(filepath.Join(dir, "missing.gz")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
