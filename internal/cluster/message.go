// Package cluster shares bans between pbxguard nodes over NATS JetStream:
// every local ban and unban is published on pbxguard.bans.<node> by a
// worker behind a bounded outbox (the kernel ban never waits for NATS), and
// a durable consumer per node applies the other nodes' bans through the
// daemon's own ban path, where the allowlist and the trunks win.
//
// Messages from the wire are data from another machine: they are
// size-capped, versioned JSON, and every field is checked (schema, sizes,
// addresses, durations, subject = origin node) before anything is applied.
// A message that fails is dropped and counted by reason.
package cluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Wire limits.
const (
	// Version is the message schema version this code writes and reads.
	Version = 1
	// MaxMessage is the largest message accepted, in bytes.
	MaxMessage = 2048
	// MaxReason is the longest reason, in bytes.
	MaxReason = 256
	// MaxKinds is the most entries in Kinds.
	MaxKinds = 16
	// MaxBanDuration is the longest ban a message may carry.
	MaxBanDuration = 366 * 24 * time.Hour
	// MaxClockSkew is how far in the future an origin time may be.
	MaxClockSkew = time.Minute
	// SubjectPrefix + node is where a node publishes.
	SubjectPrefix = "pbxguard.bans."
	// Widest prefixes a message may ban.
	minBits4 = 24
	minBits6 = 48
)

// Op is what a message asks for.
type Op string

// The operations.
const (
	OpBan   Op = "ban"
	OpUnban Op = "unban"
)

// Ban is one ban or unban as nodes share it.
type Ban struct {
	Op       Op
	Prefix   netip.Prefix   // what the origin put in its kernel
	Jail     string         // the origin's jail ("manual", "fraud", …)
	Reason   string         // free text, at most MaxReason bytes, no control bytes
	Kinds    map[string]int // event kinds and their counts, when known
	Origin   string         // the node that banned
	At       time.Time      // origin time: when the origin banned (or unbanned)
	Until    time.Time      // end of the ban (zero for an unban)
	BanCount int            // how many times the origin has banned the address
}

// wire is the JSON form: at is Unix microseconds (the propagation delay is
// measured from it), until Unix milliseconds.
type wire struct {
	V        int            `json:"v"`
	Op       Op             `json:"op"`
	Prefix   string         `json:"prefix"`
	Jail     string         `json:"jail"`
	Reason   string         `json:"reason,omitempty"`
	Kinds    map[string]int `json:"kinds,omitempty"`
	Origin   string         `json:"origin"`
	At       int64          `json:"at"`
	Until    int64          `json:"until,omitempty"`
	BanCount int            `json:"count,omitempty"`
}

// Subject is the subject node publishes on.
func Subject(node string) string { return SubjectPrefix + node }

// MsgID is the Nats-Msg-Id that de-duplicates a message: the same ban
// published twice (a retry after a lost ack) is stored once.
func (b Ban) MsgID() string {
	return fmt.Sprintf("%s/%s/%s/%d", b.Origin, b.Op, b.Prefix, b.At.UnixNano())
}

