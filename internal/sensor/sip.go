// Package sensor sees what Asterisk never logs: SIP requests on the wire and
// the PBX's answers to them. It parses each packet's SIP start line and the
// few headers needed (without allocating), pairs requests with the PBX's
// final responses (Call-ID, CSeq and the top Via branch), and judges the
// outcome per source address into event.Events for the ordinary jails.
//
// The address always comes from the IP header, never from SIP text: a Via,
// From or Contact an attacker wrote names nobody. Everything read from the
// SIP text (users, User-Agent) is data for the event's Account and Detail
// only, bounded and interned.
//
// The package is pure: packets in, events out, time from the packet. The
// kernel tap (tap_linux.go) and the pcap reader (pcap.go) feed it.
package sensor

import "bytes"

// Method is a SIP request method the sensor tells apart.
type Method uint8

// Methods. MethodOther is any other token.
const (
	MethodNone Method = iota
	MethodRegister
	MethodInvite
	MethodOptions
	MethodAck
	MethodCancel
	MethodBye
	MethodSubscribe
	MethodNotify
	MethodMessage
	MethodInfo
	MethodPublish
	MethodRefer
	MethodUpdate
	MethodPrack
	MethodOther
)

var methodNames = [...]string{"", "REGISTER", "INVITE", "OPTIONS", "ACK", "CANCEL", "BYE", "SUBSCRIBE", "NOTIFY", "MESSAGE", "INFO", "PUBLISH", "REFER", "UPDATE", "PRACK", "OTHER"}

func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return "OTHER"
}

func parseMethod(b []byte) Method {
	for i := MethodRegister; i < MethodOther; i++ {
		if string(b) == methodNames[i] {
			return i
		}
	}
	if len(b) == 0 {
		return MethodNone
	}
	return MethodOther
}

// Msg is one parsed SIP message. Every []byte field is a sub-slice of the
// packet: valid only as long as the packet's buffer is.
type Msg struct {
	Request bool
	Method  Method // request method (for a response: the CSeq method)
	Status  int    // response status code; 0 for a request
	RURI    []byte // request URI
	RUser   []byte // user part of the request URI

	Branch    []byte // branch parameter of the top Via
	FromUser  []byte
	ToUser    []byte
	CallID    []byte
	CSeq      uint32
	CSeqMeth  Method
	UserAgent []byte
	Auth      bool   // an Authorization or Proxy-Authorization header is present
	AuthUser  []byte // its username="…" parameter
	ContentLn int    // -1 when absent
	Truncated bool   // the headers did not end inside the packet (snap length)
}

// Reset clears m for reuse.
func (m *Msg) Reset() { *m = Msg{ContentLn: -1} }

var sipVersion = []byte("SIP/2.0")

// Parse reads a SIP message from p into m. It returns false for anything
// that is not a SIP request or response start line; headers it cannot read
// are skipped, never guessed. It allocates nothing.
func Parse(p []byte, m *Msg) bool {
	m.Reset()
	line, rest := cutLine(p)
	if len(line) < 12 {
		return false
	}
	if bytes.HasPrefix(line, sipVersion) {
		// SIP/2.0 SP 3DIGIT SP reason
		if len(line) < 11 || line[7] != ' ' {
			return false
		}
		code := 0
		for i := 8; i < 11; i++ {
			c := line[i]
			if c < '0' || c > '9' {
				return false
			}
			code = code*10 + int(c-'0')
		}
		if code < 100 || code > 699 || (len(line) > 11 && line[11] != ' ') {
			return false
		}
		m.Status = code
	} else {
		sp := bytes.IndexByte(line, ' ')
		if sp <= 0 || sp > 16 || !isToken(line[:sp]) {
			return false
		}
		rs := bytes.LastIndexByte(line, ' ')
		if rs <= sp || !bytes.Equal(line[rs+1:], sipVersion) {
			return false
		}
		m.Request = true
		m.Method = parseMethod(line[:sp])
		m.RURI = line[sp+1 : rs]
		m.RUser = uriUser(m.RURI)
	}
	sawVia, sawEnd := false, false
	for len(rest) > 0 {
		var h []byte
		h, rest = cutLine(rest)
		if len(h) == 0 {
			sawEnd = true
			break
		}
		// Folded continuation lines (RFC 3261 7.3.1) belong to the header
		// before; the values used here never need them, so they are skipped.
		for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
			_, rest = cutLine(rest)
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimRight(h[:colon], " \t")
		val := bytes.TrimSpace(h[colon+1:])
		switch {
		case headerIs(name, "via", "v"):
			if !sawVia {
				sawVia = true
				m.Branch = param(firstValue(val), "branch")
			}
		case headerIs(name, "from", "f"):
			m.FromUser = uriUser(nameAddrURI(val))
		case headerIs(name, "to", "t"):
			m.ToUser = uriUser(nameAddrURI(val))
		case headerIs(name, "call-id", "i"):
			m.CallID = val
		case headerIs(name, "cseq", ""):
			n, meth, ok := parseCSeq(val)
			if ok {
				m.CSeq, m.CSeqMeth = n, meth
			}
		case headerIs(name, "user-agent", ""):
			m.UserAgent = val
		case headerIs(name, "authorization", "") || headerIs(name, "proxy-authorization", ""):
			m.Auth = true
			if u := param(val, "username"); len(u) > 0 {
				m.AuthUser = unquote(u)
			}
		case headerIs(name, "content-length", "l"):
			m.ContentLn = atoi(val)
		}
	}
	m.Truncated = !sawEnd
	if !m.Request {
		m.Method = m.CSeqMeth
	}
	return true
}

