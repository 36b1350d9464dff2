package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// ErrSpecial is wrapped by the error returned for bans of special
// addresses (see Special).
var ErrSpecial = errors.New("special address: never banned")

// specialRanges are the addresses that are never the source of a packet
// an attacker sends us, so a ban of them is a forged or broken record, and
// it would hurt: the unspecified address and "this network" (0.0.0.0/8,
// ::), limited broadcast (255.255.255.255) and multicast (224.0.0.0/4 with
// link-local 224.0.0.0/24; ff00::/8 with ff02::/16).
var specialRanges = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified / this-network address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address"},
	{netip.MustParsePrefix("::/128"), "unspecified address"},
	{netip.MustParsePrefix("ff00::/8"), "multicast address"},
}

// Special reports whether p overlaps an unspecified, broadcast or
// multicast address (IPv4-mapped IPv6 compared as IPv4; an invalid prefix
// is special: never guess). Such a prefix is never banned, on any path:
// WithAllowlist's gate refuses it before the kernel. A prefix wide enough
// to cover one of them (0.0.0.0/0, ::/0) is refused too.
func Special(p netip.Prefix) bool {
	_, ok := specialWhat(p)
	return ok
}

func specialWhat(p netip.Prefix) (string, bool) {
	if !p.IsValid() {
		return "invalid prefix", true
	}
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() {
		a, bits = a.Unmap(), max(bits-96, 0)
	}
	q := netip.PrefixFrom(a, bits).Masked()
	for _, s := range specialRanges {
		if s.p.Overlaps(q) {
			return s.what, true
		}
	}
	return "", false
}

// SpecialError names the bans refused because they cover a special
// address. It is a refusal like the allowlist's: errors.Is(err,
// ErrAllowlisted) holds and errors.As gives an *AllowlistError with the
// same prefixes, so that callers which keep refused entries out of the
// store and out of their retries (the daemon) do so for these too.
type SpecialError struct {
	Refused []netip.Prefix
}

func (e *SpecialError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "firewall: refused to ban %d special address(es), never the source of an attack (the record that named them is forged or broken)", len(e.Refused))
	for i, p := range e.Refused {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(e.Refused)-10)
			break
		}
		what, _ := specialWhat(p)
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s (%s)", sep, p, what)
	}
	return b.String()
}

// Is reports ErrSpecial and ErrAllowlisted (a refusal, see SpecialError).
func (e *SpecialError) Is(target error) bool { return target == ErrSpecial || target == ErrAllowlisted }

// As fills an *AllowlistError with the refused prefixes.
func (e *SpecialError) As(target any) bool {
	if t, ok := target.(**AllowlistError); ok {
		*t = &AllowlistError{Refused: e.Refused}
		return true
	}
	return false
}

// withoutSpecial drops the bans of special addresses from bans, logs them,
// adds the rest with add, and returns add's error joined with a
// *SpecialError naming the refused ones.
func withoutSpecial(ctx context.Context, bans []Ban, log *slog.Logger, add func(context.Context, []Ban) error) error {
	var refused []netip.Prefix
	keep := bans
	for i, b := range bans {
		if !Special(b.Prefix) {
			if refused != nil {
				keep = append(keep, b)
			}
			continue
		}
		if refused == nil {
			keep = append(make([]Ban, 0, len(bans)-1), bans[:i]...)
		}
		what, _ := specialWhat(b.Prefix)
		log.Warn("firewall: refusing to ban a special address", "prefix", b.Prefix, "what", what)
		refused = append(refused, b.Prefix)
	}
	if refused == nil {
		return add(ctx, bans)
	}
	var err error
	if len(keep) > 0 {
		err = add(ctx, keep)
	}
	// One list of refusals for errors.As(err, **AllowlistError): the
	// allowlist's own, when it refused some too, names these as well.
	var ae *AllowlistError
	if errors.As(err, &ae) {
		ae.Refused = append(ae.Refused, refused...)
	}
	return errors.Join(err, &SpecialError{Refused: refused})
}
