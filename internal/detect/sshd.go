package detect

import (
	"net/netip"

	"github.com/pbxguard/pbxguard/internal/event"
)

// The sshd detector counts OpenSSH failures the way fail2ban's sshd filter
// does in its normal mode, one line at a time, plus one multi-line rule: a
// failure logged without an address ("Disconnecting: Too many
// authentication failures", "User X not allowed because account is
// locked") is attributed to the address the same sshd process (pid) logged
// before, or released by that process's next "Connection closed by HOST" /
// "Received disconnect from HOST: 11:". The pid table is a fixed ring of
// 256 slots (pid mod 256), so memory is bounded whatever the log.
//
// User names are attacker text (up to 100 bytes, any characters). The
// address is read from the side sshd controls: PAM-style messages
// ("Authentication failure for USER from HOST", "Invalid user USER from
// HOST port N") end with the host and server-written suffixes, so they are
// read from the end; "Failed METHOD for USER from HOST port N ssh2[: INFO]"
// can carry attacker text on both sides (the user, and the auth info of
// hostbased/publickey), so the well-formed "from HOST port N sshN" followed
// by the end or ": " must be unique, else injection_suspect.
type sshdDetector struct {
	clock  lineClock
	intern interner
	// pids remembers the address each sshd pid last logged (bounded ring).
	pids [256]pidAddr
}

type pidAddr struct {
	pid     uint32
	addr    netip.Addr
	port    uint16
	pending event.Kind // a failure logged without an address, released by the next line with one
	detail  string
}

func newSSHD(o Options) Detector {
	return &sshdDetector{clock: newLineClock(o), intern: newInterner(4096)}
}

// Name implements Detector.
func (d *sshdDetector) Name() string { return "sshd" }

// Detect implements Detector.
func (d *sshdDetector) Detect(line []byte, ev *event.Event) bool {
	date, pid, msg, ok := parseSSHDHeader(line)
	if !ok {
		return false
	}
	var r hit
	r.svc = event.ServiceSSH
	if !sshdMessage(msg, &r) {
		return false
	}
	slot := &d.pids[pid%uint32(len(d.pids))]
	if slot.pid != pid {
		*slot = pidAddr{pid: pid}
	}
	switch {
	case r.addr.IsValid():
		slot.addr, slot.port = r.addr, r.port
		if r.kind == event.KindNone && slot.pending != event.KindNone && r.detail == detailClose {
			// "Connection closed by HOST" / "Received disconnect from HOST: 11:"
			// releases a failure logged earlier without an address.
			r.kind, r.detail = slot.pending, slot.detail
			slot.pending = event.KindNone
		}
	case r.kind.IsFailure():
		if !slot.addr.IsValid() {
			slot.pending, slot.detail = r.kind, r.detail
			return false
		}
		r.addr, r.port = slot.addr, slot.port
	}
	if r.kind == event.KindNone { // context lines (Connection from …, Failed publickey) only feed the pid table
		return false
	}
	var t stamp
	*ev = event.Event{
		Addr:     r.addr,
		Port:     r.port,
		Service:  event.ServiceSSH,
		Kind:     r.kind,
		Account:  d.intern.get(r.account),
		Detail:   r.detail,
		Detector: "sshd",
	}
	if _, ok := parseAnyStamp(date, &t); ok {
		ev.Time = d.clock.resolve(&t)
	} else {
		ev.Time = d.clock.now()
	}
	if r.kind == event.InjectionSuspect {
		ev.Addr, ev.Port = netip.Addr{}, 0
	}
	return true
}

// parseSSHDHeader reads "STAMP [host] sshd[PID]: MSG", "[sshd]: MSG" and
// RFC 5424 "<PRI>1 STAMP host sshd PID - SD MSG".
func parseSSHDHeader(line []byte) (date []byte, pid uint32, msg []byte, ok bool) {
	line = trimRightSpace(line)
	if len(line) < 16 {
		return nil, 0, nil, false
	}
	if line[0] == '<' { // RFC 5424
		date, prog, pid, msg, ok := parseRFC5424(line)
		if !ok || !isSSHDName(prog) {
			return nil, 0, nil, false
		}
		return date, pid, msg, true
	}
	var s stamp
	k, ok := parseAnyStamp(line, &s)
	if !ok {
		return nil, 0, nil, false
	}
	date = line[:k]
	i := skipSpaces(line, k)
	// up to two tokens: [host] program[pid]:
	for tok := 0; tok < 2; tok++ {
		sp := indexByteFrom(line, i, ' ')
		if sp < 0 {
			return nil, 0, nil, false
		}
		t := line[i:sp]
		if string(t) == "[sshd]" {
			return date, 0, line[sp+1:], true
		}
		if len(t) > 1 && t[len(t)-1] == ':' {
			name := t[:len(t)-1]
			if len(name) > 2 && name[0] == '[' && name[len(name)-1] == ']' {
				name = name[1 : len(name)-1]
			}
			if b := indexByteFrom(name, 0, '['); b > 0 && name[len(name)-1] == ']' {
				pid = atou(name[b+1 : len(name)-1])
				name = name[:b]
			}
			if !isSSHDName(baseName(name)) {
				return nil, 0, nil, false
			}
			return date, pid, line[sp+1:], true
		}
		i = sp + 1
	}
	return nil, 0, nil, false
}

