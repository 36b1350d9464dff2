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
	// form is the header form this source writes (formBracket or
	// formSyslog), locked by the first well-formed header: a forged line
	// in another form (a date-less "NOTICE[1] acl.c: …" inside a file
	// log) is refused.
	form int8
	// skip is how many bytes, counted from the start of the next line, may
	// still belong to the previous message (a pjproject packet dump, or an
	// attacker field cut by a newline). Lines that start inside that
	// region are not Asterisk's and are dropped.
	skip int
	// endOfPacket: the line after a packet dump may be pjproject's
	// "-- end of packet.".
	endOfPacket bool
	// jsonBuf holds the unescaped message of a [json] formatter line.
	jsonBuf []byte
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
	form   int8
	module []byte
	msg    []byte
	date   []byte // timestamp text, nil when the line has none
	st     stamp  // date parsed, when stOK
	stOK   bool
}

// hit is what a message parser found.
type hit struct {
	kind    event.Kind
	svc     event.Service
	addr    netip.Addr
	port    uint16
	account []byte
	detail  string
	from    []byte // attacker text (display name, caller name, User-Agent) to look for scanner signatures in
	// structured: a res_security_log SecurityEvent record.
	structured bool
	// request: the request's Call-ID (pjsip NOTICE callid, security event
	// SessionID), for pairing twins; nil when the line names none.
	request []byte
	// cut > 0: the message may continue on the following lines (it ended
	// inside an attacker field that can hold a newline, or it announced a
	// packet dump); the next cut bytes are untrusted.
	cut    int
	packet bool // cut is a pjproject packet dump
}

// maxLineTrusted: Asterisk's logger cuts every message at 8191 bytes
// (logger.c LOGMSG_SIZE); the cut can drop the server-written end of a
// message (the RemoteAddress of a security event) or, in a file channel,
// the newline, so that the next message is glued to this one. A line this
// long is never trusted.
const maxLineTrusted = 8000

// Detect implements Detector.
func (d *asteriskDetector) Detect(line []byte, ev *event.Event) bool {
	if d.skip > 0 || d.endOfPacket {
		raw := len(line)
		if raw > 0 && line[raw-1] == '\n' {
			raw--
		}
		if d.skip > 0 {
			d.skip -= raw + 1
			return false
		}
		d.endOfPacket = false
		if string(trimRightSpace(line)) == "-- end of packet." {
			return false
		}
	}
	var h astHeader
	if len(line) > 0 && line[0] == '{' {
		if !parseJSONHeader(line, &h, &d.jsonBuf) {
			return false
		}
	} else if !parseAsteriskHeader(line, &h) {
		return false
	}
	if d.form == formNone {
		if h.level == lvVerbose && h.form == formBracket {
			if _, ok := parseAnyStamp(h.date, &h.st); !ok {
				return false
			}
		}
		d.form = h.form
	} else if h.form != d.form {
		return false
	}
	if h.level == lvVerbose && h.msg != nil {
		// "<--- Received SIP request (N bytes) from T:A:P --->" then the
		// raw packet (any text the sender chose), one log line per packet
		// line: skip what starts inside it.
		if n := sipLoggerDump(h.msg); n > 0 && !continuesInline(line, &h) {
			d.skip = min(n+1, 8192)
		}
		return false
	}
	if h.level == lvOther || h.level == lvVerbose {
		return false
	}
	var r hit
	if len(line) >= maxLineTrusted {
		r.kind, r.detail = event.InjectionSuspect, "message cut at 8191 bytes by Asterisk"
		// A res_pjsip Request line names its source before the Call-ID:
		// when pjsip's From grammar leads to "' failed for 'ADDR' (callid: "
		// well inside the first 8000 bytes, that part was written before
		// the cut, so an 8 KB Call-ID does not hide the sender.
		if m := h.msg; hasPrefix(m, "Request ") && (string(h.module) == "res_pjsip/pjsip_distributor.c" || string(h.module) == "pjsip_distributor.c") {
			if room := len(m) - (len(line) - maxLineTrusted) - 100; room > 0 {
				if a, disp, from, _, ok := pjsipFromLeft(m[:room]); ok {
					r.svc, r.from, r.account = event.ServicePJSIP, disp, sipUser(from)
					if !setAddr(&r, a, event.BadRequest, "pjsip request with an 8 KB field") {
						r.kind = event.InjectionSuspect
					}
				}
			}
		}
		d.fill(&h, &r, ev, "asterisk")
		return true
	}
	if !dispatchAsterisk(&h, &r) {
		return false
	}
	// The continuation is on the next lines only when this line is a line
	// (see continuesInline).
	if r.cut > 0 && !continuesInline(line, &h) {
		d.skip = min(r.cut, 8192)
		d.endOfPacket = r.packet
	}
	if r.kind == event.KindNone {
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
		Time:       d.lineTime(h),
		Addr:       r.addr,
		Port:       r.port,
		Service:    r.svc,
		Kind:       r.kind,
		Account:    d.intern.get(r.account),
		Detail:     r.detail,
		Detector:   name,
		Structured: r.structured,
		Request:    event.RequestKey(r.request),
	}
	if r.kind == event.InjectionSuspect {
		ev.Addr, ev.Port = netip.Addr{}, 0
	}
}

