package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/sensor"
)

func udp4(src, dst netip.AddrPort, payload string) []byte {
	b := make([]byte, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], src.Port())
	binary.BigEndian.PutUint16(b[22:], dst.Port())
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}

// TestTestLogPcap: a capture of password guessing answered 401 (nothing
// in any log) gives the attacker's failures, in json and events formats.
func TestTestLogPcap(t *testing.T) {
	pbx := netip.MustParseAddrPort("192.0.2.10:5060")
	atk := netip.MustParseAddrPort("203.0.113.66:5070")
	var f bytes.Buffer
	sensor.WritePcapHeader(&f)
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 4; i++ {
		cid := fmt.Sprintf("c%d", i)
		rq := "REGISTER sip:192.0.2.10 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK" + cid + "\r\nFrom: <sip:1001@x>;tag=1\r\nTo: <sip:1001@x>\r\nCall-ID: " + cid + "\r\nCSeq: 1 REGISTER\r\nAuthorization: Digest username=\"1001\", response=\"x\"\r\n\r\n"
		rs := "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK" + cid + "\r\nCall-ID: " + cid + "\r\nCSeq: 1 REGISTER\r\n\r\n"
		sensor.WritePcapRecord(&f, t0.Add(time.Duration(i)*time.Second), udp4(atk, pbx, rq))
		sensor.WritePcapRecord(&f, t0.Add(time.Duration(i)*time.Second+time.Millisecond), udp4(pbx, atk, rs))
	}
	path := filepath.Join(t.TempDir(), "guess.pcap")
	if err := os.WriteFile(path, f.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "test-log", "--json", path)
	var r struct {
		Lines  int            `json:"lines"`
		ByAddr map[string]int `json:"by_addr"`
		ByKind map[string]int `json:"by_kind"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || r.Lines != 8 || r.ByAddr["203.0.113.66"] != 4 || r.ByKind["auth_failure"] != 4 || len(r.ByAddr) != 1 {
		t.Fatalf("exit %d: %s", code, out)
	}
	out, code = runCLI(t, "test-log", "--format", "events", "--input", "pcap", path)
	if code != exitOK || strings.Count(out, `"detector":"sip-sensor"`) != 4 || !strings.Contains(out, `"addr":"203.0.113.66"`) {
		t.Fatalf("events: exit %d: %s", code, out)
	}
	out, code = runCLI(t, "test-log", "--format", "pcap", path)
	if code != exitOK || !strings.Contains(out, "203.0.113.66") {
		t.Fatalf("--format pcap: exit %d: %s", code, out)
	}
}
