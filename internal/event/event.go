// Package event defines the one type every pipeline stage speaks: an Event
// is something a server said about a remote address (a failed login, a
// rejected call, a scan) or about a call.
package event

import (
	"net/netip"
	"time"
)

// Kind says what happened. The zero value is KindNone.
type Kind uint8

// Kinds. Keep the order stable: the values are stored and counted in arrays.
const (
	KindNone Kind = iota
	// AuthFailure: a known account failed to authenticate (wrong password,
	// digest failure, ACL-less auth failure).
	AuthFailure
	// UnknownAccount: a request named an account/endpoint that does not exist.
	UnknownAccount
	// ACLViolation: the source failed an ACL (endpoint ACL, contact ACL, AMI ACL).
	ACLViolation
	// CallRejected: a call to a number/extension that is not in the context.
	CallRejected
	// Scan: a request that carries a known scanner signature, or a probe
	// pattern only scanners produce.
	Scan
	// AuthSuccess: a successful authentication (correlation only, never a failure).
	AuthSuccess
	// ChallengeSent: the server challenged a request (correlation only).
	ChallengeSent
	// InjectionSuspect: the line carries text that imitates a server-written
	// field; the address could not be trusted and is left empty.
	InjectionSuspect
	// BadRequest: malformed request, bad transport, unexpected address and
	// other protocol violations that only attackers produce.
	BadRequest
	numKinds
)

// NumKinds is the number of kinds including KindNone, for arrays indexed by Kind.
const NumKinds = int(numKinds)

var kindNames = [numKinds]string{
	KindNone:         "none",
	AuthFailure:      "auth_failure",
	UnknownAccount:   "unknown_account",
	ACLViolation:     "acl_violation",
	CallRejected:     "call_rejected",
	Scan:             "scan",
	AuthSuccess:      "auth_success",
	ChallengeSent:    "challenge_sent",
	InjectionSuspect: "injection_suspect",
	BadRequest:       "bad_request",
}

// String returns the kind's stable snake_case name, as used in JSON and config.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, bool) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), true
		}
	}
	return KindNone, false
}

// MarshalText implements encoding.TextMarshaler.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// IsFailure reports whether the kind counts against an address in a jail.
// AuthSuccess, ChallengeSent and InjectionSuspect (no trusted address) do not.
func (k Kind) IsFailure() bool {
	switch k {
	case AuthFailure, UnknownAccount, ACLViolation, CallRejected, Scan, BadRequest:
		return true
	}
	return false
}

// Service is the protocol or daemon that produced the event.
type Service uint8

// Services.
const (
	ServiceUnknown Service = iota
	ServiceSIP             // chan_sip
	ServicePJSIP           // res_pjsip / chan_pjsip
	ServiceIAX2
	ServiceAMI
	ServiceSSH
	ServiceHTTP // Asterisk HTTP/ARI
	numServices
)

// NumServices is the number of services including ServiceUnknown.
const NumServices = int(numServices)

var serviceNames = [numServices]string{"unknown", "sip", "pjsip", "iax2", "ami", "ssh", "http"}

// String returns the service's lower-case name.
func (s Service) String() string {
	if s < numServices {
		return serviceNames[s]
	}
	return "unknown"
}

// ParseService is the inverse of Service.String.
func ParseService(s string) (Service, bool) {
	for i, n := range serviceNames {
		if n == s {
			return Service(i), true
		}
	}
	return ServiceUnknown, false
}

// MarshalText implements encoding.TextMarshaler.
func (s Service) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Event is one observation about a remote address. Detectors fill it in
// place (see detect.Detector) so that the hot path allocates nothing.
//
// Account and Detail must be cheap to produce: detectors use constant
// strings or an interning table, never a fresh string per line.
type Event struct {
	Time     time.Time  // when the server wrote it (from the line), or receipt time
	Addr     netip.Addr // the true source address; invalid (zero) when unknown or untrusted
	Port     uint16     // source port, 0 when unknown
	Service  Service
	Kind     Kind
	Account  string // user, extension or endpoint the request named; "" when unknown
	Detail   string // short reason, e.g. "Wrong password", "No matching endpoint found"
	Detector string // name of the detector or source that produced it ("asterisk", "sshd", "ami")
	// Structured is true when the event comes from a structured record
	// whose fields the server wrote one by one (a res_security_log
	// SecurityEvent line, an AMI security event), as opposed to a free-text
	// NOTICE. Asterisk reports many failures twice, once in each form; the
	// jail uses this flag to count such twins once.
	Structured bool
	// Wire is true when the event was seen on the wire (the packet sensor)
	// rather than read from a log: a third report of the same request,
	// besides the NOTICE and the security event, that the jail counts once.
	Wire bool
	// Request identifies the request the line reports, for pairing the
	// twins Asterisk writes of one request: a hash (RequestKey) of the SIP
	// Call-ID (res_pjsip's "(callid: …)", a security event's SessionID);
	// 0 when the line names none. Attacker text: used only to tell apart
	// the requests of one address, never to name one.
	Request uint64
}

// RequestKey hashes a request identifier (a Call-ID) for Event.Request:
// FNV-1a, never 0, no allocation. 0 for an empty identifier.
func RequestKey(id []byte) uint64 {
	if len(id) == 0 {
		return 0
	}
	h := uint64(14695981039346656037)
	for _, c := range id {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return max(h, 1)
}

// Reset clears e for reuse.
func (e *Event) Reset() { *e = Event{} }
