package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// ErrAllowlisted is wrapped by the error WithAllowlist returns for refused
// entries.
var ErrAllowlisted = errors.New("allowlisted: never banned")

// AllowlistError names the entries that were refused.
type AllowlistError struct {
	Refused []netip.Prefix
}

func (e *AllowlistError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "firewall: refused %d allowlisted entr", len(e.Refused))
	if len(e.Refused) == 1 {
		b.WriteString("y")
	} else {
		b.WriteString("ies")
	}
	for i, p := range e.Refused {
		if i == 10 {
			fmt.Fprintf(&b, " ... and %d more", len(e.Refused)-10)
			break
		}
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		b.WriteString(sep + p.String())
	}
	return b.String()
}

func (e *AllowlistError) Unwrap() error { return ErrAllowlisted }

// WithAllowlist wraps b so that no entry overlapping the allowlist reaches
// the kernel: denied(p) reports whether prefix p overlaps an allowlisted
// address or network (a /64 that contains one allowlisted address is
// refused whole, never narrowed). Refused entries are dropped from the
// batch, logged, and named in the returned *AllowlistError (errors.Is
// ErrAllowlisted); the rest are added. Defence in depth: the jail checks
// the allowlist too, this is the last gate before the kernel. Refusals are
// logged with the wrapped backend's logger (Options.Logger).
func WithAllowlist(b Backend, denied func(netip.Prefix) bool) Backend {
	log := slog.New(slog.DiscardHandler)
	if l, ok := b.(interface{ logger() *slog.Logger }); ok {
		log = l.logger()
	}
	return &allowlisted{Backend: b, denied: denied, log: log}
}

// PrefixDenier returns a denied func for WithAllowlist from a list of
// allowlisted prefixes: true when p overlaps any of them. IPv4-mapped IPv6
// is compared as IPv4.
func PrefixDenier(allow []netip.Prefix) func(netip.Prefix) bool {
	norm := make([]netip.Prefix, 0, len(allow))
	for _, a := range allow {
		if q, err := normalize(a, true); err == nil {
			norm = append(norm, q)
		}
	}
	return func(p netip.Prefix) bool {
		q, err := normalize(p, true)
		if err != nil {
			return true // unparseable: refuse, never guess
		}
		for _, a := range norm {
			if a.Overlaps(q) {
				return true
			}
		}
		return false
	}
}

type allowlisted struct {
	Backend
	denied func(netip.Prefix) bool
	log    *slog.Logger
}

func (a *allowlisted) Add(ctx context.Context, bans []Ban) error {
	return withoutSpecial(ctx, bans, a.log, a.add) // special.go: never unspecified, broadcast, multicast
}

func (a *allowlisted) add(ctx context.Context, bans []Ban) error {
	keep := make([]Ban, 0, len(bans))
	var refused []netip.Prefix
	for _, b := range bans {
		if a.denied(b.Prefix) || (b.Prefix.Addr().Is4In6() && a.denied(unmapPrefix(b.Prefix))) {
			refused = append(refused, b.Prefix)
			a.log.Warn("firewall: refusing to ban an allowlisted address", "prefix", b.Prefix)
			continue
		}
		keep = append(keep, b)
	}
	var err error
	if len(keep) > 0 {
		err = a.Backend.Add(ctx, keep)
	}
	if len(refused) > 0 {
		return errors.Join(&AllowlistError{Refused: refused}, err)
	}
	return err
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	bits := p.Bits() - 96
	if bits < 0 {
		bits = 0
	}
	return netip.PrefixFrom(p.Addr().Unmap(), bits)
}