func (d *asteriskDetector) lineTime(h *astHeader) time.Time {
	if h.stOK {
		return d.clock.resolve(&h.st)
	}
	if date := h.date; len(date) > 0 {
		var s stamp
		if _, ok := parseAnyStamp(date, &s); ok {
			return d.clock.resolve(&s)
		}
	}
	return d.clock.now()
}

// Header forms. A detector instance reads one source and locks to the form
// of the first well-formed header it sees (see asteriskDetector.form).
const (
	formNone    = iota
	formBracket // file channel: "[DATE] LEVEL[LWP]…"
	formSyslog  // syslog, journald, RFC 5424, bare "LEVEL[LWP]: …"
	formJSON    // the [json] formatter: one JSON object per line
)

// parseAsteriskHeader reads the server-written prefix and refuses lines
// without a well-formed one:
//
//	[DATE] LEVEL[LWP][C-xxxxxxxx] file.c: MSG                       (file channel)
//	[DATE] LEVEL[LWP][C-xxxxxxxx]: file.c:123 function: MSG         (plain formatter)
//	Mmm dd HH:MM:SS host asterisk[PID]: LEVEL[LWP]: file.c:123 in function: MSG (syslog)
//	<PRI>1 STAMP host asterisk PID - - LEVEL[LWP]: …                (RFC 5424)
//	host asterisk[PID]: [DATE] LEVEL[LWP]: ...                      (journal with stamp)
//	LEVEL[LWP]: file.c:123 function: MSG                            (journal message)
//
// DATE must be a timestamp, LWP a non-empty decimal thread id, and the
// module a source file ("x.c", "x.h"), "pjproject" or a dialplan "Ext. X".
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
		h.form = formBracket
		i = skipSpaces(line, j+1)
	} else {
		h.form = formSyslog
		if lv, _ := matchLevel(line); lv == lvOther {
			date, prog, _, msg, ok := parseSyslogPrefix(line)
			if !ok || string(prog) != "asterisk" {
				// another daemon's message (sshd's "Invalid user …")
				// may carry attacker text: never read as Asterisk's.
				return false
			}
			h.date = date
			i = n - len(msg)
			if i < n && line[i] == '[' {
				j := indexByteFrom(line, i+1, ']')
				if j < 0 || j-i > 48 {
					return false
				}
				if _, ok := parseAnyStamp(line[i+1:j], &h.st); !ok {
					return false
				}
				if h.date == nil {
					h.date = line[i+1 : j]
					h.stOK = true
				}
				i = skipSpaces(line, j+1)
			}
		}
	}
	lv, k := matchLevel(line[i:])
	if lv == lvOther {
		return false
	}
	h.level = lv
	i += k
	if i < n && line[i] == ' ' {
		i++
	}
	// [LWP]: decimal, non-empty
	if i >= n || line[i] != '[' {
		return false
	}
	j := i + 1
	for j < n && line[j] >= '0' && line[j] <= '9' {
		j++
	}
	if j == i+1 || j-i > 11 || j >= n || line[j] != ']' {
		return false
	}
	i = j + 1
	if lv == lvVerbose {
		// the caller validates the stamp if it needs to; only
		// res_pjsip_logger's packet dumps matter among verbose lines
		if k := indexStr(line[i:min(n, i+40)], " res_pjsip_logger.c:"); k >= 0 {
			m := line[i+k:]
			if g := indexStr(m, " <--- "); g >= 0 && g < 64 {
				h.module = m[1:len(" res_pjsip_logger.c")]
				h.msg = m[g+1:]
			}
		}
		return true
	}
	if h.form == formBracket {
		if _, ok := parseAnyStamp(h.date, &h.st); !ok {
			return false
		}
		h.stOK = true
	}
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
	if c < 0 || c-i > 64 || c == i || c+1 >= n {
		return false
	}
	h.module = line[i:c]
	if !validModule(h.module) {
		return false
	}
	i = c + 1
	switch {
	case line[i] == ' ':
	case line[i] >= '0' && line[i] <= '9':
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
	default:
		return false
	}
	h.msg = trimLeftSpace(line[i:])
	return true
}