// ValidName reports whether s may be a node or jail name: 1 to 64 bytes
// of letters, digits, '-' and '_' (a NATS subject token, no wildcards).
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// CleanReason makes a local reason fit the wire: control bytes become
// '?', invalid UTF-8 is replaced, and it is cut to MaxReason bytes.
func CleanReason(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > MaxReason {
		s = s[:MaxReason]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}

// Encode makes the message for b. The reason is cleaned (CleanReason);
// everything else must already be valid (Check).
func Encode(b Ban) ([]byte, error) {
	b.Reason = CleanReason(b.Reason)
	if err := b.check(time.Time{}); err != nil {
		return nil, err
	}
	w := wire{V: Version, Op: b.Op, Prefix: b.Prefix.String(), Jail: b.Jail, Reason: b.Reason, Kinds: b.Kinds,
		Origin: b.Origin, At: b.At.UnixMicro(), BanCount: b.BanCount}
	if b.Op == OpBan {
		w.Until = b.Until.UnixMilli()
	}
	data, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxMessage {
		return nil, &Reject{Reason: ReasonSize, Detail: fmt.Sprintf("%d bytes", len(data))}
	}
	return data, nil
}

// Reasons a message is rejected (the label of the rejected metric).
const (
	ReasonSize     = "size"
	ReasonSchema   = "schema"
	ReasonVersion  = "version"
	ReasonSubject  = "subject"
	ReasonOrigin   = "origin"
	ReasonPrefix   = "prefix"
	ReasonDuration = "duration"
	ReasonTime     = "time"
	ReasonField    = "field"
	ReasonNotFrom  = "not_accepted"
)

// Reject is why a message was dropped.
type Reject struct {
	Reason string // one of the Reason constants
	Detail string
}

func (r *Reject) Error() string { return "cluster message rejected (" + r.Reason + "): " + r.Detail }

func reject(reason, format string, args ...any) *Reject {
	return &Reject{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Decode reads and checks a message received on subject at now. The
// origin node must be the subject's last token: a node may only speak for
// itself (and NATS permissions make sure it can only publish there).
func Decode(subject string, data []byte, now time.Time) (Ban, error) {
	if len(data) > MaxMessage {
		return Ban{}, reject(ReasonSize, "%d bytes (at most %d)", len(data), MaxMessage)
	}
	node, ok := strings.CutPrefix(subject, SubjectPrefix)
	if !ok || !ValidName(node) {
		return Ban{}, reject(ReasonSubject, "subject %q is not %s<node>", subject, SubjectPrefix)
	}
	var w wire
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Ban{}, reject(ReasonSchema, "%v", err)
	}
	if dec.More() {
		return Ban{}, reject(ReasonSchema, "trailing data")
	}
	if w.V != Version {
		return Ban{}, reject(ReasonVersion, "version %d (this node reads %d)", w.V, Version)
	}
	if w.Origin != node {
		return Ban{}, reject(ReasonOrigin, "origin %q published on %q", w.Origin, subject)
	}
	pfx, err := netip.ParsePrefix(w.Prefix)
	if err != nil {
		return Ban{}, reject(ReasonPrefix, "%q is not a prefix", w.Prefix)
	}
	b := Ban{Op: w.Op, Prefix: pfx, Jail: w.Jail, Reason: w.Reason, Kinds: w.Kinds, Origin: w.Origin,
		At: time.UnixMicro(w.At), BanCount: w.BanCount}
	if w.Op == OpBan {
		b.Until = time.UnixMilli(w.Until)
	} else if w.Until != 0 {
		return Ban{}, reject(ReasonSchema, "an unban has no until")
	}
	if err := b.check(now); err != nil {
		return Ban{}, err
	}
	return b, nil
}

// check validates b; a zero now skips the clock checks.
func (b Ban) check(now time.Time) error {
	if b.Op != OpBan && b.Op != OpUnban {
		return reject(ReasonSchema, "op %q (ban or unban)", b.Op)
	}
	if !ValidName(b.Origin) {
		return reject(ReasonOrigin, "origin %q is not a node name", b.Origin)
	}
	if !ValidName(b.Jail) {
		return reject(ReasonField, "jail %q is not a jail name", b.Jail)
	}
	if len(b.Reason) > MaxReason || !utf8.ValidString(b.Reason) || strings.IndexFunc(b.Reason, unicode.IsControl) >= 0 {
		return reject(ReasonField, "reason: more than %d bytes, invalid UTF-8 or control bytes", MaxReason)
	}
	if len(b.Kinds) > MaxKinds {
		return reject(ReasonField, "%d kinds (at most %d)", len(b.Kinds), MaxKinds)
	}
	for k, n := range b.Kinds {
		if !ValidName(k) || n < 0 || n > 1_000_000 {
			return reject(ReasonField, "kinds: %q: %d", k, n)
		}
	}
	if b.BanCount < 0 || b.BanCount > 1_000_000 {
		return reject(ReasonField, "count %d", b.BanCount)
	}
	if err := checkPrefix(b.Prefix); err != nil {
		return err
	}
	if b.At.UnixMicro() <= 0 {
		return reject(ReasonTime, "no origin time")
	}
	if !now.IsZero() && b.At.After(now.Add(MaxClockSkew)) {
		return reject(ReasonTime, "origin time %s is in the future (clock skew over %s?)", b.At.UTC().Format(time.RFC3339), MaxClockSkew)
	}
	if b.Op == OpBan {
		d := b.Until.Sub(b.At)
		if d <= 0 || d > MaxBanDuration {
			return reject(ReasonDuration, "ban of %s (more than 0, at most %s)", d, MaxBanDuration)
		}
	}
	return nil
}

// checkPrefix refuses what no node should ban: non-canonical or too wide
// prefixes, and addresses that are not unicast Internet hosts.
func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return reject(ReasonPrefix, "no prefix")
	}
	a := p.Addr()
	if a.Zone() != "" || a.Is4In6() || p.Masked() != p {
		return reject(ReasonPrefix, "%s is not canonical", p)
	}
	if a.Is4() && p.Bits() < minBits4 || a.Is6() && p.Bits() < minBits6 {
		return reject(ReasonPrefix, "%s is wider than /%d (IPv4) or /%d (IPv6)", p, minBits4, minBits6)
	}
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a.IsInterfaceLocalMulticast() {
		return reject(ReasonPrefix, "%s is not a unicast host address", p)
	}
	return nil
}