// baseName strips a path ("/usr/sbin/sshd" → "sshd").
func baseName(b []byte) []byte {
	if sl := lastIndexByte(b, '/'); sl >= 0 {
		return b[sl+1:]
	}
	return b
}

func isSSHDName(b []byte) bool {
	s := string(b)
	return s == "sshd" || s == "sshd-session" || s == "sshd-auth"
}

func atou(b []byte) uint32 {
	var n uint32
	for _, c := range b {
		if c < '0' || c > '9' {
			return n
		}
		n = n*10 + uint32(c-'0')
	}
	return n
}

const (
	detailTooMany = "too many authentication failures"
	detailClose   = "connection closed"
)

// sshdMessage classifies one sshd message.
func sshdMessage(msg []byte, r *hit) bool {
	// __pref: "error: " / "fatal: " and "PAM: "
	if hasPrefix(msg, "error: ") || hasPrefix(msg, "fatal: ") {
		msg = msg[7:]
	}
	if hasPrefix(msg, "PAM: ") {
		msg = msg[5:]
	}
	if hasPrefix(msg, "[ID ") { // Solaris: "[ID 800047 auth.info] "
		if e := indexByteFrom(msg, 0, ']'); e > 0 {
			msg = trimLeftSpace(msg[e+1:])
		}
	}
	if len(msg) < 8 {
		return false
	}
	switch msg[0] {
	case 'A', 'a':
		if hasPrefix(msg[1:], "uthentication failure for ") || hasPrefix(msg[1:], "uthentication error for ") || hasPrefix(msg[1:], "uthentication failed for ") {
			return hostAtEnd(msg, r, event.AuthFailure, "authentication failure", true)
		}
		if hasPrefix(msg, "Accepted ") {
			return sshdFailed(msg, r, true)
		}
	case 'U':
		if hasPrefix(msg, "User not known to the underlying authentication module for ") {
			return hostAtEnd(msg, r, event.UnknownAccount, "user not known", false)
		}
		if hasPrefix(msg, "User ") {
			if hasSuffix(stripSSHDSuffix(msg, false), " not allowed because account is locked") {
				r.kind, r.detail = event.AuthFailure, "account locked"
				return true
			}
			return sshdNotAllowed(msg, r)
		}
	case 'F':
		if hasPrefix(msg, "Failed ") {
			return sshdFailed(msg, r, false)
		}
	case 'R':
		if hasPrefix(msg, "ROOT LOGIN REFUSED FROM ") {
			a := msg[len("ROOT LOGIN REFUSED FROM "):]
			if sp := indexByteFrom(a, 0, ' '); sp >= 0 {
				a = a[:sp]
			}
			r.account = rootAccount
			return setAddr(r, a, event.AuthFailure, "root login refused")
		}
		if hasPrefix(msg, "Received disconnect from ") {
			return sshdDisconnect(msg, r)
		}
	case 'I', 'i':
		if hasPrefix(msg[1:], "nvalid user ") || hasPrefix(msg[1:], "llegal user ") {
			return hostAtEnd(msg, r, event.UnknownAccount, "invalid user", false)
		}
	case 'r':
		if hasPrefix(msg, "refused connect from ") && hasSuffix(msg, ")") {
			o := lastIndexByte(msg, '(')
			if o < 0 {
				return false
			}
			return setAddr(r, msg[o+1:len(msg)-1], event.ACLViolation, "refused connect (tcp wrappers)")
		}
	case 'm':
		if hasPrefix(msg, "maximum authentication attempts exceeded for ") {
			return hostAtEnd(msg, r, event.AuthFailure, "maximum authentication attempts exceeded", false)
		}
	case 'D':
		if hasPrefix(msg, "Disconnecting: Too many authentication failures") {
			r.kind, r.detail = event.AuthFailure, detailTooMany
			return true
		}
		if hasPrefix(msg, "Disconnecting invalid user ") || hasPrefix(msg, "Disconnecting authenticating user ") ||
			hasPrefix(msg, "Disconnecting from invalid user ") || hasPrefix(msg, "Disconnecting from authenticating user ") {
			return sshdChangeOfUser(msg, r)
		}
	case 'C':
		if hasPrefix(msg, "Connection closed by ") || hasPrefix(msg, "Connection reset by ") {
			a := msg[len("Connection closed by "):]
			for _, p := range [...]string{"invalid user ", "authenticating user "} {
				if hasPrefix(a, p) {
					return false // user name before the host: not needed for release
				}
			}
			if sp := indexByteFrom(a, 0, ' '); sp >= 0 {
				a = a[:sp]
			}
			if ad, p, ok := parseHostPort(a); ok {
				r.addr, r.port, r.detail = ad, p, detailClose
				return true
			}
			return false
		}
		// context only: remember the connection's address for its pid
		if hasPrefix(msg, "Connection from ") {
			a := msg[len("Connection from "):]
			if sp := indexByteFrom(a, 0, ' '); sp >= 0 {
				a = a[:sp]
			}
			if ad, _, ok := parseHostPort(a); ok {
				r.addr = ad
			}
			return r.addr.IsValid()
		}
	}
	return false
}