// validModule: a source file name without spaces ("chan_sip.c",
// "res_pjsip/pjsip_distributor.c"), "pjproject" (res_pjproject's log
// forwarder) or a dialplan Log() "Ext. EXTEN".
func validModule(m []byte) bool {
	if hasPrefix(m, "Ext. ") {
		return true
	}
	if string(m) == "pjproject" {
		return true
	}
	if !hasSuffix(m, ".c") && !hasSuffix(m, ".h") {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c == '[' || c == ']' || c == '\'' || c == '"' {
			return false
		}
	}
	return true
}

// parseSyslogPrefix reads the prefix a syslog daemon or journalctl puts
// before a program's message:
//
//	STAMP HOST PROG[PID]: MSG      (RFC 3164, ISO stamps from rsyslog)
//	STAMP PROG[PID]: MSG
//	HOST PROG[PID]: MSG            (journalctl without a stamp)
//	<PRI>1 STAMP HOST APP PROCID MSGID SD MSG   (RFC 5424)
//
// prog is the program's base name ("/usr/sbin/asterisk" → "asterisk").
func parseSyslogPrefix(line []byte) (date, prog []byte, pid uint32, msg []byte, ok bool) {
	if len(line) > 0 && line[0] == '<' {
		return parseRFC5424(line)
	}
	i := 0
	var s stamp
	if k, ok := parseAnyStamp(line, &s); ok {
		date = line[:k]
		i = skipSpaces(line, k)
	}
	for tok := 0; tok < 2; tok++ {
		sp := indexByteFrom(line, i, ' ')
		if sp < 0 {
			return nil, nil, 0, nil, false
		}
		t := line[i:sp]
		if len(t) > 1 && t[len(t)-1] == ':' {
			name := t[:len(t)-1]
			if b := indexByteFrom(name, 0, '['); b > 0 && name[len(name)-1] == ']' {
				pid = atou(name[b+1 : len(name)-1])
				name = name[:b]
			}
			if sl := lastIndexByte(name, '/'); sl >= 0 {
				name = name[sl+1:]
			}
			return date, name, pid, line[sp+1:], true
		}
		i = sp + 1
	}
	return nil, nil, 0, nil, false
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
	case "pjproject":
		return pjprojectError(msg, r)
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
		r.from = displayName(from)
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
	t := lastIndexStr(msg, tail)
	if t < 0 || !hasSuffix(msg, "'.") && !hasSuffix(msg, "'") {
		// Cut inside EXTEN (a dialled number may hold a newline): the
		// next lines up to its maximum length are not Asterisk's.
		if hasPrefix(msg, "Call from '") || containsStr(msg, ": Call (") && !containsStr(msg, "' - ") {
			r.kind, r.detail = event.InjectionSuspect, "call rejection cut by a newline in an attacker field"
			r.cut = maxExtenField
			return true
		}
		return false
	}
	// res_pjsip 17+: "ENDPOINT: Call (T:ADDR) to extension '": the
	// endpoint name is server configuration, so the first "Call (" is the
	// server's.
	if !hasPrefix(msg, "Call from '") {
		if c := indexStr(msg, ": Call ("); c > 0 {
			a := msg[c+len(": Call ("):]
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
			if e > 0 && hasPrefix(a[e:], ") to extension '") && c+len(": Call (") < t {
				if !setAddr(r, a[:e], event.CallRejected, "extension not found") {
					return false
				}
				// a runs to the end of msg: the dialled number is between
				// "to extension '" and the server-written tail.
				if start := len(msg) - len(a) + e + len(") to extension '"); start <= t {
					r.account = msg[start:t]
				}
				return true
			}
			return false
		}
	}
	region := msg[:t]
	const post = ") to extension '"
	var found []byte
	var foundAt, extenAt int
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
		extenAt = t - len(a) + e + len(post) // a runs to the end of region = msg[:t]
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
	r.account = msg[extenAt:t] // the dialled number, for the fraud rules (unauthenticated international calls)
	return true
}

