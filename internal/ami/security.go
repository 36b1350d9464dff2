package ami

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// securityKinds maps Asterisk security event names (res_security_log /
// security_events.c, "Privilege: security,all") to event kinds. The detail
// strings are constants so the hot path allocates nothing.
var securityKinds = map[string]struct {
	kind   event.Kind
	detail string
}{
	"InvalidAccountID":        {event.UnknownAccount, "InvalidAccountID"},
	"ChallengeResponseFailed": {event.AuthFailure, "ChallengeResponseFailed"},
	"InvalidPassword":         {event.AuthFailure, "InvalidPassword"},
	"FailedACL":               {event.ACLViolation, "FailedACL"},
	"ChallengeSent":           {event.ChallengeSent, "ChallengeSent"},
	"SuccessfulAuth":          {event.AuthSuccess, "SuccessfulAuth"},
	"RequestBadFormat":        {event.BadRequest, "RequestBadFormat"},
	"RequestNotAllowed":       {event.BadRequest, "RequestNotAllowed"},
	"AuthMethodNotAllowed":    {event.BadRequest, "AuthMethodNotAllowed"},
	"InvalidTransport":        {event.BadRequest, "InvalidTransport"},
	"UnexpectedAddress":       {event.BadRequest, "UnexpectedAddress"},
}

// SecurityEvent turns an Asterisk security event into ev (reset first) and
// reports whether m was one. Everything comes from headers Asterisk writes
// itself: the address and port from RemoteAddress ("IPV4/UDP/1.2.3.4/5060",
// "IPV6/UDP/2001:db8::1/5060"), the service from Service (SIP, PJSIP, IAX2,
// AMI), the account from AccountID (attacker-chosen text, used only as a
// label), the time from EventTV (zero when absent: use the receipt time).
//
// Structured is always set: Asterisk wrote each field separately, and the
// jail counts such an event and the NOTICE twin in the log once.
//
// Only events whose Privilege names the security class count. A message
// that repeats Event or RemoteAddress (which Asterisk never does, so
// something forged it) yields Kind InjectionSuspect with no address.
func SecurityEvent(m *Message, ev *event.Event) bool {
	ev.Reset()
	var name, remote, service, account, tv string
	var nEvent, nRemote, nPriv int
	security := false
	for _, h := range m.Headers {
		if len(h.Key) < 5 || len(h.Key) > 13 {
			continue // none of the keys below
		}
		switch {
		case strings.EqualFold(h.Key, "Event"):
			nEvent++
			if nEvent == 1 {
				name = h.Value
			}
		case strings.EqualFold(h.Key, "Privilege"):
			nPriv++
			if nPriv == 1 { // Asterisk's own, right after Event
				security = hasClass(h.Value, "security")
			}
		case strings.EqualFold(h.Key, "RemoteAddress"):
			nRemote++
			if nRemote == 1 {
				remote = h.Value
			}
		case strings.EqualFold(h.Key, "Service"):
			if service == "" {
				service = h.Value
			}
		case strings.EqualFold(h.Key, "AccountID"):
			if account == "" {
				account = h.Value
			}
		case strings.EqualFold(h.Key, "EventTV"):
			if tv == "" {
				tv = h.Value
			}
		}
	}
	k, ok := securityKinds[name]
	if !ok || !security {
		return false
	}
	ev.Kind = k.kind
	ev.Detail = k.detail
	ev.Detector = "ami"
	ev.Structured = true
	ev.Service = parseService(service)
	ev.Account = account
	ev.Time = parseEventTV(tv)
	if nEvent != 1 || nRemote > 1 {
		ev.Kind = event.InjectionSuspect
		return true
	}
	if addr, port, ok := ParseRemoteAddress(remote); ok {
		ev.Addr, ev.Port = addr, port
	}
	return true
}

// hasClass reports whether a Privilege value ("security,all") names class.
func hasClass(priv, class string) bool {
	for priv != "" {
		var c string
		c, priv, _ = strings.Cut(priv, ",")
		if strings.EqualFold(strings.TrimSpace(c), class) {
			return true
		}
	}
	return false
}

func parseService(s string) event.Service {
	switch strings.ToUpper(s) {
	case "SIP":
		return event.ServiceSIP
	case "PJSIP":
		return event.ServicePJSIP
	case "IAX2", "IAX":
		return event.ServiceIAX2
	case "AMI":
		return event.ServiceAMI
	case "ARI", "HTTP", "AJAM":
		return event.ServiceHTTP
	}
	return event.ServiceUnknown
}

// ParseRemoteAddress parses the address form of Asterisk security events,
// "IPV4/UDP/203.0.113.5/5060" or "IPV6/TCP/2001:db8::5/5061" (brackets
// around the IPv6 address and a missing port are tolerated). IPv4-mapped
// IPv6 addresses are unmapped and zones dropped.
func ParseRemoteAddress(s string) (netip.Addr, uint16, bool) {
	fam, rest, ok := strings.Cut(s, "/")
	if !ok || !strings.EqualFold(fam, "IPV4") && !strings.EqualFold(fam, "IPV6") {
		return netip.Addr{}, 0, false
	}
	_, rest, ok = strings.Cut(rest, "/") // transport
	if !ok {
		return netip.Addr{}, 0, false
	}
	host, portStr := rest, ""
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		host, portStr = rest[:i], rest[i+1:]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	a = a.Unmap().WithZone("")
	var port uint16
	if portStr != "" {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			return netip.Addr{}, 0, false
		}
		port = uint16(p)
	}
	return a, port, true
}

// parseEventTV reads "2026-11-25T04:00:26.798+0000" (Asterisk 12+) or
// "1318427581-123456" (seconds-microseconds, Asterisk 1.8–11). Zero when
// neither.
func parseEventTV(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	if t, err := time.Parse("2006-01-02T15:04:05-0700", s); err == nil {
		return t.UTC()
	}
	if sec, usec, ok := strings.Cut(s, "-"); ok {
		a, err1 := strconv.ParseInt(sec, 10, 64)
		b, err2 := strconv.ParseInt(usec, 10, 64)
		if err1 == nil && err2 == nil && b >= 0 && b < 1e6 {
			return time.Unix(a, b*1000).UTC()
		}
	}
	return time.Time{}
}

// IsSecurity reports whether m is an event of the security class (cheap:
// a Subscribe filter for the jails).
func IsSecurity(m *Message) bool {
	return m.IsEvent() && hasClass(m.Get("Privilege"), "security")
}
