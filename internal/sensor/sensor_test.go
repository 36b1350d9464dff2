package sensor

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

var (
	pbx    = netip.MustParseAddrPort("192.0.2.10:5060")
	t0     = time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	branch = 0
)

// ipPacket builds an IPv4 (or IPv6) UDP packet from src to dst.
func ipPacket(src, dst netip.AddrPort, payload string) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	if src.Addr().Is4() {
		ip := make([]byte, 20, 20+len(udp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		ip[8], ip[9] = 64, 17
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		return append(ip, udp...)
	}
	ip := make([]byte, 40, 40+len(udp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
	ip[6], ip[7] = 17, 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(ip, udp...)
}

type req struct {
	method, user, callid, ua, auth string
	cseq                           int
	ruser                          string
}

// request writes a SIP request as a phone or attack tool would; the Via
// and From carry a forged address (which the sensor must ignore).
func (r req) text() (string, string) {
	branch++
	br := fmt.Sprintf("z9hG4bK-%d", branch)
	ruser := r.ruser
	if ruser == "" {
		ruser = r.user
	}
	ruri := "sip:192.0.2.10"
	if r.method != "REGISTER" {
		ruri = "sip:" + ruser + "@192.0.2.10"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", r.method, ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP 198.51.100.99:5060;branch=%s;rport\r\n", br)
	fmt.Fprintf(&b, "From: \"x\" <sip:%s@198.51.100.99>;tag=1\r\n", r.user)
	fmt.Fprintf(&b, "To: <sip:%s@192.0.2.10>\r\n", r.user)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", r.callid)
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", r.cseq, r.method)
	if r.ua != "" {
		fmt.Fprintf(&b, "User-Agent: %s\r\n", r.ua)
	}
	if r.auth != "" {
		fmt.Fprintf(&b, "Authorization: Digest username=\"%s\", realm=\"asterisk\", nonce=\"abc\", uri=\"%s\", response=\"0123\"\r\n", r.auth, ruri)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String(), br
}

func response(code int, reason, method, callid string, cseq int, br string) string {
	return fmt.Sprintf("SIP/2.0 %d %s\r\nVia: SIP/2.0/UDP 198.51.100.99:5060;branch=%s;received=203.0.113.1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: %s\r\nCSeq: %d %s\r\nServer: Asterisk PBX 22.1.0\r\nContent-Length: 0\r\n\r\n", code, reason, br, callid, cseq, method)
}

type recorder struct{ evs []event.Event }

func (r *recorder) emit(e *event.Event) { r.evs = append(r.evs, *e) }

func (r *recorder) kinds(addr string) string {
	var out []string
	for _, e := range r.evs {
		if e.Addr.String() == addr {
			out = append(out, e.Kind.String())
		}
	}
	return strings.Join(out, " ")
}

// exchange sends a request from src and the PBX's answer (code 0 = none).
func exchange(s *Sensor, src netip.AddrPort, r req, code int, reason string, at time.Time) {
	text, br := r.text()
	s.HandleIP(ipPacket(src, pbx, text), at)
	if code > 0 {
		s.HandleIP(ipPacket(pbx, src, response(code, reason, r.method, r.callid, r.cseq, br)), at.Add(time.Millisecond))
	}
}

func TestParseRequest(t *testing.T) {
	text, _ := req{method: "REGISTER", user: "1001", callid: "abc@h", cseq: 7, auth: "1001", ua: "Yealink T46"}.text()
	var m Msg
	if !Parse([]byte(text), &m) {
		t.Fatal("not parsed")
	}
	if !m.Request || m.Method != MethodRegister || string(m.ToUser) != "1001" || string(m.FromUser) != "1001" || string(m.CallID) != "abc@h" ||
		m.CSeq != 7 || m.CSeqMeth != MethodRegister || !m.Auth || string(m.AuthUser) != "1001" || string(m.UserAgent) != "Yealink T46" ||
		m.ContentLn != 0 || m.Truncated || !strings.HasPrefix(string(m.Branch), "z9hG4bK-") {
		t.Fatalf("%+v", m)
	}
}

func TestParseTable(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
		check    func(m *Msg) bool
	}{
		{"compact forms", "INVITE sip:011442079460349@pbx SIP/2.0\nv: SIP/2.0/UDP x;branch=z9hG4bKa\nf: <sip:1004@x>;tag=1\nt: <sip:011442079460349@pbx>\ni: cid1\nCSeq: 1 INVITE\nl: 0\n\n", true,
			func(m *Msg) bool {
				return m.Method == MethodInvite && string(m.RUser) == "011442079460349" && string(m.Branch) == "z9hG4bKa" && string(m.FromUser) == "1004" && string(m.CallID) == "cid1" && m.ContentLn == 0
			}},
		{"response", "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP x;branch=b1\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\r\n", true,
			func(m *Msg) bool {
				return !m.Request && m.Status == 401 && m.Method == MethodRegister && string(m.Branch) == "b1"
			}},
		{"only the top Via", "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=top\r\nVia: SIP/2.0/UDP b;branch=second\r\n\r\n", true,
			func(m *Msg) bool { return string(m.Branch) == "top" }},
		{"two Vias in one header", "OPTIONS sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=one, SIP/2.0/UDP b;branch=two\r\n\r\n", true,
			func(m *Msg) bool { return string(m.Branch) == "one" }},
		{"display name with <", "INVITE sip:1@y SIP/2.0\r\nFrom: \"evil <sip:666@x>\" <sip:1002@y>;tag=1\r\n\r\n", true,
			func(m *Msg) bool { return string(m.FromUser) == "1002" }},
		{"folded header", "REGISTER sip:y SIP/2.0\r\nTo:\r\n <sip:2001@y>\r\nCall-ID: c\r\n\r\n", true,
			func(m *Msg) bool { return string(m.CallID) == "c" }},
		{"cut at snap length", "REGISTER sip:y SIP/2.0\r\nCall-ID: c\r\nUser-Agent: frie", true,
			func(m *Msg) bool { return m.Truncated && string(m.CallID) == "c" }},
		{"lower-case method is not SIP", "register sip:y SIP/2.0\r\n\r\n", false, nil},
		{"HTTP", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false, nil},
		{"bad status", "SIP/2.0 999 Nope\r\n\r\n", false, nil},
		{"status letters", "SIP/2.0 4x1 Nope\r\n\r\n", false, nil},
		{"binary", "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c", false, nil},
		{"huge CSeq", "INVITE sip:1@y SIP/2.0\r\nCSeq: 99999999999999999999 INVITE\r\n\r\n", true,
			func(m *Msg) bool { return m.CSeq == 0 && m.CSeqMeth == MethodNone }},
		{"tel URI", "INVITE tel:+442079460349;phone-context=x SIP/2.0\r\n\r\n", true,
			func(m *Msg) bool { return string(m.RUser) == "+442079460349" }},
		{"user:password", "INVITE sip:1001:secret@y SIP/2.0\r\n\r\n", true,
			func(m *Msg) bool { return string(m.RUser) == "1001" }},
		{"Proxy-Authorization", "INVITE sip:1@y SIP/2.0\r\nProxy-Authorization: Digest username=\"2001\",realm=\"r\"\r\n\r\n", true,
			func(m *Msg) bool { return m.Auth && string(m.AuthUser) == "2001" }},
	} {
		var m Msg
		ok := Parse([]byte(c.in), &m)
		if ok != c.ok || (ok && c.check != nil && !c.check(&m)) {
			t.Errorf("%s: ok=%v %+v", c.name, ok, m)
		}
	}
}

// TestPasswordGuessing: svcrack against alwaysauthreject=yes — every
// guess answered 401, nothing logged by Asterisk. One auth_failure per
// guess, from the IP header's address (the Via/From say 198.51.100.99).
func TestPasswordGuessing(t *testing.T) {
	var r recorder
	s := New(Config{}, r.emit)
	atk := netip.MustParseAddrPort("203.0.113.66:5070")
	for i := 0; i < 6; i++ {
		exchange(s, atk, req{method: "REGISTER", user: "1001", callid: fmt.Sprintf("crack-%d", i), cseq: 1, auth: "1001"}, 401, "Unauthorized", t0.Add(time.Duration(i)*time.Second))
	}
	if got := r.kinds("203.0.113.66"); got != "auth_failure auth_failure auth_failure auth_failure auth_failure auth_failure" {
		t.Fatalf("events: %q (all: %+v)", got, r.evs)
	}
	if r.kinds("198.51.100.99") != "" {
		t.Fatal("the forged Via/From address was named")
	}
	e := r.evs[0]
	if e.Account != "1001" || e.Detector != Detector || !e.Structured || e.Port != 5070 || !e.Time.Equal(t0.Add(time.Millisecond)) || e.Request != event.RequestKey([]byte("crack-0")) {
		t.Fatalf("event: %+v", e)
	}
}

// TestLegitPhone: challenge, one typo, then the right password: the typo
// counts once and the success says it is a phone.
func TestLegitPhone(t *testing.T) {
	var r recorder
	s := New(Config{}, r.emit)
	ph := netip.MustParseAddrPort("198.51.100.21:5060")
	exchange(s, ph, req{method: "REGISTER", user: "1002", callid: "p1", cseq: 1}, 401, "Unauthorized", t0)
	exchange(s, ph, req{method: "REGISTER", user: "1002", callid: "p1", cseq: 2, auth: "1002"}, 401, "Unauthorized", t0.Add(time.Second))
	exchange(s, ph, req{method: "REGISTER", user: "1002", callid: "p1", cseq: 3, auth: "1002"}, 200, "OK", t0.Add(5*time.Second))
	if got := r.kinds("198.51.100.21"); got != "challenge_sent auth_failure auth_success" {
		t.Fatalf("events %q", got)
	}
}

// TestEnumerationAndCalls: svwar against alwaysauthreject=no (404 for
// unknown users), an unauthenticated call to an international number
// refused by the PBX, and a carrier's answered INVITE.
func TestEnumerationAndCalls(t *testing.T) {
	var r recorder
	s := New(Config{}, r.emit)
	atk := netip.MustParseAddrPort("203.0.113.77:5060")
	for i := 0; i < 3; i++ {
		exchange(s, atk, req{method: "REGISTER", user: fmt.Sprint(100 + i), callid: fmt.Sprintf("war%d", i), cseq: 1}, 404, "Not Found", t0)
	}
	exchange(s, atk, req{method: "INVITE", user: "100", ruser: "011972599123456", callid: "inv", cseq: 1}, 404, "Not Found", t0)
	if got := r.kinds("203.0.113.77"); got != "unknown_account unknown_account unknown_account call_rejected" {
		t.Fatalf("events %q", got)
	}
	if e := r.evs[3]; e.Account != "011972599123456" {
		t.Errorf("call_rejected account %q", e.Account)
	}
	carrier := netip.MustParseAddrPort("203.0.113.250:5060")
	exchange(s, carrier, req{method: "INVITE", user: "+15551234567", ruser: "5551000", callid: "trunk1", cseq: 1}, 200, "OK", t0)
	if got := r.kinds("203.0.113.250"); got != "" {
		t.Fatalf("carrier events %q", got)
	}
}

func TestScannerFloodSweep(t *testing.T) {
	var r recorder
	s := New(Config{InviteRate: 5, OptionsPerMinute: 3}, r.emit)
	svmap := netip.MustParseAddrPort("203.0.113.45:5060")
	exchange(s, svmap, req{method: "OPTIONS", user: "100", callid: "s1", cseq: 1, ua: "friendly-scanner"}, 200, "OK", t0)
	exchange(s, svmap, req{method: "OPTIONS", user: "100", callid: "s2", cseq: 1, ua: "friendly-scanner"}, 200, "OK", t0.Add(time.Second))
	if got := r.kinds("203.0.113.45"); got != "scan" {
		t.Fatalf("svmap: %q", got)
	}
	flood := netip.MustParseAddrPort("[2001:db8::f1]:5060")
	for i := 0; i < 12; i++ {
		exchange(s, flood, req{method: "INVITE", user: "1", ruser: "2", callid: fmt.Sprintf("f%d", i), cseq: 1}, 0, "", t0.Add(time.Duration(i)*50*time.Millisecond))
	}
	if got := r.kinds("2001:db8::f1"); got != "scan" {
		t.Fatalf("flood: %q", got)
	}
	sweep := netip.MustParseAddrPort("203.0.113.46:5060")
	for i := 0; i < 5; i++ {
		exchange(s, sweep, req{method: "OPTIONS", user: fmt.Sprint(i), callid: fmt.Sprintf("o%d", i), cseq: 1}, 200, "OK", t0.Add(time.Duration(i)*time.Second))
	}
	if got := r.kinds("203.0.113.46"); got != "scan" {
		t.Fatalf("sweep: %q", got)
	}
}

// TestUnsolicitedAndExpiry: responses without a request name nobody;
// unanswered requests expire; the tables stay within their bounds.
func TestUnsolicitedAndExpiry(t *testing.T) {
	var r recorder
	s := New(Config{MaxTxns: 16, TxnTimeout: time.Second}, r.emit)
	victim := netip.MustParseAddrPort("198.51.100.22:5060")
	s.HandleIP(ipPacket(pbx, victim, response(401, "Unauthorized", "REGISTER", "nobody", 1, "zz")), t0)
	for i := 0; i < 100; i++ {
		exchange(s, netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 5060), req{method: "REGISTER", user: "1", callid: fmt.Sprint(i), cseq: 1, auth: "1"}, 0, "", t0)
	}
	if len(r.evs) != 0 || s.Stats.Unsolicited != 1 || s.txns.len() > 16 || s.Stats.Evicted != 84 {
		t.Fatalf("events %v, stats %+v, open %d", r.evs, s.Stats, s.txns.len())
	}
	s.HandleIP(ipPacket(netip.MustParseAddrPort("203.0.113.200:5060"), pbx, "OPTIONS sip:x@y SIP/2.0\r\nCall-ID: late\r\nCSeq: 1 OPTIONS\r\n\r\n"), t0.Add(2*time.Second))
	if s.txns.len() != 1 || s.Stats.Expired != 16 {
		t.Fatalf("after expiry: open %d, %+v", s.txns.len(), s.Stats)
	}
}

func TestTableDelete(t *testing.T) {
	tb := newTable[int](64)
	for k := uint64(1); k <= 64; k++ {
		v, _, _ := tb.put(k * 128) // all collide on the same home slot
		*v = int(k)
	}
	for k := uint64(1); k <= 64; k += 2 {
		if !tb.del(k * 128) {
			t.Fatalf("del %d", k)
		}
	}
	for k := uint64(1); k <= 64; k++ {
		v := tb.get(k * 128)
		if (k%2 == 1) != (v == nil) || (v != nil && *v != int(k)) {
			t.Fatalf("key %d after deletes: %v", k, v)
		}
	}
	if tb.len() != 32 {
		t.Fatalf("len %d", tb.len())
	}
}

// TestZeroAllocs: the packet path allocates nothing once accounts are
// interned.
func TestZeroAllocs(t *testing.T) {
	s := New(Config{}, func(*event.Event) {})
	atk := netip.MustParseAddrPort("203.0.113.66:5070")
	var pkts [][]byte
	for i := 0; i < 50; i++ {
		text, br := req{method: "REGISTER", user: "1001", callid: fmt.Sprintf("z%d", i), cseq: 1, auth: "1001", ua: "friendly-scanner"}.text()
		pkts = append(pkts, ipPacket(atk, pbx, text), ipPacket(pbx, atk, response(401, "Unauthorized", "REGISTER", fmt.Sprintf("z%d", i), 1, br)))
	}
	for _, p := range pkts {
		s.HandleIP(p, t0)
	}
	allocs := testing.AllocsPerRun(20, func() {
		for _, p := range pkts {
			s.HandleIP(p, t0)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per %d packets", allocs, len(pkts))
	}
}

func BenchmarkSensor(b *testing.B) {
	s := New(Config{}, func(*event.Event) {})
	atk := netip.MustParseAddrPort("203.0.113.66:5070")
	text, br := req{method: "REGISTER", user: "1001", callid: "bench", cseq: 1, auth: "1001", ua: "Zoiper"}.text()
	rq, rs := ipPacket(atk, pbx, text), ipPacket(pbx, atk, response(401, "Unauthorized", "REGISTER", "bench", 1, br))
	b.ReportAllocs()
	b.SetBytes(int64(len(rq) + len(rs)))
	for b.Loop() {
		s.HandleIP(rq, t0)
		s.HandleIP(rs, t0)
	}
}

func BenchmarkParse(b *testing.B) {
	text, _ := req{method: "INVITE", user: "1004", ruser: "011442079460349", callid: "bench", cseq: 1, auth: "1004", ua: "Zoiper"}.text()
	p := []byte(text)
	var m Msg
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		Parse(p, &m)
	}
}

func FuzzParse(f *testing.F) {
	t1, _ := req{method: "REGISTER", user: "1001", callid: "abc", cseq: 1, auth: "1001", ua: "x"}.text()
	f.Add([]byte(t1))
	f.Add([]byte(response(401, "Unauthorized", "REGISTER", "abc", 1, "b")))
	f.Add([]byte("INVITE tel:+1;x SIP/2.0\nv:a;branch=\"\nf:\"\\\"<\nCSeq: 4294967296 INVITE\nl: 99999999999\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Msg
		if !Parse(b, &m) {
			return
		}
		for _, s := range [][]byte{m.RURI, m.RUser, m.Branch, m.FromUser, m.ToUser, m.CallID, m.UserAgent, m.AuthUser} {
			if len(s) > len(b) {
				t.Fatalf("field longer than the packet")
			}
		}
	})
}

// FuzzSensor: any packet stream; the address of every event is one that
// sent a request in an IP header, never text from the packet.
func FuzzSensor(f *testing.F) {
	t1, br := req{method: "REGISTER", user: "1001", callid: "abc", cseq: 1, auth: "1001", ua: "x"}.text()
	f.Add([]byte(t1), []byte(response(401, "Unauthorized", "REGISTER", "abc", 1, br)), byte(7))
	f.Fuzz(func(t *testing.T, a, b []byte, last byte) {
		src := netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, last}), 5060)
		s := New(Config{MaxTxns: 16, MaxSources: 16}, func(e *event.Event) {
			if e.Addr != src.Addr() {
				t.Fatalf("event names %v, the only requester is %v", e.Addr, src.Addr())
			}
		})
		s.HandleIP(ipPacket(src, pbx, string(a)), t0)
		s.HandleIP(ipPacket(pbx, src, string(b)), t0)
	})
}

// FuzzDecodeIP: any bytes as an IP packet; a decoded payload always lies
// inside the packet.
func FuzzDecodeIP(f *testing.F) {
	t1, _ := req{method: "REGISTER", user: "1001", callid: "abc", cseq: 1}.text()
	f.Add(ipPacket(netip.MustParseAddrPort("203.0.113.1:5060"), pbx, t1))
	f.Add(ipPacket(netip.MustParseAddrPort("[2001:db8::1]:5060"), netip.MustParseAddrPort("[2001:db8::2]:5060"), t1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Packet
		if DecodeIP(b, &p) && len(p.Payload) > len(b) {
			t.Fatal("payload longer than the packet")
		}
		s := New(Config{MaxTxns: 16, MaxSources: 16}, nil)
		s.HandleIP(b, t0)
	})
}