// Maximum lengths of attacker fields that can hold a raw newline, in
// bytes: after a message cut inside one, the following lines that start
// within that many bytes are not Asterisk's.
const (
	maxExtenField    = 256  // dialled number (AST_MAX_EXTENSION 80, chan_sip/IAX2 buffers up to 256)
	maxPeerField     = 256  // IAX2 user/peer name IE (1-byte length)
	maxAMIUserField  = 1024 // AMI user name over HTTP (URL-decoded)
	maxSecurityField = 1024 // res_security_log AccountID (pjsip: 36), RequestType, RequestParams
)

// ---- pjproject ----

// pjprojectError reads res_pjproject's forward of pjlib's
//
//	"\tsip_transport.c Error processing N bytes packet from TRANSPORT ADDR:PORT : REASON:\nPACKET\n-- end of packet."
//
// ADDR:PORT is the packet's source (server-written; IPv6 without brackets,
// the port always last). The N bytes that follow are the raw packet,
// written as lines: every line that starts inside them is the sender's
// text, not Asterisk's.
func pjprojectError(msg []byte, r *hit) bool {
	r.svc = event.ServicePJSIP
	m := trimLeftSpace(msg)
	const mk = "Error processing "
	i := indexStr(m, mk)
	if i < 0 || i > 40 {
		return false
	}
	m = m[i+len(mk):]
	nd := 0
	size := 0
	for nd < len(m) && m[nd] >= '0' && m[nd] <= '9' && nd < 6 {
		size = size*10 + int(m[nd]-'0')
		nd++
	}
	if nd == 0 || !hasPrefix(m[nd:], " bytes packet from ") {
		return false
	}
	m = m[nd+len(" bytes packet from "):]
	sp := indexByteFrom(m, 0, ' ')
	if sp < 1 || sp > 8 {
		return false
	}
	m = m[sp+1:]
	sp = indexByteFrom(m, 0, ' ')
	if sp < 0 {
		sp = len(m)
	}
	hp := m[:sp]
	c := lastIndexByte(hp, ':')
	if c < 0 {
		return false
	}
	port, ok := parsePort(hp[c+1:])
	if !ok {
		return false
	}
	host := hp[:c]
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	a, ok := parseAddr(host)
	if !ok {
		return false
	}
	r.addr, r.port, r.kind, r.detail = a, port, event.BadRequest, "malformed SIP packet"
	r.cut, r.packet = size, true
	return true
}

// continuesInline reports whether a multi-line message arrived whole in
// this one call, so that nothing after it needs skipping: a [json] record
// (newlines escaped as \n), an entry-oriented source (the journal source
// passes one whole MESSAGE, newlines inside), or rsyslog's escaping of
// control characters (#012).
func continuesInline(line []byte, h *astHeader) bool {
	if h.form == formJSON {
		return true
	}
	t := trimRightSpace(line)
	return bytes.IndexByte(t, '\n') >= 0 || h.form == formSyslog && containsStr(t, "#012")
}