// hostAtEnd handles "…for USER from HOST[ via X][ port N][ on X][ sshN][ [preauth]]":
// the suffix is server-written, so the host is the last token before it.
func hostAtEnd(msg []byte, r *hit, k event.Kind, detail string, via bool) bool {
	m := stripSSHDSuffix(msg, via)
	sp := lastIndexByte(m, ' ')
	if sp < 0 || !hasSuffix(m[:sp], " from") {
		return false
	}
	if f := indexStr(m, " for "); f >= 0 && f+5 <= sp-5 {
		u := m[f+5 : sp-5]
		if hasPrefix(u, "invalid user ") {
			u = u[len("invalid user "):]
		}
		r.account = u
	} else if hasPrefix(m, "Invalid user ") || hasPrefix(m, "Illegal user ") {
		if 13 <= sp-5 {
			r.account = m[13 : sp-5]
		}
	}
	return setAddr(r, m[sp+1:], k, detail)
}

// stripSSHDSuffix removes trailing " port N", " on X", " sshN", " [preauth]"
// and (optionally) " via X" tokens.
func stripSSHDSuffix(m []byte, via bool) []byte {
	for range 6 {
		switch {
		case hasSuffix(m, " [preauth]"):
			m = m[:len(m)-len(" [preauth]")]
			continue
		}
		sp := lastIndexByte(m, ' ')
		if sp < 0 {
			return m
		}
		last := m[sp+1:]
		head := m[:sp]
		p2 := lastIndexByte(head, ' ')
		if p2 < 0 {
			return m
		}
		word := head[p2+1:]
		switch {
		case string(word) == "port" && isDigits(last):
			m = head[:p2]
		case string(word) == "on" || (via && string(word) == "via"):
			m = head[:p2]
		case hasPrefix(last, "ssh") && isDigits(last[3:]):
			m = head
		default:
			return m
		}
	}
	return m
}

func isDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// sshdFailed handles "Failed METHOD for [invalid user ]USER from HOST port N sshN[: INFO]"
// (and "Accepted …", same shape).
func sshdFailed(msg []byte, r *hit, accepted bool) bool {
	rest := msg[len("Failed "):]
	if accepted {
		rest = msg[len("Accepted "):]
	}
	sp := indexByteFrom(rest, 0, ' ')
	if sp < 0 || !hasPrefix(rest[sp:], " for ") {
		return false
	}
	method := rest[:sp]
	u := rest[sp+len(" for "):]
	invalid := false
	if hasPrefix(u, "invalid user ") {
		u = u[len("invalid user "):]
		invalid = true
	}
	kind := event.AuthFailure
	detail := "failed password"
	switch {
	case accepted:
		kind, detail = event.AuthSuccess, "accepted"
	case invalid:
		kind, detail = event.UnknownAccount, "failed login for invalid user"
	case string(method) == "publickey":
		// A key the server does not know: normal for clients offering
		// several keys. No event, but the pid's address is remembered.
		kind, detail = event.KindNone, "publickey"
	case string(method) != "password":
		detail = "failed login"
	}
	// password, none, keyboard-interactive: sshd writes nothing after
	// "ssh2", so the line is read from its end (user names may hold
	// spaces and a whole forged "from HOST port N ssh2: …").
	// publickey: the info after "ssh2: " is the key type and fingerprint,
	// server-written, so it is recognised and the rest read from the end.
	// Lines of other shapes (very old sshd: no "ssh2", no port, ssh1
	// "ruser" info) fall back to the unique-candidate rule below.
	switch {
	case string(method) == "password" || string(method) == "none" || hasPrefix(method, "keyboard-interactive"):
		if user, host, ok := sshdFromEnd(u); ok {
			r.account = user
			return setAddr(r, host, kind, detail)
		}
	case string(method) == "publickey":
		if i := lastIndexStr(u, " ssh2: "); i >= 0 && keyInfo(u[i+len(" ssh2: "):]) {
			if user, host, ok := sshdFromEnd(u[:i+len(" ssh2")]); ok {
				r.account = user
				return setAddr(r, host, kind, detail)
			}
		} else if user, host, ok := sshdFromEnd(u); ok {
			r.account = user
			return setAddr(r, host, kind, detail)
		}
	}
	// Other methods (hostbased: the info holds the client's user and host
	// names, attacker text): the well-formed "from HOST port N[ sshN]"
	// followed by the end of the line or ": " must be unique: the user name (left) and the auth info
	// (right, e.g. hostbased client user/host) are attacker text. Every
	// OpenSSH since 2.x logs the port; a candidate without one counts only
	// when there is no candidate with one (very old or rewritten logs).
	var found, weak []byte
	count, weakCount, at, weakAt := 0, 0, 0, 0
	for off := 0; off < len(u); {
		k := indexStr(u[off:], " from ")
		if k < 0 {
			break
		}
		k += off
		off = k + 1
		h, withPort, ok := sshdFromTail(u[k+len(" from "):])
		if !ok {
			continue
		}
		if withPort {
			count++
			found, at = h, k
		} else {
			weakCount++
			weak, weakAt = h, k
		}
	}
	if count == 0 && weakCount > 0 {
		count, found, at = weakCount, weak, weakAt
	}
	if count == 0 {
		return false
	}
	if count > 1 {
		r.kind, r.detail = event.InjectionSuspect, "ambiguous address in sshd failure"
		return true
	}
	r.account = u[:at]
	return setAddr(r, found, kind, detail)
}

// sshdChangeOfUser reads packet.c's "Disconnecting %s: %.100s" where %s
// is "invalid user USER HOST port N" (or "authenticating user …") and the
// reason "Change of username or service not allowed: (USER,SVC) -> (USER2,SVC2)".
// USER and USER2 are attacker text with any bytes, so the host is the token
// right before " port N: Change of username or service not allowed:", and
// that marker must occur exactly once (old sshd without the port: the token
// before ": Change of …", again unique).
func sshdChangeOfUser(msg []byte, r *hit) bool {
	const mk = ": Change of username or service not allowed:"
	var host []byte
	count := 0
	for off := 0; off < len(msg); {
		k := indexStr(msg[off:], mk)
		if k < 0 {
			break
		}
		k += off
		off = k + 1
		head := msg[:k]
		// " port N" before the marker (optional)
		j := len(head)
		for j > 0 && head[j-1] >= '0' && head[j-1] <= '9' {
			j--
		}
		if j < len(head) && hasSuffix(head[:j], " port ") {
			head = head[:j-len(" port ")]
		}
		sp := lastIndexByte(head, ' ')
		if sp < 0 {
			continue
		}
		if _, _, ok := parseHostPort(head[sp+1:]); !ok {
			continue
		}
		count++
		host = head[sp+1:]
		if u := indexStr(head[:sp], "user "); u >= 0 {
			r.account = head[u+5 : sp]
		}
	}
	switch count {
	case 0:
		return false
	case 1:
		return setAddr(r, host, event.AuthFailure, "change of username not allowed")
	}
	r.account = nil
	r.kind, r.detail = event.InjectionSuspect, "ambiguous address in sshd disconnect"
	return true
}

// sshdFromEnd reads "USER from HOST port N ssh2" from its end (sshd's
// auth_log: nothing follows for password, none and keyboard-interactive).
// The host is the token before " port N ssh2"; everything before
// " from HOST" is the user name (attacker text, spaces allowed).
func sshdFromEnd(u []byte) (user, host []byte, ok bool) {
	if !hasSuffix(u, " ssh2") && !hasSuffix(u, " ssh1") {
		return nil, nil, false
	}
	m := u[:len(u)-5]
	j := len(m)
	for j > 0 && m[j-1] >= '0' && m[j-1] <= '9' {
		j--
	}
	if j == len(m) || !hasSuffix(m[:j], " port ") {
		return nil, nil, false
	}
	m = m[:j-len(" port ")]
	sp := lastIndexByte(m, ' ')
	if sp < 0 || !hasSuffix(m[:sp], " from") {
		return nil, nil, false
	}
	return m[:sp-len(" from")], m[sp+1:], true
}

