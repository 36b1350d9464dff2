package sensor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestPcapRoundTrip(t *testing.T) {
	var f bytes.Buffer
	if err := WritePcapHeader(&f); err != nil {
		t.Fatal(err)
	}
	atk := netip.MustParseAddrPort("203.0.113.66:5070")
	for i := 0; i < 5; i++ {
		text, br := req{method: "REGISTER", user: "1001", callid: fmt.Sprintf("p%d", i), cseq: 1, auth: "1001"}.text()
		WritePcapRecord(&f, t0.Add(time.Duration(i)*time.Second), ipPacket(atk, pbx, text))
		WritePcapRecord(&f, t0.Add(time.Duration(i)*time.Second+time.Millisecond), ipPacket(pbx, atk, response(401, "Unauthorized", "REGISTER", fmt.Sprintf("p%d", i), 1, br)))
	}
	r, err := NewPcapReader(bytes.NewReader(f.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var rec recorder
	s := New(Config{}, rec.emit)
	n := 0
	for {
		ip, at, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		s.HandleIP(ip, at)
	}
	if n != 10 || rec.kinds("203.0.113.66") != "auth_failure auth_failure auth_failure auth_failure auth_failure" || !rec.evs[4].Time.Equal(t0.Add(4*time.Second+time.Millisecond)) {
		t.Fatalf("%d packets, events %+v", n, rec.evs)
	}
}

// TestPcapEthernet: an Ethernet capture with a VLAN tag, big-endian
// nanosecond stamps, and a record that is not IP.
func TestPcapEthernet(t *testing.T) {
	var f bytes.Buffer
	var h [24]byte
	binary.BigEndian.PutUint32(h[0:], 0xa1b23c4d)
	binary.BigEndian.PutUint32(h[16:], 65535)
	binary.BigEndian.PutUint32(h[20:], linkEthernet)
	f.Write(h[:])
	text, _ := req{method: "OPTIONS", user: "1", callid: "e", cseq: 1, ua: "friendly-scanner"}.text()
	ip := ipPacket(netip.MustParseAddrPort("203.0.113.45:5060"), pbx, text)
	frames := [][]byte{
		append(append(make([]byte, 12), 0x81, 0x00, 0, 5, 0x08, 0x00), ip...), // VLAN 5, IPv4
		append(make([]byte, 12), 0x08, 0x06, 1, 2, 3),                         // ARP
	}
	for _, fr := range frames {
		var rh [16]byte
		binary.BigEndian.PutUint32(rh[0:], uint32(t0.Unix()))
		binary.BigEndian.PutUint32(rh[4:], 123)
		binary.BigEndian.PutUint32(rh[8:], uint32(len(fr)))
		binary.BigEndian.PutUint32(rh[12:], uint32(len(fr)))
		f.Write(rh[:])
		f.Write(fr)
	}
	r, err := NewPcapReader(&f)
	if err != nil {
		t.Fatal(err)
	}
	got, at, err := r.Next()
	if err != nil || !bytes.Equal(got, ip) || at.Nanosecond() != 123 {
		t.Fatalf("first: %v %v", err, at)
	}
	if _, _, err := r.Next(); err != io.EOF || r.Skipped != 1 {
		t.Fatalf("second: %v skipped %d", err, r.Skipped)
	}
}

func TestPcapRefusals(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"\x0a\x0d\x0d\x0a\x00\x00\x00\x00\x4d\x3c\x2b\x1a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "pcapng"},
		{"GIF89a--------------------", "bad magic"},
		{"\xd4\xc3\xb2\xa1", "file header"},
	} {
		if _, err := NewPcapReader(strings.NewReader(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v", c.in[:4], err)
		}
	}
	var f bytes.Buffer
	WritePcapHeader(&f)
	WritePcapRecord(&f, t0, []byte{0x45, 0, 0, 20})
	cut := f.Bytes()[:f.Len()-2]
	r, _ := NewPcapReader(bytes.NewReader(cut))
	if _, _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "cut capture") {
		t.Errorf("cut record: %v", err)
	}
}