// sipLoggerDump reads res_pjsip_logger's "<--- Received SIP request (N
// bytes) from …" / "<--- Transmitting SIP response (N bytes) to …" and
// returns N (0 when the message is not one of these).
func sipLoggerDump(msg []byte) int {
	var m []byte
	switch {
	case hasPrefix(msg, "<--- Received SIP "):
		m = msg[len("<--- Received SIP "):]
	case hasPrefix(msg, "<--- Transmitting SIP "):
		m = msg[len("<--- Transmitting SIP "):]
	default:
		return 0
	}
	o := indexStr(m, " (")
	if o < 0 || o > 10 {
		return 0
	}
	m = m[o+2:]
	n, j := 0, 0
	for j < len(m) && m[j] >= '0' && m[j] <= '9' && j < 6 {
		n = n*10 + int(m[j]-'0')
		j++
	}
	if j == 0 || !hasPrefix(m[j:], " bytes) ") {
		return 0
	}
	return n
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
	if a, disp, from, callid, ok := pjsipFromLeft(body); ok {
		r.from, r.account, r.request = disp, sipUser(from), callid
		return setAddr(r, a, rs.kind, rs.text)
	}
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
	r.request = body[at+len(pre)+len(found)+len(post):]
	if f := indexStr(msg[:at], "from '"); f >= 0 {
		r.from = displayName(msg[f+len("from '") : at])
		r.account = sipUser(msg[f+len("from '") : at])
	}
	return true
}

// pjsipFromLeft reads "Request 'METHOD' from 'FROM' failed for 'ADDR'
// (callid: " from the left; callid is the rest of body (the Call-ID when
// body ends before ") - REASON"). METHOD is a SIP token (no space); FROM is what
// pjsip_uri_print writes for a From name-addr: an optional quoted display
// name (quotes inside escaped) and a space, then "<URI>" where the URI has
// no space and no '>'. So the server's "' failed for '" is found without
// looking at the Call-ID. ok is false when the line does not have exactly
// this shape (then the caller falls back to the unique-candidate rule).
func pjsipFromLeft(body []byte) (addr, display, from, callid []byte, ok bool) {
	b := body[len("Request "):]
	if hasPrefix(b, "from '") { // Asterisk 13: no method
		b = b[len("from '"):]
	} else {
		if len(b) == 0 || b[0] != '\'' {
			return nil, nil, nil, nil, false
		}
		sp := indexByteFrom(b, 0, ' ')
		if sp < 2 || b[sp-1] != '\'' || !hasPrefix(b[sp:], " from '") {
			return nil, nil, nil, nil, false
		}
		b = b[sp+len(" from '"):]
	}
	f := b
	i := 0
	if len(b) > 0 && b[0] == '"' {
		i = 1
		for i < len(b) && b[i] != '"' {
			if b[i] == '\\' {
				i++
			}
			i++
		}
		if i >= len(b) {
			return nil, nil, nil, nil, false
		}
		display = b[1:i]
		i++
		if i >= len(b) || b[i] != ' ' {
			return nil, nil, nil, nil, false
		}
		i++
	}
	if i >= len(b) || b[i] != '<' {
		return nil, nil, nil, nil, false
	}
	gt := indexByteFrom(b, i, '>')
	if gt < 0 {
		return nil, nil, nil, nil, false
	}
	for _, c := range b[i:gt] {
		if c == ' ' {
			return nil, nil, nil, nil, false
		}
	}
	from = f[:gt+1]
	rest := b[gt+1:]
	const pre, post = "' failed for '", "' (callid: "
	if !hasPrefix(rest, pre) {
		return nil, nil, nil, nil, false
	}
	a := rest[len(pre):]
	e := 0
	for e < len(a) && isAddrByte(a[e]) {
		e++
	}
	if e == 0 || !hasPrefix(a[e:], post) {
		return nil, nil, nil, nil, false
	}
	return a[:e], display, from, a[e+len(post):], true
}

