package sensor

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Detector is the name on every event the sensor makes.
const Detector = "sip-sensor"

// Config is the sensor's judgement and its bounds. Zero fields take the
// defaults in brackets.
type Config struct {
	UDPPorts []uint16 // the PBX's SIP ports over UDP [5060]
	TCPPorts []uint16 // over TCP [5060]
	// TxnTimeout is how long a request waits for the PBX's final answer
	// [32s, SIP's timer B/F].
	TxnTimeout time.Duration
	MaxTxns    int // open transactions kept [16384]
	MaxSources int // sources with rate state kept [16384]
	// InviteRate is the INVITEs per second from one source that make a
	// flood [20]; OptionsPerMinute the credential-less OPTIONS per minute
	// that make a sweep [30].
	InviteRate       int
	OptionsPerMinute int
}

func (c Config) withDefaults() Config {
	if len(c.UDPPorts) == 0 {
		c.UDPPorts = []uint16{5060}
	}
	if len(c.TCPPorts) == 0 {
		c.TCPPorts = []uint16{5060}
	}
	if c.TxnTimeout <= 0 {
		c.TxnTimeout = 32 * time.Second
	}
	if c.MaxTxns <= 0 {
		c.MaxTxns = 16384
	}
	if c.MaxSources <= 0 {
		c.MaxSources = 16384
	}
	if c.InviteRate <= 0 {
		c.InviteRate = 20
	}
	if c.OptionsPerMinute <= 0 {
		c.OptionsPerMinute = 30
	}
	return c
}

// Stats are the sensor's counters (read by the owner's goroutine, or
// copied under its lock).
type Stats struct {
	Packets      uint64 // packets handed in
	Parsed       uint64 // SIP messages parsed
	NotSIP       uint64 // packets on the SIP ports that were not SIP
	Requests     uint64
	Responses    uint64
	Matched      uint64 // final responses paired with a request
	Expired      uint64 // requests never answered within TxnTimeout
	Evicted      uint64 // requests dropped because MaxTxns was reached
	OpenTxns     int
	Events       [event.NumKinds]uint64
	Unsolicited  uint64 // responses with no request seen
	TCPNoPayload uint64
}

type txn struct {
	src     netip.AddrPort
	at      time.Time
	method  Method
	auth    bool
	account string // interned
	dialled string // interned request-URI user (INVITE)
	request uint64 // event.RequestKey of the Call-ID: pairs the wire's event with the log's
}

type source struct {
	addr       netip.Addr
	lastScan   time.Time
	inviteSec  int64
	invites    int
	lastFlood  int64
	optMin     int64
	options    int
	lastOptHit int64
}

// Sensor pairs requests with answers and judges them. It is not safe for
// concurrent use: one goroutine feeds it (the tap's).
type Sensor struct {
	cfg     Config
	emit    func(*event.Event)
	txns    *table[txn]
	sources *table[source]
	intern  interner
	msg     Msg
	pkt     Packet
	ev      event.Event
	Stats   Stats
	udp     [8]uint16
	tcp     [8]uint16
	nudp    int
	ntcp    int
}

// New makes a sensor that hands each event to emit (the event is valid
// only during the call).
func New(cfg Config, emit func(*event.Event)) *Sensor {
	cfg = cfg.withDefaults()
	s := &Sensor{cfg: cfg, emit: emit, txns: newTable[txn](cfg.MaxTxns), sources: newTable[source](cfg.MaxSources), intern: newInterner(4096)}
	for _, p := range cfg.UDPPorts {
		if s.nudp < len(s.udp) {
			s.udp[s.nudp] = p
			s.nudp++
		}
	}
	for _, p := range cfg.TCPPorts {
		if s.ntcp < len(s.tcp) {
			s.tcp[s.ntcp] = p
			s.ntcp++
		}
	}
	return s
}

func (s *Sensor) sipPort(proto Proto, port uint16) bool {
	ports, n := s.udp[:s.nudp], s.nudp
	if proto == TCP {
		ports, n = s.tcp[:s.ntcp], s.ntcp
	}
	for i := 0; i < n; i++ {
		if ports[i] == port {
			return true
		}
	}
	return false
}