// keyInfo reports whether b is publickey auth info as sshd writes it for a
// plain key: "TYPE FP" (two tokens, no attacker text). Certificates add
// "ID …" (the key id, attacker text) and are not accepted here.
func keyInfo(b []byte) bool {
	sp := indexByteFrom(b, 0, ' ')
	if sp < 1 {
		return false
	}
	for _, c := range b[:sp] {
		if !(isAlnum(c) || c == '-' || c == '@' || c == '.') {
			return false
		}
	}
	fp := b[sp+1:] // "SHA256:…", "MD5:…" or old "1e:fe:…"
	return len(fp) > 8 && indexByteFrom(fp, 0, ' ') < 0
}

// sshdFromTail checks "HOST[ port N[ sshN]]" followed by the end or ": "
// and returns HOST and whether a port was given.
func sshdFromTail(h []byte) ([]byte, bool, bool) {
	e := indexByteFrom(h, 0, ' ')
	if e < 0 {
		e = len(h)
	}
	tail := h[e:]
	withPort := false
	if hasPrefix(tail, " port ") {
		t := tail[len(" port "):]
		j := 0
		for j < len(t) && t[j] >= '0' && t[j] <= '9' {
			j++
		}
		withPort = j > 0
		tail = t[j:]
		if hasPrefix(tail, " ssh") {
			t = tail[4:]
			j = 0
			for j < len(t) && t[j] >= '0' && t[j] <= '9' {
				j++
			}
			tail = t[j:]
		}
	}
	if len(tail) != 0 && !hasPrefix(tail, ": ") {
		return nil, false, false
	}
	if _, _, ok := parseHostPort(h[:e]); !ok {
		return nil, false, false
	}
	return h[:e], withPort, true
}

var notAllowedReasons = [...]string{
	"not listed in AllowUsers", "listed in DenyUsers", "not in any group",
	"a group is listed in DenyGroups", "none of user's groups are listed in AllowGroups",
}

// rootAccount is the account of "ROOT LOGIN REFUSED" lines.
var rootAccount = []byte("root")

// sshdNotAllowed: "User USER from HOST not allowed because REASON[ suffix]".
func sshdNotAllowed(msg []byte, r *hit) bool {
	m := stripSSHDSuffix(msg, false)
	const because = " not allowed because "
	for _, rs := range notAllowedReasons {
		if !hasSuffix(m, rs) || !hasSuffix(m[:len(m)-len(rs)], because) {
			continue
		}
		head := m[:len(m)-len(because)-len(rs)]
		sp := lastIndexByte(head, ' ')
		if sp < 0 || !hasSuffix(head[:sp], " from") {
			return false
		}
		if sp-5 >= 5 {
			r.account = head[5 : sp-5]
		}
		return setAddr(r, head[sp+1:], event.ACLViolation, "user not allowed")
	}
	return false
}

// sshdDisconnect: "Received disconnect from HOST[ port N]:[ ]3: …: Auth fail[ [preauth]]".
func sshdDisconnect(msg []byte, r *hit) bool {
	m := msg[len("Received disconnect from "):]
	var host, tail []byte
	if p := indexStr(m, " port "); p >= 0 && (indexStr(m, ": ") < 0 || p < indexStr(m, ": ")) {
		host = m[:p]
		t := m[p+len(" port "):]
		j := 0
		for j < len(t) && t[j] >= '0' && t[j] <= '9' {
			j++
		}
		tail = t[j:]
	} else {
		c := indexStr(m, ": ")
		if c < 0 {
			return false
		}
		host, tail = m[:c], m[c:]
	}
	tail = trimLeftSpace(trimLeftColon(tail))
	if hasPrefix(tail, "11:") {
		// normal disconnect: releases a pending failure of this pid
		if a, p, ok := parseHostPort(host); ok {
			r.addr, r.port, r.detail = a, p, detailClose
			return true
		}
		return false
	}
	if !hasPrefix(tail, "3:") || !hasSuffix(stripSSHDSuffix(m, false), ": Auth fail") {
		return false
	}
	return setAddr(r, host, event.AuthFailure, "disconnect: auth fail")
}

func trimLeftColon(b []byte) []byte {
	if len(b) > 0 && b[0] == ':' {
		return b[1:]
	}
	return b
}