// displayName returns the quoted display name of a From header text
// ("\"Name\" <sip:…>"), or nil when it has none.
func displayName(from []byte) []byte {
	if len(from) < 2 || from[0] != '"' {
		return nil
	}
	q := lastIndexStr(from, "\" <")
	if q < 1 {
		q = lastIndexByte(from, '"')
	}
	if q < 1 {
		return nil
	}
	return from[1:q]
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
	} else {
		// cut inside the user name (AMI over HTTP URL-decodes it)
		r.cut = maxAMIUserField - len(user) - 1
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
	// PURPOSE is a constant like "SIP ACL", "SIP Peer ACL", "Manager User ACL"
	if !hasSuffix(purpose, "ACL: ") {
		return false
	}
	for _, c := range purpose {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == ' ' || c == '(' || c == ')' || c == '-' || c == ':') {
			return false
		}
	}
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
		case hasPrefix(rest, "denied access to register peer '"):
			// the peer name is the configured peer's
			return setAddr(r, a[:sp], event.ACLViolation, "denied access to register peer")
		case hasPrefix(rest, "failed MD5 authentication for '"):
			if !hasSuffix(rest, ")") {
				r.cut = maxPeerField // cut inside the peer name
			}
			r.account = quotedHead(rest[len("failed MD5 authentication for '"):])
			return setAddr(r, a[:sp], event.AuthFailure, "failed MD5 authentication")
		case hasPrefix(rest, "failed to authenticate as "):
			u := rest[len("failed to authenticate as "):]
			if len(u) > 0 && u[0] == '\'' {
				r.account = quotedHead(u[1:])
				if !hasSuffix(u, "'") {
					r.cut = maxPeerField
				}
			}
			return setAddr(r, a[:sp], event.AuthFailure, "failed to authenticate")
		}
	case hasPrefix(msg, "No registration for peer '"):
		// read from the end: "(from ADDR)"
		i := lastIndexStr(msg, " (from ")
		if !hasSuffix(msg, ")") || i < 0 {
			// cut inside the peer name (authdebug): not Asterisk's below
			r.kind, r.detail = event.InjectionSuspect, "IAX2 peer name cut by a newline"
			r.cut = maxPeerField
			return true
		}
		r.account = quotedHead(msg[len("No registration for peer '"):])
		return setAddr(r, msg[i+len(" (from "):len(msg)-1], event.UnknownAccount, "no registration for peer")
	case hasPrefix(msg, "Rejected connect attempt from "), hasPrefix(msg, "Rejected dial attempt from "):
		// "Rejected connect attempt from ADDR, who was trying to reach 'U@C'"
		// "Rejected connect attempt from ADDR, request 'E@C' does not exist"
		// "Rejected dial attempt from ADDR, request 'E@C' does not exist"
		// (not: "…, requested 'X' incompatible with our capability": codecs)
		a := msg[len("Rejected "):]
		a = a[indexStr(a, " from ")+len(" from "):]
		c := indexByteFrom(a, 0, ',')
		if c < 0 {
			return false
		}
		rest := a[c:]
		if !hasPrefix(rest, ", who was trying to reach '") && !hasPrefix(rest, ", request '") {
			return false
		}
		if !hasSuffix(rest, "'") && !hasSuffix(rest, "' does not exist") {
			r.cut = maxExtenField // cut inside the number
		}
		if hasPrefix(msg, "Rejected dial attempt") {
			return setAddr(r, a[:c], event.UnknownAccount, "rejected dial attempt")
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

// hasScannerSignature reports whether b holds a signature as a whole token:
// the bytes around it are not letters or digits ("Siwar" and
// "kiwari.example" do not carry "iwar"; "sipvicious/0.3" carries
// "sipvicious").
func hasScannerSignature(b []byte) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c |= 0x20
		}
		if !sigFirst[c] || i > 0 && isAlnum(b[i-1]) {
			continue
		}
		for _, s := range scannerSignatures {
			if s[0] == c && len(b)-i >= len(s) && equalFold(b[i:i+len(s)], s) &&
				(len(b)-i == len(s) || !isAlnum(b[i+len(s)])) {
				return true
			}
		}
	}
	return false
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
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