// HandleIP takes one IP packet (as NFLOG or a raw pcap gives it) seen at t.
func (s *Sensor) HandleIP(b []byte, t time.Time) {
	s.Stats.Packets++
	if !DecodeIP(b, &s.pkt) {
		return
	}
	s.handle(&s.pkt, t)
}

// HandlePacket takes a decoded packet.
func (s *Sensor) HandlePacket(p *Packet, t time.Time) {
	s.Stats.Packets++
	s.handle(p, t)
}

func (s *Sensor) handle(p *Packet, t time.Time) {
	toPBX := s.sipPort(p.Proto, p.Dst.Port())
	fromPBX := s.sipPort(p.Proto, p.Src.Port())
	if !toPBX && !fromPBX {
		return
	}
	if len(p.Payload) == 0 {
		if p.Proto == TCP {
			s.Stats.TCPNoPayload++
		}
		return
	}
	if !Parse(p.Payload, &s.msg) {
		s.Stats.NotSIP++
		return
	}
	s.Stats.Parsed++
	s.expire(t)
	m := &s.msg
	switch {
	case m.Request && toPBX:
		s.Stats.Requests++
		s.request(p.Src, m, t)
	case !m.Request && fromPBX:
		s.Stats.Responses++
		s.response(m, t)
	}
	s.Stats.OpenTxns = s.txns.len()
}

func txnKey(m *Msg) uint64 {
	return uint64(fnvOffset.bytes(m.CallID).byte(0).u32(m.CSeq).byte(byte(m.CSeqMeth)).byte(0).bytes(m.Branch))
}

func addrKey(a netip.Addr) uint64 {
	b := a.As16()
	return uint64(fnvOffset.bytes(b[:]))
}

func (s *Sensor) request(src netip.AddrPort, m *Msg, t time.Time) {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	if isScanner(m.UserAgent) {
		st := s.source(src.Addr())
		if t.Sub(st.lastScan) >= 10*time.Second {
			st.lastScan = t
			s.fire(src, t, event.Scan, s.intern.get(m.UserAgent, 64), "scanner User-Agent")
		}
	}
	switch m.Method {
	case MethodInvite:
		st := s.source(src.Addr())
		sec := t.Unix()
		if st.inviteSec != sec {
			st.inviteSec, st.invites = sec, 0
		}
		st.invites++
		if st.invites > s.cfg.InviteRate && st.lastFlood != sec {
			st.lastFlood = sec
			s.fire(src, t, event.Scan, s.intern.get(m.FromUser, 64), "INVITE flood")
		}
	case MethodOptions:
		if !m.Auth {
			st := s.source(src.Addr())
			min := t.Unix() / 60
			if st.optMin != min {
				st.optMin, st.options = min, 0
			}
			st.options++
			if st.options > s.cfg.OptionsPerMinute && st.lastOptHit != min {
				st.lastOptHit = min
				s.fire(src, t, event.Scan, "", "OPTIONS sweep")
			}
		}
	}
	switch m.Method {
	case MethodRegister, MethodInvite, MethodSubscribe, MethodMessage, MethodOptions, MethodPublish:
	default:
		return
	}
	if len(m.CallID) == 0 || m.CSeqMeth != m.Method {
		return
	}
	tx, _, evicted := s.txns.put(txnKey(m))
	if evicted {
		s.Stats.Evicted++
	}
	tx.src, tx.at, tx.method, tx.auth = src, t, m.Method, m.Auth
	acct := m.AuthUser
	if len(acct) == 0 {
		if m.Method == MethodRegister {
			acct = m.ToUser
		} else {
			acct = m.FromUser
		}
	}
	tx.account = s.intern.get(acct, 64)
	tx.request = event.RequestKey(m.CallID)
	tx.dialled = ""
	if m.Method == MethodInvite {
		tx.dialled = s.intern.get(m.RUser, 64)
	}
}

func (s *Sensor) response(m *Msg, t time.Time) {
	if m.Status < 200 {
		return
	}
	k := txnKey(m)
	tx := s.txns.get(k)
	if tx == nil {
		s.Stats.Unsolicited++
		return
	}
	s.Stats.Matched++
	tr := *tx
	s.txns.del(k)
	s.judge(&tr, m.Status, t)
}

