package calls

import (
	"net/netip"
	"strings"
	"time"
)

// Auth is one successful authentication of an account from an address.
type Auth struct {
	Time    time.Time
	Service string // "PJSIP", "SIP", "AMI", …
	Account string
	Addr    netip.Addr
}

// securityPrefix checks what precedes the payload: "…res_security_log.c: "
// (Asterisk's log files) or "…res_security_log.c:114 in security_event_stasis_cb: "
// (syslog, which carries file:line and function).
func securityPrefix(pre string) bool {
	const file = "res_security_log.c"
	j := strings.LastIndex(pre, file)
	if j < 0 {
		return false
	}
	between := pre[j+len(file):]
	if between == ": " {
		return true
	}
	if !strings.HasPrefix(between, ":") || !strings.HasSuffix(between, ": ") {
		return false
	}
	num, fn, ok := strings.Cut(between[1:len(between)-2], " in ")
	if !ok || num == "" || strings.Trim(num, "0123456789") != "" || fn == "" {
		return false
	}
	for _, r := range fn {
		if r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// ParseSecurityLine reads a SuccessfulAuth line that res_security_log wrote
// (log/security, messages or syslog — the payload is the same):
//
//	… res_security_log.c: SecurityEvent="SuccessfulAuth",EventTV="2026-11-25T04:00:29.997+0000",Severity="Informational",Service="PJSIP",EventVersion="1",AccountID="1002",SessionID="…",LocalAddress="IPV4/UDP/198.51.100.10/5060",RemoteAddress="IPV4/UDP/203.0.113.60/5060",UsingPassword="1"
//
// It is strict: the fields before AccountID are written by Asterisk, and
// RemoteAddress is taken from its last occurrence, after the SessionID the
// client chose (a Call-ID carrying `",RemoteAddress="…` cannot move it).
// ok=false for any other line.
func ParseSecurityLine(line string) (Auth, bool) {
	const marker = `SecurityEvent="SuccessfulAuth",EventTV="`
	i := strings.Index(line, marker)
	if i < 0 || !securityPrefix(line[:i]) {
		return Auth{}, false
	}
	rest := line[i+len(marker):]
	tv, rest, ok := strings.Cut(rest, `",Severity="`)
	if !ok {
		return Auth{}, false
	}
	t, err := time.Parse("2006-01-02T15:04:05.000-0700", tv)
	if err != nil {
		return Auth{}, false
	}
	_, rest, ok = strings.Cut(rest, `",Service="`)
	if !ok {
		return Auth{}, false
	}
	svc, rest, ok := strings.Cut(rest, `",EventVersion="`)
	if !ok || svc == "" || strings.ContainsAny(svc, `",`) {
		return Auth{}, false
	}
	_, rest, ok = strings.Cut(rest, `",AccountID="`)
	if !ok {
		return Auth{}, false
	}
	acct, rest, ok := strings.Cut(rest, `",SessionID="`)
	if !ok || acct == "" || strings.ContainsAny(acct, `"`) {
		return Auth{}, false
	}
	j := strings.LastIndex(rest, `",RemoteAddress="`)
	if j < 0 {
		return Auth{}, false
	}
	ra := rest[j+len(`",RemoteAddress="`):]
	k := strings.IndexByte(ra, '"')
	if k < 0 {
		return Auth{}, false
	}
	addr, ok := ParseSecurityAddr(ra[:k])
	if !ok {
		return Auth{}, false
	}
	return Auth{Time: t, Service: svc, Account: acct, Addr: addr}, true
}
