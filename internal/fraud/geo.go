package fraud

import (
	"net/netip"

	"github.com/phuslu/iploc"
)

// IPCountry is the offline address → ISO country lookup (phuslu/iploc's
// embedded table) for Config.CountryOf. It returns "" for addresses with no
// country: private, loopback, link-local, CGNAT and documentation ranges
// (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), which
// iploc reports as "ZZ". The engine treats "" as unknown: never a new
// country, never a baseline.
func IPCountry(a netip.Addr) string {
	a = a.Unmap()
	if !a.IsValid() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
		return ""
	}
	c := iploc.IPCountry(a)
	if len(c) != 2 || c == "ZZ" || c == "XX" {
		return ""
	}
	return c
}