// cutLine splits at the first LF (a CR before it is dropped).
func cutLine(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, rest
}

func isToken(b []byte) bool {
	for _, c := range b {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return len(b) > 0
}

// headerIs compares a header name case-insensitively with its long and
// compact ("" = none) forms.
func headerIs(name []byte, long, compact string) bool {
	if len(name) == len(long) && equalFold(name, long) {
		return true
	}
	return compact != "" && len(name) == 1 && (name[0]|0x20) == compact[0]
}

func equalFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// firstValue is the first of comma-separated header values (outside <> and quotes).
func firstValue(v []byte) []byte {
	inQ, inA := false, false
	for i, c := range v {
		switch {
		case c == '"' && !inA:
			inQ = !inQ
		case c == '<' && !inQ:
			inA = true
		case c == '>' && !inQ:
			inA = false
		case c == ',' && !inQ && !inA:
			return v[:i]
		}
	}
	return v
}

// param finds ;name=value (or name=value in an Authorization list) in v,
// case-insensitively, and returns the raw value.
func param(v []byte, name string) []byte {
	for i := 0; i+len(name) < len(v); i++ {
		if i > 0 {
			p := v[i-1]
			if p != ';' && p != ' ' && p != ',' && p != '\t' {
				continue
			}
		}
		if !equalFold(v[i:i+len(name)], name) {
			continue
		}
		j := i + len(name)
		for j < len(v) && v[j] == ' ' {
			j++
		}
		if j >= len(v) || v[j] != '=' {
			continue
		}
		j++
		for j < len(v) && v[j] == ' ' {
			j++
		}
		start := j
		if j < len(v) && v[j] == '"' {
			k := bytes.IndexByte(v[j+1:], '"')
			if k < 0 {
				return v[start:]
			}
			return v[start : j+2+k]
		}
		for j < len(v) && v[j] != ';' && v[j] != ',' && v[j] != ' ' && v[j] != '>' {
			j++
		}
		return v[start:j]
	}
	return nil
}

func unquote(b []byte) []byte {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		return b[1 : len(b)-1]
	}
	return b
}

// nameAddrURI returns the URI of a name-addr ("Name" <sip:u@h>;tag=x) or an
// addr-spec (sip:u@h;tag=x).
func nameAddrURI(v []byte) []byte {
	// Skip a quoted display name: a '<' inside it is not the URI.
	i := 0
	if len(v) > 0 && v[0] == '"' {
		for i = 1; i < len(v); i++ {
			if v[i] == '\\' {
				i++
				continue
			}
			if v[i] == '"' {
				i++
				break
			}
		}
		if i > len(v) {
			i = len(v)
		}
	}
	if lt := bytes.IndexByte(v[i:], '<'); lt >= 0 {
		u := v[i+lt+1:]
		if gt := bytes.IndexByte(u, '>'); gt >= 0 {
			return u[:gt]
		}
		return u
	}
	u := v[i:]
	if sc := bytes.IndexByte(u, ';'); sc >= 0 {
		u = u[:sc]
	}
	return u
}

// uriUser is the user part of a sip:, sips: or tel: URI (nil if none).
func uriUser(u []byte) []byte {
	switch {
	case len(u) >= 4 && equalFold(u[:4], "sip:"):
		u = u[4:]
	case len(u) >= 5 && equalFold(u[:5], "sips:"):
		u = u[5:]
	case len(u) >= 4 && equalFold(u[:4], "tel:"):
		u = u[4:]
		if i := bytes.IndexByte(u, ';'); i >= 0 {
			u = u[:i]
		}
		return u
	default:
		return nil
	}
	at := bytes.IndexByte(u, '@')
	if at < 0 {
		return nil
	}
	u = u[:at]
	if i := bytes.IndexByte(u, ':'); i >= 0 { // user:password
		u = u[:i]
	}
	if i := bytes.IndexByte(u, ';'); i >= 0 { // user parameters
		u = u[:i]
	}
	return u
}

func parseCSeq(v []byte) (uint32, Method, bool) {
	var n uint64
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		n = n*10 + uint64(v[i]-'0')
		if n > 1<<31 {
			return 0, 0, false
		}
		i++
	}
	if i == 0 {
		return 0, 0, false
	}
	m := bytes.TrimSpace(v[i:])
	return uint32(n), parseMethod(m), len(m) > 0
}

func atoi(v []byte) int {
	n := 0
	if len(v) == 0 {
		return -1
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
		if n > 1<<24 {
			return -1
		}
	}
	return n
}
