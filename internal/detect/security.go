package detect

import (
	"net/netip"

	"github.com/pbxguard/pbxguard/internal/event"
)

// res_security_log lines:
//
//	SecurityEvent="NAME",EventTV="…",Severity="…",Service="SVC",EventVersion="N",
//	AccountID="…",SessionID="…",LocalAddress="IPV4/UDP/a/p",RemoteAddress="IPV4/UDP/a/p"[,EVENT FIELDS][,Module="…"][,SessionTV="…"]
//
// Field order is fixed by main/security_events.c (required IEs, then the
// optional ones). See the package comment in asterisk.go for how the
// RemoteAddress is chosen when attacker text imitates it.

type secType struct {
	name string
	kind event.Kind
	// tailServer: every field after RemoteAddress is server-written, so
	// the last well-formed RemoteAddress is the real one.
	tailServer bool
	detail     string
}

var secTypes = [...]secType{
	{"InvalidAccountID", event.UnknownAccount, true, "InvalidAccountID"},
	{"ChallengeResponseFailed", event.AuthFailure, true, "ChallengeResponseFailed"},
	{"InvalidPassword", event.AuthFailure, true, "InvalidPassword"},
	{"FailedACL", event.ACLViolation, true, "FailedACL"},
	{"RequestNotAllowed", event.BadRequest, false, "RequestNotAllowed"},
	{"RequestBadFormat", event.BadRequest, false, "RequestBadFormat"},
	{"RequestNotSupported", event.BadRequest, false, "RequestNotSupported"},
	{"AuthMethodNotAllowed", event.BadRequest, false, "AuthMethodNotAllowed"},
	{"InvalidTransport", event.BadRequest, true, "InvalidTransport"},
	{"UnexpectedAddress", event.BadRequest, true, "UnexpectedAddress"},
	{"SuccessfulAuth", event.AuthSuccess, true, "SuccessfulAuth"},
	{"ChallengeSent", event.ChallengeSent, true, "ChallengeSent"},
}

func securityEvent(msg []byte, r *hit) bool {
	const pfx = "SecurityEvent=\""
	if !hasPrefix(msg, pfx) {
		return false
	}
	rest := msg[len(pfx):]
	q := indexByteFrom(rest, 0, '"')
	if q < 0 {
		return false
	}
	name := rest[:q]
	var st *secType
	for i := range secTypes {
		if string(name) == secTypes[i].name {
			st = &secTypes[i]
			break
		}
	}
	if st == nil {
		return false
	}
	rest = rest[q+1:]
	r.structured = true
	// Cut inside an attacker field that can hold a newline (AccountID is
	// the URL-decoded From user; AMI's RequestType/RequestParams): every
	// complete record ends with a closing quote, and the next lines up to
	// the field's length are not Asterisk's.
	if !hasSuffix(rest, "\"") || len(rest) < 2 {
		r.cut = maxSecurityField
	}
	// Server-written header fields, in order, up to AccountID/SessionID.
	for {
		key, val, next, ok := nextField(rest)
		if !ok {
			break
		}
		switch string(key) {
		case "EventTV", "Severity", "EventVersion":
		case "Service":
			r.svc = serviceOf(val)
		default:
			ok = false
		}
		if !ok {
			break
		}
		rest = rest[next:]
	}
	sid := -1 // where the SessionID value starts in rest
	if hasPrefix(rest, ",AccountID=\"") {
		v := rest[len(",AccountID=\""):]
		if e := indexStr(v, "\",SessionID=\""); e >= 0 && e <= 64 && indexByteFrom(v[:e], 0, '"') < 0 {
			if e > 0 {
				r.account = v[:e]
			}
			sid = len(",AccountID=\"") + e + len("\",SessionID=\"")
		}
	}
	// RemoteAddress candidates.
	const mk = "\",RemoteAddress=\""
	count := 0
	var last netip.Addr
	var lastPort uint16
	lastEnd, lastRemote := 0, 0
	for off := 0; off < len(rest); {
		k := indexStr(rest[off:], mk)
		if k < 0 {
			break
		}
		k += off
		off = k + 1
		v := rest[k+len(mk):]
		a, p, end, ok := secAddr(v)
		if !ok {
			continue
		}
		after := v[end+1:]
		if len(after) != 0 && after[0] != ',' {
			continue
		}
		// the server writes LocalAddress right before RemoteAddress
		if !localBefore(rest[:k+1]) {
			continue
		}
		count++
		last, lastPort, lastRemote = a, p, k
		lastEnd = len(rest) - len(after)
	}
	if count == 0 {
		// Every record has a RemoteAddress: without one, the line was cut
		// (by a newline in AccountID, before it). What follows is not
		// Asterisk's.
		r.cut = maxSecurityField
		r.kind, r.detail = event.InjectionSuspect, "security event cut by a newline in an attacker field"
		return true
	}
	if count > 1 && !(st.tailServer && serverTail(rest[lastEnd:])) {
		r.kind, r.detail = event.InjectionSuspect, "ambiguous RemoteAddress in security event"
		return true
	}
	r.addr, r.port, r.kind, r.detail = last, lastPort, st.kind, st.detail
	// SessionID (pjsip: the request's Call-ID) runs up to the LocalAddress
	// the server wrote before the chosen RemoteAddress: the last
	// `",LocalAddress="` before it (attacker text lies to its left).
	if sid >= 0 {
		if l := lastIndexStr(rest[:lastRemote], "\",LocalAddress=\""); l >= sid {
			r.request = rest[sid:l]
		}
	}
	return true
}

