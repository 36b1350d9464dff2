package jail

import "net/netip"

// Allowlist is a set of prefixes that are never banned. It wins over
// everything: the jail never decides against an address it contains, and a
// prefix ban that would cover one is narrowed to the single address.
// A nil *Allowlist contains nothing. It is read-only after NewAllowlist and
// safe for concurrent use.
type Allowlist struct {
	v4, v6 []netip.Prefix
}

// NewAllowlist builds an allowlist. Prefixes are masked; IPv4-mapped IPv6
// prefixes (::ffff:a.b.c.d/n, n >= 96) are treated as the IPv4 prefix they
// map; invalid prefixes are ignored.
func NewAllowlist(prefixes []netip.Prefix) *Allowlist {
	a := &Allowlist{}
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		p = normPrefix(p)
		if p.Addr().Is4() {
			a.v4 = append(a.v4, p)
		} else {
			a.v6 = append(a.v6, p)
		}
	}
	return a
}

func normPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return netip.PrefixFrom(p.Addr().WithZone(""), p.Bits()).Masked()
}

// Prefixes returns the allowlist's prefixes (IPv4 first).
func (a *Allowlist) Prefixes() []netip.Prefix {
	if a == nil {
		return nil
	}
	return append(append([]netip.Prefix(nil), a.v4...), a.v6...)
}

// Contains reports whether addr is allowlisted (IPv4-mapped addresses are
// checked as IPv4, zones are ignored).
func (a *Allowlist) Contains(addr netip.Addr) bool {
	if a == nil || !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	list := a.v6
	if addr.Is4() {
		list = a.v4
	}
	for _, p := range list {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Overlaps reports whether banning p would cover any allowlisted address.
func (a *Allowlist) Overlaps(p netip.Prefix) bool {
	if a == nil || !p.IsValid() {
		return false
	}
	p = normPrefix(p)
	list := a.v6
	if p.Addr().Is4() {
		list = a.v4
	}
	for _, q := range list {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}
