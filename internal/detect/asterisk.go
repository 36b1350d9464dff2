package detect

import (
	"bytes"
	"net/netip"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// The asterisk detector reads every attack line Asterisk 13–22 writes to its
// log files (logger.conf file channels, default and custom dateformats, the
// "plain" formatter's "file:line function:" form) or to syslog/journald.
//
// # Where the address comes from
//
// Asterisk formats its notices with printf: some fields are written by the
// server (the source address, the reason, the security event's RemoteAddress)
// and some are copied from the request (From header, Call-ID, method,
// extension, user names, SessionID, digest response). The attacker controls
// the latter completely — quotes, "failed for '6.6.6.6:5060' (callid:",
// `",RemoteAddress="IPV4/UDP/6.6.6.6/1"` and more. So the address is never
// found by a left-to-right search for a marker. Each line shape is parsed
// knowing which fields are attacker text:
//
//   - When every field on one side of the address is server text, the line
//     is parsed from that side (chan_sip "Registration from" is read from
//     its end: reason, then the quoted address; AMI and IAX2 lines name the
//     address first and are read from the start).
//   - When the address sits between two attacker fields (res_pjsip "Request
//     'M' from 'F' failed for 'A' (callid: C) - R", chan_sip "Call from 'N'
//     (A) to extension 'E' rejected …"), the detector counts every place in
//     the line where a complete, well-formed "<marker>ADDR<marker>" occurs.
//     The server always writes exactly one; if there is exactly one, it is
//     the server's. If there are several, the line is ambiguous: the
//     detector reports kind injection_suspect with no address, never a
//     guess.
//   - SecurityEvent lines (res_security_log) are key="value" lists whose
//     order is fixed by Asterisk (main/security_events.c: common fields,
//     then event fields, then optional Module/SessionTV/…). AccountID and
//     SessionID always come before RemoteAddress; Response, ReceivedHash,
//     ReceivedChallenge, RequestType, RequestParams and AuthMethod come
//     after it in some event types. A RemoteAddress candidate must be a
//     complete `",RemoteAddress="IPV4|IPV6/TRANSPORT/ADDR/PORT"` followed by
//     `,` or the end of the line. One candidate: it is the server's. Several:
//     for event types whose fields after RemoteAddress are all server-written
//     (InvalidAccountID, FailedACL, ChallengeSent, SuccessfulAuth,
//     UnexpectedAddress, InvalidTransport) the last candidate followed only
//     by well-formed server fields is the real one (attacker text lies
//     entirely to its left); otherwise the line is injection_suspect.
//
// # An attacker who makes every line ambiguous is still caught
//
// Filling the From header or the Call-ID with a forged "failed for '…'"
// turns every res_pjsip NOTICE of that attacker into injection_suspect. But
// the same request also produces a security event (InvalidAccountID for an
// unknown user, FailedACL, ChallengeSent before any digest check), and in
// those the forged text sits in AccountID/SessionID, to the left of the real
// RemoteAddress, with only server-written fields to its right: the "last
// candidate" rule resolves them. A ChallengeResponseFailed event is
// ambiguous only if the digest response itself carries a forged field, and
// both pjsip and chan_sip parse the response as a quoted string, which cannot
// contain a bare double quote. So a deployment that reads the security log
// (logger.conf `security => security`, or the syslog channel with the
// security level) keeps attributing every attempt to its true source;
// injection_suspect events are counted and shown (pbxguard test-log) so the
// administrator sees the attempt too.
//
// A line can only be forged whole if attacker text could contain a newline.
// SIP and AMI framing end a header or field at CR/LF, so none of the fields
// above can; the header parser also requires the server-written prefix
// (level, thread id, source file) at the start of each line.
type asteriskDetector struct {
	clock  lineClock
	intern interner
}

func newAsterisk(o Options) Detector {
	return &asteriskDetector{clock: newLineClock(o), intern: newInterner(4096)}
}

// Name implements Detector.
func (d *asteriskDetector) Name() string { return "asterisk" }

// log levels, as far as the detector cares.
const (
	lvOther = iota
	lvNotice
	lvWarning
	lvError
	lvSecurity
	lvVerbose
)

// astHeader is the server-written prefix of a line.
type astHeader struct {
	level  int
	module []byte
	msg    []byte
	date   []byte // timestamp text, nil when the line has none
}

// hit is what a message parser found.
type hit struct {
	kind    event.Kind
	svc     event.Service
	addr    netip.Addr
	port    uint16
	account []byte
	detail  string
	from    []byte // attacker text to look for scanner signatures in
}

// Detect implements Detector.
func (d *asteriskDetector) Detect(line []byte, ev *event.Event) bool {
	var h astHeader
	if !parseAsteriskHeader(line, &h) {
		return false
	}
	if h.level == lvOther || h.level == lvVerbose {
		return false
	}
	var r hit
	if !dispatchAsterisk(&h, &r) {
		return false
	}
	d.fill(&h, &r, ev, "asterisk")
	return true
}

func (d *asteriskDetector) fill(h *astHeader, r *hit, ev *event.Event, name string) {
	if r.kind.IsFailure() && len(r.from) > 0 && hasScannerSignature(r.from) {
		r.kind = event.Scan
	}
	*ev = event.Event{
		Time:     d.lineTime(h.date),
		Addr:     r.addr,
		Port:     r.port,
		Service:  r.svc,
		Kind:     r.kind,
		Account:  d.intern.get(r.account),
		Detail:   r.detail,
		Detector: name,
	}
	if r.kind == event.InjectionSuspect {
		ev.Addr, ev.Port = netip.Addr{}, 0
	}
}

func (d *asteriskDetector) lineTime(date []byte) time.Time {
	if len(date) > 0 {
		var s stamp
		if _, ok := parseAnyStamp(date, &s); ok {
			return d.clock.resolve(&s)
		}
	}
	return d.clock.now()
}

// parseAsteriskHeader reads the server-written prefix:
//
//	[DATE] LEVEL[LWP][C-xxxxxxxx] file.c: MSG                       (file channel)
//	[DATE] LEVEL[LWP][C-xxxxxxxx]: file.c:123 function: MSG         (plain formatter)
//	Mmm dd HH:MM:SS host asterisk[PID]: LEVEL[LWP]: file.c:123 in function: MSG (syslog)
//	host asterisk[PID]: [DATE] LEVEL[LWP]: ...                      (journal with stamp)
//	LEVEL[LWP]: file.c:123 function: MSG                            (journal message)
func parseAsteriskHeader(line []byte, h *astHeader) bool {
	line = trimRightSpace(line)
	i := 0
	n := len(line)
	if n < 12 {
		return false
	}
	if line[0] == '[' {
		j := indexByteFrom(line, 1, ']')
		if j < 0 || j > 48 {
			return false
		}
		h.date = line[1:j]
		i = skipSpaces(line, j+1)
	} else if lv, _ := matchLevel(line); lv == lvOther {
		// syslog / journal prefix: optional stamp, host, program[pid]:
		var s stamp
		if k, ok := parseAnyStamp(line, &s); ok {
			h.date = line[:k]
			i = skipSpaces(line, k)
		}
		// host and program tokens (program ends with ':').
		if lv2, _ := matchLevel(line[i:]); lv2 == lvOther {
			sp := indexByteFrom(line, i, ' ')
			if sp < 0 {
				return false
			}
			i = sp + 1
			if lv3, _ := matchLevel(line[i:]); lv3 == lvOther {
				// the program must be Asterisk: another daemon's message
				// (sshd's "Invalid user …") may carry attacker text.
				sp = indexByteFrom(line, i, ' ')
				if sp < 1 || line[sp-1] != ':' || !hasPrefix(line[i:], "asterisk") {
					return false
				}
				i = sp + 1
			}
		}
		if i < n && line[i] == '[' {
			j := indexByteFrom(line, i+1, ']')
			if j < 0 || j-i > 48 {
				return false
			}
			if h.date == nil {
				h.date = line[i+1 : j]
			}
			i = skipSpaces(line, j+1)
		}
	}
	lv, k := matchLevel(line[i:])
	if lv == lvOther {
		return false
	}
	h.level = lv
	if lv == lvVerbose {
		return true
	}
	i += k
	if i < n && line[i] == ' ' {
		i++
	}
	if i >= n || line[i] != '[' {
		return false
	}
	j := indexByteFrom(line, i+1, ']')
	if j < 0 || j-i > 24 {
		return false
	}
	i = j + 1
	if i+2 < n && line[i] == '[' && line[i+1] == 'C' && line[i+2] == '-' {
		j = indexByteFrom(line, i, ']')
		if j < 0 || j-i > 24 {
			return false
		}
		i = j + 1
	}
	if i < n && line[i] == ':' {
		i++
	}
	if i >= n || line[i] != ' ' {
		return false
	}
	i++
	// module: "file.c" then ": " or ":123 [in ]function: "
	c := indexByteFrom(line, i, ':')
	if c < 0 || c-i > 64 || c == i {
		return false
	}
	h.module = line[i:c]
	i = c + 1
	if i < n && line[i] >= '0' && line[i] <= '9' {
		for i < n && line[i] >= '0' && line[i] <= '9' {
			i++
		}
		if i < n && line[i] == ' ' {
			c = indexByteFrom(line, i, ':')
			if c < 0 || c-i > 96 {
				return false
			}
			i = c + 1
		}
	}
	h.msg = trimLeftSpace(line[i:])
	return true
}

func indexByteFrom(b []byte, from int, c byte) int {
	if from >= len(b) {
		return -1
	}
	i := bytes.IndexByte(b[from:], c)
	if i < 0 {
		return -1
	}
	return from + i
}

func skipSpaces(b []byte, i int) int {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	return i
}

// matchLevel recognises Asterisk's level names at the start of b.
func matchLevel(b []byte) (int, int) {
	if len(b) < 5 {
		return lvOther, 0
	}
	switch b[0] {
	case 'N':
		if hasPrefix(b, "NOTICE") {
			return lvNotice, 6
		}
	case 'W':
		if hasPrefix(b, "WARNING") {
			return lvWarning, 7
		}
	case 'E':
		if hasPrefix(b, "ERROR") {
			return lvError, 5
		}
	case 'S':
		if hasPrefix(b, "SECURITY") {
			return lvSecurity, 8
		}
	case 'V':
		if hasPrefix(b, "VERBOSE") {
			return lvVerbose, 7
		}
	case 'D':
		if hasPrefix(b, "DEBUG") {
			return lvVerbose, 5
		}
		if hasPrefix(b, "DTMF") {
			return lvVerbose, 4
		}
	}
	return lvOther, 0
}

// dispatchAsterisk routes on the source file, then on the message's first
// words.
func dispatchAsterisk(h *astHeader, r *hit) bool {
	msg := h.msg
	if len(msg) == 0 {
		return false
	}
	switch string(h.module) {
	case "res_pjsip/pjsip_distributor.c", "pjsip_distributor.c":
		return pjsipRequest(msg, r)
	case "res_pjsip_session.c":
		return callRejected(msg, r, event.ServicePJSIP)
	case "res_security_log.c":
		return securityEvent(msg, r)
	case "manager.c":
		return amiAuth(msg, r)
	case "acl.c":
		return aclReject(msg, r)
	case "chan_iax2.c":
		return iax2(msg, r)
	case "chan_sip.c":
		return chanSIP(msg, r)
	}
	if hasPrefix(h.module, "Ext. ") {
		return dialplanLog(msg, r)
	}
	// Unknown or renamed source file: route on the message itself.
	switch msg[0] {
	case 'R':
		if hasPrefix(msg, "Registration from '") {
			return chanSIP(msg, r)
		}
		if hasPrefix(msg, "Request ") {
			return pjsipRequest(msg, r)
		}
	case 'C':
		if hasPrefix(msg, "Call from '") {
			return callRejected(msg, r, event.ServiceSIP)
		}
	case 'S':
		if hasPrefix(msg, "SecurityEvent=\"") {
			return securityEvent(msg, r)
		}
	case 'h':
		return chanSIP(msg, r)
	case 'H', 'N':
		return iax2(msg, r)
	}
	return false
}

// ---- chan_sip ----

type reason struct {
	text string
	kind event.Kind
}

// chan_sip handle_request_register: "Registration from '%s' failed for '%s' - %s".
var sipRegReasons = [...]reason{
	{"Wrong password", event.AuthFailure},
	{"Username/auth name mismatch", event.AuthFailure},
	{"No matching peer found", event.UnknownAccount},
	{"Not a local domain", event.UnknownAccount},
	{"Device does not match ACL", event.ACLViolation},
	{"ACL error (permit/deny)", event.ACLViolation},
	{"Peer is not supposed to register", event.BadRequest},
	{"Device not configured to use this transport type", event.BadRequest},
}

func chanSIP(msg []byte, r *hit) bool {
	r.svc = event.ServiceSIP
	switch {
	case hasPrefix(msg, "Registration from '"):
		return sipRegistration(msg, r)
	case hasPrefix(msg, "Call from '"):
		return callRejected(msg, r, event.ServiceSIP)
	case hasPrefix(msg, "hacking attempt detected '"):
		// chan_sip (1.8–11): the quoted text is the source address only.
		a := msg[len("hacking attempt detected '"):]
		if len(a) < 2 || a[len(a)-1] != '\'' {
			return false
		}
		return setAddr(r, a[:len(a)-1], event.BadRequest, "hacking attempt detected")
	}
	return false
}

// sipRegistration is read from its end: "' - REASON" (server), then the
// address back to the previous quote (server-printed, never contains a
// quote), then "' failed for '". Everything left of that is the From header.
func sipRegistration(msg []byte, r *hit) bool {
	for i := range sipRegReasons {
		rs := &sipRegReasons[i]
		if len(msg) < len(rs.text)+4 || !hasSuffix(msg, rs.text) {
			continue
		}
		rest := msg[:len(msg)-len(rs.text)]
		if !hasSuffix(rest, "' - ") {
			return false
		}
		rest = rest[:len(rest)-4]
		q := lastIndexByte(rest, '\'')
		if q < 0 {
			return false
		}
		addr := rest[q+1:]
		head := rest[:q+1]
		const mk = "' failed for '"
		if !hasSuffix(head, mk) || len(head) < len("Registration from '")+len(mk) {
			return false
		}
		from := head[len("Registration from '") : len(head)-len(mk)]
		r.from = from
		r.account = sipUser(from)
		return setAddr(r, addr, rs.kind, rs.text)
	}
	return false
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// sipUser extracts the user part of the first sip:/sips: URI in b
// (attacker text: used only as the account label, never for the address).
func sipUser(b []byte) []byte {
	i := indexStr(b, "sip:")
	if i < 0 {
		return nil
	}
	u := b[i+4:]
	for j, c := range u {
		switch c {
		case '@':
			if j == 0 || j > 64 {
				return nil
			}
			return u[:j]
		case '>', ';', ' ', '\'', '"':
			return nil
		}
	}
	return nil
}

func setAddr(r *hit, b []byte, k event.Kind, detail string) bool {
	a, p, ok := parseHostPort(b)
	if !ok {
		return false
	}
	r.addr, r.port, r.kind, r.detail = a, p, k, detail
	return true
}

// ---- "Call from … rejected because extension not found" ----

var transports = [...]string{"UDP:", "TCP:", "TLS:", "WS:", "WSS:", "SCTP:"}

// callRejected handles
//
//	chan_sip:          Call from 'NAME' (ADDR:PORT) to extension 'EXTEN' rejected because extension not found in context 'CTX'.
//	res_pjsip 13–16:   Call from 'ENDPOINT' (TRANSPORT:ADDR:PORT) to extension 'EXTEN' rejected because …
//	res_pjsip 17+:     ENDPOINT: Call (TRANSPORT:ADDR:PORT) to extension 'EXTEN' rejected because …
//
// NAME and EXTEN are attacker text on both sides of the address: the line
// is accepted only when exactly one well-formed "(ADDR) to extension '"
// exists.
func callRejected(msg []byte, r *hit, svc event.Service) bool {
	r.svc = svc
	const tail = "' rejected because extension not found in context '"
	if !hasSuffix(msg, "'.") && !hasSuffix(msg, "'") {
		return false
	}
	t := lastIndexStr(msg, tail)
	if t < 0 {
		return false
	}
	region := msg[:t]
	const post = ") to extension '"
	var found []byte
	var foundAt int
	count := 0
	for off := 0; off < len(region); {
		k := indexByteFrom(region, off, '(')
		if k < 0 {
			break
		}
		off = k + 1
		a := region[k+1:]
		for _, tp := range transports {
			if hasPrefix(a, tp) {
				a = a[len(tp):]
				break
			}
		}
		e := 0
		for e < len(a) && isAddrByte(a[e]) {
			e++
		}
		if e == 0 || !hasPrefix(a[e:], post) {
			continue
		}
		if _, _, ok := parseHostPort(a[:e]); !ok {
			continue
		}
		count++
		found = a[:e]
		foundAt = k
	}
	if count == 0 {
		return false
	}
	if count > 1 {
		r.kind, r.detail = event.InjectionSuspect, "ambiguous address in call rejection"
		return true
	}
	if !setAddr(r, found, event.CallRejected, "extension not found") {
		return false
	}
	if hasPrefix(msg, "Call from '") && foundAt > len("Call from '") {
		r.from = msg[len("Call from '"):foundAt]
	}
	return true
}

// ---- res_pjsip distributor ----

var pjsipReasons = [...]reason{
	{"No matching endpoint found", event.UnknownAccount},
	{"Not match Endpoint ACL", event.ACLViolation},
	{"Not match Endpoint Contact ACL", event.ACLViolation},
	{"Failed to authenticate", event.AuthFailure},
	{"Error to authenticate", event.AuthFailure},
}

// pjsipRequest handles
//
//	Request 'METHOD' from 'FROM' failed for 'ADDR:PORT' (callid: CALLID) - REASON[ after N tries in X ms]
//	Request from 'FROM' failed for 'ADDR:PORT' (callid: CALLID) - REASON      (Asterisk 13)
//
// METHOD, FROM and CALLID are attacker text. REASON is read from the end;
// the address must be the only well-formed "' failed for 'ADDR' (callid: ".
func pjsipRequest(msg []byte, r *hit) bool {
	r.svc = event.ServicePJSIP
	if !hasPrefix(msg, "Request ") {
		return false
	}
	body := stripTries(msg)
	var rs *reason
	for i := range pjsipReasons {
		if hasSuffix(body, pjsipReasons[i].text) {
			rs = &pjsipReasons[i]
			break
		}
	}
	if rs == nil {
		return false
	}
	body = body[:len(body)-len(rs.text)]
	if !hasSuffix(body, ") - ") {
		return false
	}
	body = body[:len(body)-4]
	const pre, post = "' failed for '", "' (callid: "
	var found []byte
	count, at := 0, 0
	for off := 0; off < len(body); {
		k := indexStr(body[off:], pre)
		if k < 0 {
			break
		}
		k += off
		off = k + 1
		a := body[k+len(pre):]
		e := 0
		for e < len(a) && isAddrByte(a[e]) {
			e++
		}
		if e == 0 || !hasPrefix(a[e:], post) {
			continue
		}
		if _, _, ok := parseHostPort(a[:e]); !ok {
			continue
		}
		count++
		found = a[:e]
		at = k
	}
	if count == 0 {
		return false
	}
	if count > 1 {
		r.kind, r.detail = event.InjectionSuspect, "ambiguous address in pjsip request"
		return true
	}
	if !setAddr(r, found, rs.kind, rs.text) {
		return false
	}
	if f := indexStr(msg[:at], "from '"); f >= 0 {
		r.from = msg[f+len("from '") : at]
		r.account = sipUser(r.from)
	}
	return true
}

// stripTries removes " after N tries in X.XXX ms" from the end.
func stripTries(b []byte) []byte {
	if !hasSuffix(b, " ms") {
		return b
	}
	i := lastIndexStr(b, " after ")
	if i < 0 || i+len(" after ") > len(b)-len(" ms") {
		return b // " after " overlaps the " ms" suffix ("… after ms")
	}
	t := b[i+len(" after ") : len(b)-3]
	// "N tries in X.XXX"
	j := 0
	for j < len(t) && t[j] >= '0' && t[j] <= '9' {
		j++
	}
	if j == 0 || !hasPrefix(t[j:], " tries in ") {
		return b
	}
	for _, c := range t[j+len(" tries in "):] {
		if (c < '0' || c > '9') && c != '.' {
			return b
		}
	}
	return b[:i]
}

// ---- AMI (manager.c) ----

// amiAuth: "ADDR tried to authenticate with nonexistent user 'USER'",
// "ADDR failed to pass IP ACL as 'USER'", "ADDR failed to authenticate as 'USER'".
// The address is the first word (server); the user name is the end.
func amiAuth(msg []byte, r *hit) bool {
	r.svc = event.ServiceAMI
	sp := indexByteFrom(msg, 0, ' ')
	if sp < 2 {
		return false
	}
	rest := msg[sp+1:]
	var k event.Kind
	var detail string
	var user []byte
	switch {
	case hasPrefix(rest, "tried to authenticate with nonexistent user '"):
		k, detail = event.UnknownAccount, "nonexistent user"
		user = rest[len("tried to authenticate with nonexistent user '"):]
	case hasPrefix(rest, "failed to pass IP ACL as '"):
		k, detail = event.ACLViolation, "failed to pass IP ACL"
		user = rest[len("failed to pass IP ACL as '"):]
	case hasPrefix(rest, "failed to authenticate as '"):
		k, detail = event.AuthFailure, "failed to authenticate"
		user = rest[len("failed to authenticate as '"):]
	default:
		return false
	}
	if len(user) > 0 && user[len(user)-1] == '\'' {
		r.account = user[:len(user)-1]
	}
	return setAddr(r, msg[:sp], k, detail)
}

// ---- acl.c ----

// aclReject: "PURPOSE: Rejecting 'ADDR' due to a failure to pass ACL 'NAME'".
// PURPOSE is a constant chosen by the calling module.
func aclReject(msg []byte, r *hit) bool {
	const mk = "Rejecting '"
	i := indexStr(msg, mk)
	if i < 0 || i > 40 {
		return false
	}
	purpose := msg[:i]
	a := msg[i+len(mk):]
	q := indexByteFrom(a, 0, '\'')
	if q < 0 || !hasPrefix(a[q:], "' due to a failure to pass ACL '") {
		return false
	}
	switch {
	case hasPrefix(purpose, "SIP Peer"):
		r.svc = event.ServiceSIP
	case hasPrefix(purpose, "SIP"):
		r.svc = event.ServicePJSIP
	case hasPrefix(purpose, "Manager"):
		r.svc = event.ServiceAMI
	case hasPrefix(purpose, "IAX"):
		r.svc = event.ServiceIAX2
	}
	return setAddr(r, a[:q], event.ACLViolation, "failed to pass ACL")
}

// ---- chan_iax2 ----

func iax2(msg []byte, r *hit) bool {
	r.svc = event.ServiceIAX2
	switch {
	case hasPrefix(msg, "Host "):
		// "Host ADDR failed MD5 authentication for 'PEER' (H1 != H2)"
		// "Host ADDR failed to authenticate as 'PEER'" / "as PEER"
		// ("Host PEER failed RSA authentication …" names the peer, not an address.)
		a := msg[len("Host "):]
		sp := indexByteFrom(a, 0, ' ')
		if sp < 0 {
			return false
		}
		rest := a[sp+1:]
		switch {
		case hasPrefix(rest, "failed MD5 authentication for '"):
			r.account = quotedHead(rest[len("failed MD5 authentication for '"):])
			return setAddr(r, a[:sp], event.AuthFailure, "failed MD5 authentication")
		case hasPrefix(rest, "failed to authenticate as "):
			u := rest[len("failed to authenticate as "):]
			if len(u) > 0 && u[0] == '\'' {
				r.account = quotedHead(u[1:])
			}
			return setAddr(r, a[:sp], event.AuthFailure, "failed to authenticate")
		}
	case hasPrefix(msg, "No registration for peer '"):
		// read from the end: "(from ADDR)"
		if !hasSuffix(msg, ")") {
			return false
		}
		i := lastIndexStr(msg, " (from ")
		if i < 0 {
			return false
		}
		r.account = quotedHead(msg[len("No registration for peer '"):])
		return setAddr(r, msg[i+len(" (from "):len(msg)-1], event.UnknownAccount, "no registration for peer")
	case hasPrefix(msg, "Rejected connect attempt from "):
		a := msg[len("Rejected connect attempt from "):]
		c := indexByteFrom(a, 0, ',')
		if c < 0 {
			return false
		}
		rest := a[c:]
		if !hasPrefix(rest, ", who was trying to reach '") && !(hasPrefix(rest, ", request '") && hasSuffix(rest, "' does not exist")) {
			return false
		}
		return setAddr(r, a[:c], event.UnknownAccount, "rejected connect attempt")
	case hasPrefix(msg, "Call rejected, CallToken Support required."):
		const mk = "resolve by placing address "
		i := indexStr(msg, mk)
		if i < 0 {
			return false
		}
		a := msg[i+len(mk):]
		sp := indexByteFrom(a, 0, ' ')
		if sp < 0 || !hasPrefix(a[sp:], " in the calltokenoptional list") {
			return false
		}
		return setAddr(r, a[:sp], event.BadRequest, "CallToken required")
	case hasPrefix(msg, "Address "):
		a := msg[len("Address "):]
		sp := indexByteFrom(a, 0, ' ')
		if sp < 0 || string(a[sp:]) != " failed CallToken hash inspection" {
			return false
		}
		return setAddr(r, a[:sp], event.BadRequest, "CallToken hash failed")
	}
	return false
}

func quotedHead(b []byte) []byte {
	q := indexByteFrom(b, 0, '\'')
	if q <= 0 {
		return nil
	}
	return b[:q]
}

// ---- FreePBX dialplan Log() lines ----

// dialplanLog: `Ext. s: "Rejecting unknown SIP connection from ADDR[:PORT]"`.
// FreePBX fills ADDR from ${CHANNEL(recvip)} (server). Its "Friendly Scanner
// from X" line takes X from the Via header (attacker text): it is reported
// as a scan without an address.
func dialplanLog(msg []byte, r *hit) bool {
	if len(msg) >= 2 && msg[0] == '"' && msg[len(msg)-1] == '"' {
		msg = msg[1 : len(msg)-1]
	}
	const rej = "Rejecting unknown SIP connection from "
	if hasPrefix(msg, rej) {
		r.svc = event.ServiceSIP
		return setAddr(r, msg[len(rej):], event.UnknownAccount, "unknown SIP connection")
	}
	if hasPrefix(msg, "Friendly Scanner from ") {
		r.svc = event.ServiceSIP
		r.kind, r.detail = event.Scan, "FreePBX friendly-scanner (address from Via: untrusted)"
		return true
	}
	return false
}

// ---- scanner signatures ----

// scannerSignatures are lower-case substrings of From/User-Agent text that
// only attack tools send.
var scannerSignatures = [...]string{
	"sipvicious", "friendly-scanner", "sipcli", "vaxsipuseragent", "sip-scan",
	"sipscan", "iwar", "sundayddr", "pplsip", "svwar", "svcrack", "svmap", "smap",
}

// sigFirst marks the (lower-case) first bytes of the signatures, so that
// one pass over the text finds every signature.
var sigFirst = func() (t [256]bool) {
	for _, s := range scannerSignatures {
		t[s[0]] = true
	}
	return t
}()

func hasScannerSignature(b []byte) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c |= 0x20
		}
		if !sigFirst[c] {
			continue
		}
		for _, s := range scannerSignatures {
			if s[0] == c && len(b)-i >= len(s) && equalFold(b[i:i+len(s)], s) {
				return true
			}
		}
	}
	return false
}

func equalFold(b []byte, lower string) bool {
	for j := 0; j < len(lower); j++ {
		d := b[j]
		if d >= 'A' && d <= 'Z' {
			d |= 0x20
		}
		if d != lower[j] {
			return false
		}
	}
	return true
}