// nextField reads `,Key="value"` (value without quotes) from the start of b.
func nextField(b []byte) (key, val []byte, next int, ok bool) {
	if len(b) < 4 || b[0] != ',' {
		return nil, nil, 0, false
	}
	eq := indexByteFrom(b, 1, '=')
	if eq < 2 || eq > 32 || eq+1 >= len(b) || b[eq+1] != '"' {
		return nil, nil, 0, false
	}
	for _, c := range b[1:eq] {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return nil, nil, 0, false
		}
	}
	e := indexByteFrom(b, eq+2, '"')
	if e < 0 {
		return nil, nil, 0, false
	}
	return b[1:eq], b[eq+2 : e], e + 1, true
}

// serverTail reports whether b is a sequence of well-formed server fields.
func serverTail(b []byte) bool {
	for len(b) > 0 {
		key, _, next, ok := nextField(b)
		if !ok {
			return false
		}
		switch string(key) {
		// Challenge, Response, ExpectedResponse, ReceivedChallenge and
		// ReceivedHash: the digest values are tokens or quoted strings
		// (pjsip and chan_sip both parse them so): they cannot hold `",`.
		case "ACLName", "Module", "SessionTV", "UsingPassword", "Challenge", "ExpectedAddress", "AttemptedTransport",
			"Response", "ExpectedResponse", "ReceivedChallenge", "ReceivedHash":
		default:
			return false
		}
		b = b[next:]
	}
	return true
}

// localBefore reports whether b ends with `,LocalAddress="PROTO/T/ADDR/PORT"`
// (b ends at the quote that closes the LocalAddress value).
func localBefore(b []byte) bool {
	const mk = ",LocalAddress="
	if len(b) < 2 {
		return false
	}
	// the value (at most 80 bytes, no quote) opens at the previous quote
	j := len(b) - 2
	for j >= 0 && b[j] != '"' && len(b)-j < 90 {
		j--
	}
	if j < len(mk) || b[j] != '"' || !hasSuffix(b[:j], mk) {
		return false
	}
	// shape only ("IPV4/…" or "IPV6/…"): text that imitates it could
	// imitate a valid address as well
	v := b[j+1:]
	return hasPrefix(v, "IPV4/") || hasPrefix(v, "IPV6/")
}

// secAddr parses `IPV4/UDP/1.2.3.4/5060"` or `IPV6/UDP/2001:db8::1/5060"`
// and returns the address, the port and the index of the closing quote.
func secAddr(v []byte) (a netip.Addr, port uint16, end int, ok bool) {
	if !hasPrefix(v, "IPV4/") && !hasPrefix(v, "IPV6/") {
		return a, 0, 0, false
	}
	e := indexByteFrom(v, 0, '"')
	if e < 0 || e > 80 {
		return a, 0, 0, false
	}
	f := v[5:e]
	s := indexByteFrom(f, 0, '/')
	if s < 2 || s > 5 {
		return a, 0, 0, false
	}
	for _, c := range f[:s] {
		if c < 'A' || c > 'Z' {
			return a, 0, 0, false
		}
	}
	ap := f[s+1:]
	p := lastIndexByte(ap, '/')
	if p < 2 {
		return a, 0, 0, false
	}
	if port, ok = parsePort(ap[p+1:]); !ok {
		return a, 0, 0, false
	}
	if a, ok = parseAddr(ap[:p]); !ok {
		return a, 0, 0, false
	}
	return a, port, e, true
}

func serviceOf(v []byte) event.Service {
	switch string(v) {
	case "SIP":
		return event.ServiceSIP
	case "PJSIP":
		return event.ServicePJSIP
	case "AMI":
		return event.ServiceAMI
	case "IAX2", "IAX":
		return event.ServiceIAX2
	case "HTTP", "ARI":
		return event.ServiceHTTP
	}
	return event.ServiceUnknown
}