// judge turns a request and the PBX's final answer into an event.
func (s *Sensor) judge(tx *txn, status int, t time.Time) {
	switch {
	case status == 401 || status == 407:
		if tx.auth {
			s.fireReq(tx.src, t, event.AuthFailure, tx.account, "credentials refused (401/407)", tx.request)
		} else if tx.method == MethodRegister || tx.method == MethodInvite || tx.method == MethodSubscribe || tx.method == MethodMessage {
			s.fireReq(tx.src, t, event.ChallengeSent, tx.account, "challenged", tx.request)
		}
	case status == 403:
		if tx.auth {
			s.fireReq(tx.src, t, event.AuthFailure, tx.account, "credentials refused (403)", tx.request)
		} else if tx.method != MethodOptions {
			s.fireReq(tx.src, t, event.UnknownAccount, tx.account, "forbidden (403)", tx.request)
		}
	case status == 404 || status == 484 || status == 604:
		switch tx.method {
		case MethodInvite:
			s.fireReq(tx.src, t, event.CallRejected, tx.dialled, "no route (404)", tx.request)
		case MethodRegister, MethodSubscribe:
			s.fireReq(tx.src, t, event.UnknownAccount, tx.account, "no such user (404)", tx.request)
		}
	case status >= 200 && status < 300:
		if tx.auth && (tx.method == MethodRegister || tx.method == MethodInvite) {
			s.fireReq(tx.src, t, event.AuthSuccess, tx.account, "accepted", tx.request)
		}
	}
}

func (s *Sensor) fire(src netip.AddrPort, t time.Time, k event.Kind, account, detail string) {
	s.fireReq(src, t, k, account, detail, 0)
}

func (s *Sensor) fireReq(src netip.AddrPort, t time.Time, k event.Kind, account, detail string, req uint64) {
	ev := &s.ev
	*ev = event.Event{Time: t, Addr: src.Addr(), Port: src.Port(), Service: event.ServiceSIP, Kind: k,
		Account: account, Detail: detail, Detector: Detector, Structured: true, Wire: true, Request: req}
	s.Stats.Events[k]++
	if s.emit != nil {
		s.emit(ev)
	}
}

func (s *Sensor) source(a netip.Addr) *source {
	st, created, _ := s.sources.put(addrKey(a))
	if created {
		st.addr = a
	}
	return st
}

// expire drops requests that were never answered within TxnTimeout.
func (s *Sensor) expire(now time.Time) {
	for {
		k, tx, ok := s.txns.oldest()
		if !ok || now.Sub(tx.at) < s.cfg.TxnTimeout {
			return
		}
		s.txns.del(k)
		s.Stats.Expired++
	}
}

// scannerAgents are User-Agent fragments only attack tools send
// (lower case).
var scannerAgents = [][]byte{
	[]byte("friendly-scanner"), []byte("sipvicious"), []byte("sipcli"), []byte("sip-scan"), []byte("sipsak"),
	[]byte("vaxsipuseragent"), []byte("sundayddr"), []byte("iwar"), []byte("smap"), []byte("pplsip"),
	[]byte("sip auditor"), []byte("voip-scanner"), []byte("sipscan"), []byte("scanner"),
}

func isScanner(ua []byte) bool {
	if len(ua) == 0 {
		return false
	}
	var buf [256]byte
	n := copy(buf[:], ua)
	lower := buf[:n]
	for i, c := range lower {
		if 'A' <= c && c <= 'Z' {
			lower[i] = c + 'a' - 'A'
		}
	}
	for _, sig := range scannerAgents {
		if bytes.Contains(lower, sig) {
			return true
		}
	}
	return false
}

// interner shares one string per distinct (short, printable) value, so an
// account seen on many packets costs one allocation; bounded.
type interner struct {
	m   map[string]string
	max int
}

func newInterner(max int) interner { return interner{m: make(map[string]string, 256), max: max} }

func (in *interner) get(b []byte, limit int) string {
	if len(b) == 0 || len(b) > limit {
		return ""
	}
	for _, c := range b {
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return "" // attacker text with control bytes or quotes: not kept
		}
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if len(in.m) >= in.max {
		clear(in.m)
	}
	s := string(b)
	in.m[s] = s
	return s
}
