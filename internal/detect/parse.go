package detect

import (
	"bytes"
	"net/netip"
	"time"
	"unsafe"
)

// This file holds the hand-written, allocation-free pieces every detector
// shares: address and timestamp parsing, and the bounded interning table for
// account names.

// parseHostPort parses the address forms servers print: "1.2.3.4",
// "1.2.3.4:5060", "[2001:db8::1]:5060", "[2001:db8::1]", "[1.2.3.4]:5060"
// and a bare "2001:db8::1". IPv4-mapped IPv6 addresses are unmapped. Zones
// are refused (a server never prints one for a remote peer).
func parseHostPort(b []byte) (netip.Addr, uint16, bool) {
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, 0, false
	}
	var host []byte
	var port []byte
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 {
			return netip.Addr{}, 0, false
		}
		host = b[1:end]
		rest := b[end+1:]
		if len(rest) > 0 {
			if rest[0] != ':' || len(rest) == 1 {
				return netip.Addr{}, 0, false
			}
			port = rest[1:]
		}
	} else {
		colons := 0
		last := -1
		for i, c := range b {
			if c == ':' {
				colons++
				last = i
			}
		}
		switch {
		case colons == 1:
			host, port = b[:last], b[last+1:]
		default:
			host = b
		}
	}
	a, ok := parseAddr(host)
	if !ok {
		return netip.Addr{}, 0, false
	}
	var p uint16
	if port != nil {
		n, ok := parsePort(port)
		if !ok {
			return netip.Addr{}, 0, false
		}
		p = n
	}
	return a, p, true
}

func parsePort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// parseAddr parses a bare IPv4 or IPv6 address without allocating.
func parseAddr(b []byte) (netip.Addr, bool) {
	if len(b) < 2 || len(b) > 45 {
		return netip.Addr{}, false
	}
	v6 := false
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9', c == '.':
		case c == ':', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
			v6 = true
		default:
			return netip.Addr{}, false
		}
	}
	if !v6 {
		return parseIPv4(b)
	}
	// netip.ParseAddr does not retain its argument (zones, which it would
	// keep, are refused above), so a view of b is safe here.
	a, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func parseIPv4(b []byte) (netip.Addr, bool) {
	var out [4]byte
	field, digits, val := 0, 0, 0
	for i := 0; i <= len(b); i++ {
		if i == len(b) || b[i] == '.' {
			if digits == 0 || field > 3 {
				return netip.Addr{}, false
			}
			out[field] = byte(val)
			field++
			digits, val = 0, 0
			continue
		}
		c := b[i]
		if c < '0' || c > '9' {
			return netip.Addr{}, false
		}
		if digits > 0 && val == 0 { // leading zero: ambiguous (octal?), refuse
			return netip.Addr{}, false
		}
		val = val*10 + int(c-'0')
		digits++
		if val > 255 {
			return netip.Addr{}, false
		}
	}
	if field != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(out), true
}

// isAddrByte reports whether c may appear in a printed address with port.
func isAddrByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' ||
		c == ':' || c == '.' || c == '[' || c == ']'
}

// ---- timestamps ----

var monthIndex = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func parseMonth(b []byte) int {
	if len(b) < 3 {
		return 0
	}
	for i, m := range monthIndex {
		if b[0] == m[0] && b[1] == m[1] && b[2] == m[2] {
			return i + 1
		}
	}
	return 0
}

func num(b []byte, n int) (int, bool) {
	if len(b) < n {
		return 0, false
	}
	v := 0
	for i := 0; i < n; i++ {
		c := b[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// stamp is a broken-down wall-clock time as read from a line.
type stamp struct {
	year, month, day, hour, min, sec, nsec int
	hasYear                                bool
	hasZone                                bool
	zoneOff                                int // seconds east of UTC when hasZone
}

// parseClock reads "HH:MM:SS[.frac]" and returns the bytes consumed.
func parseClock(b []byte, s *stamp) (int, bool) {
	h, ok1 := num(b, 2)
	if !ok1 || len(b) < 8 || b[2] != ':' || b[5] != ':' {
		return 0, false
	}
	m, ok2 := num(b[3:], 2)
	sec, ok3 := num(b[6:], 2)
	if !ok2 || !ok3 || h > 23 || m > 59 || sec > 60 {
		return 0, false
	}
	s.hour, s.min, s.sec = h, m, sec
	i := 8
	if i < len(b) && (b[i] == '.' || b[i] == ',') {
		i++
		ns, digits := 0, 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if digits < 9 {
				ns = ns*10 + int(b[i]-'0')
				digits++
			}
			i++
		}
		for ; digits < 9; digits++ {
			ns *= 10
		}
		s.nsec = ns
	}
	return i, true
}

// parseSyslogStamp reads "Mmm dd HH:MM:SS", "Mmm  d HH:MM:SS" or
// "Mmm d HH:MM:SS" and returns the bytes consumed.
func parseSyslogStamp(b []byte, s *stamp) (int, bool) {
	mon := parseMonth(b)
	if mon == 0 || len(b) < 14 || b[3] != ' ' {
		return 0, false
	}
	i := 4
	if b[i] == ' ' {
		i++
	}
	d := 0
	nd := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && nd < 2 {
		d = d*10 + int(b[i]-'0')
		i++
		nd++
	}
	if nd == 0 || d < 1 || d > 31 || i >= len(b) || b[i] != ' ' {
		return 0, false
	}
	i++
	n, ok := parseClock(b[i:], s)
	if !ok {
		return 0, false
	}
	s.month, s.day = mon, d
	// Some formats ("%b %e %T %Y") append a year.
	j := i + n
	if j+5 <= len(b) && b[j] == ' ' {
		if y, ok := num(b[j+1:], 4); ok && (j+5 == len(b) || b[j+5] == ' ' || b[j+5] == ']') {
			s.year, s.hasYear = y, true
			j += 5
		}
	}
	return j, true
}

// parseISOStamp reads "YYYY-MM-DD[ T]HH:MM:SS[.frac][Z|±hh:mm|±hhmm]".
func parseISOStamp(b []byte, s *stamp) (int, bool) {
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || (b[10] != ' ' && b[10] != 'T') {
		return 0, false
	}
	y, ok1 := num(b, 4)
	mo, ok2 := num(b[5:], 2)
	d, ok3 := num(b[8:], 2)
	if !ok1 || !ok2 || !ok3 || mo < 1 || mo > 12 || d < 1 || d > 31 {
		return 0, false
	}
	n, ok := parseClock(b[11:], s)
	if !ok {
		return 0, false
	}
	s.year, s.month, s.day, s.hasYear = y, mo, d, true
	i := 11 + n
	if i < len(b) {
		switch b[i] {
		case 'Z':
			s.hasZone, s.zoneOff = true, 0
			i++
		case '+', '-':
			sign := 1
			if b[i] == '-' {
				sign = -1
			}
			hh, okh := num(b[i+1:], 2)
			if okh {
				j := i + 3
				if j < len(b) && b[j] == ':' {
					j++
				}
				if mm, okm := num(b[j:], 2); okm {
					s.hasZone, s.zoneOff = true, sign*(hh*3600+mm*60)
					i = j + 2
				}
			}
		}
	}
	return i, true
}

// parseAnyStamp reads any of the timestamp shapes above.
func parseAnyStamp(b []byte, s *stamp) (int, bool) {
	if len(b) > 0 && b[0] >= '0' && b[0] <= '9' {
		return parseISOStamp(b, s)
	}
	return parseSyslogStamp(b, s)
}

// lineClock turns stamps into time.Time. It caches the start of the last
// minute it resolved, so that a stream of lines costs a compare and an add,
// and asks Options.Now only when the minute changes (year inference) or
// when a stamp lies beyond the last known "now + slack".
type lineClock struct {
	loc *time.Location
	now func() time.Time

	key   int64 // packed year-less month/day/hour/min (+ year when known)
	base  time.Time
	limit time.Time // now + futureSlack, as of the last call to now
}

func newLineClock(o Options) lineClock {
	o = o.withDefaults()
	return lineClock{loc: o.Location, now: o.Now, key: -1}
}

// futureSlack is how far past Now a stamp may lie and still be believed
// (log writer and reader clocks differ a little). A year-less stamp gets
// the latest year that does not put it beyond Now+futureSlack, so a
// "Jan  1 00:00:03" read at Dec 31 23:59:58 is next year's. A stamp with
// a year (or a year-less one at the edge) that is still beyond
// Now+futureSlack — a wrong clock, or a forged "2099-…" — is replaced by
// the receive time: a future event time would stay in a jail's window
// forever.
const futureSlack = 24 * time.Hour

func (c *lineClock) resolve(s *stamp) time.Time {
	if s.hasZone {
		if !s.hasYear {
			return c.now()
		}
		t := time.Date(s.year, time.Month(s.month), s.day, s.hour, s.min, s.sec, s.nsec, time.UTC)
		return c.clamp(t.Add(-time.Duration(s.zoneOff) * time.Second))
	}
	key := int64(s.month)<<24 | int64(s.day)<<16 | int64(s.hour)<<8 | int64(s.min)
	if s.hasYear {
		key |= int64(s.year) << 32
	} else {
		key |= 1 << 62
	}
	if key != c.key {
		c.key = key
		if s.hasYear {
			c.base = time.Date(s.year, time.Month(s.month), s.day, s.hour, s.min, 0, 0, c.loc)
		} else {
			now := c.now().In(c.loc)
			c.limit = now.Add(futureSlack)
			y := now.Year()
			if s.month == 1 && now.Month() == 12 {
				y++ // a January stamp read in late December may be next year's
			}
			t := time.Date(y, time.Month(s.month), s.day, s.hour, s.min, 0, 0, c.loc)
			for i := 0; i < 2 && t.After(c.limit); i++ {
				y--
				t = time.Date(y, time.Month(s.month), s.day, s.hour, s.min, 0, 0, c.loc)
			}
			c.base = t
		}
	}
	return c.clamp(c.base.Add(time.Duration(s.sec)*time.Second + time.Duration(s.nsec)))
}

// clamp returns t, or the receive time when t lies beyond now+futureSlack.
func (c *lineClock) clamp(t time.Time) time.Time {
	if !t.After(c.limit) {
		return t
	}
	now := c.now()
	c.limit = now.Add(futureSlack)
	if t.After(c.limit) {
		return now
	}
	return t
}

// ---- interning ----

// interner returns a shared string for the bytes it is given, so that an
// account name seen on many lines costs one allocation. It is bounded: when
// full it starts over (a cheap, allocation-free steady state for any log).
type interner struct {
	m   map[string]string
	max int
}

func newInterner(max int) interner { return interner{m: make(map[string]string, 64), max: max} }

func (in *interner) get(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if len(b) > 128 {
		return "" // attacker-sized junk is not worth keeping
	}
	if len(in.m) >= in.max {
		clear(in.m)
	}
	s := string(b)
	in.m[s] = s
	return s
}

// ---- byte helpers ----

func hasPrefix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[:len(p)]) == p
}

func hasSuffix(b []byte, p string) bool {
	return len(b) >= len(p) && string(b[len(b)-len(p):]) == p
}

func indexStr(b []byte, s string) int {
	return bytes.Index(b, unsafe.Slice(unsafe.StringData(s), len(s)))
}

func lastIndexStr(b []byte, s string) int {
	return bytes.LastIndex(b, unsafe.Slice(unsafe.StringData(s), len(s)))
}

func containsStr(b []byte, s string) bool { return indexStr(b, s) >= 0 }

func trimRightSpace(b []byte) []byte {
	for len(b) > 0 {
		c := b[len(b)-1]
		if c != ' ' && c != '\n' && c != '\r' && c != '\t' {
			break
		}
		b = b[:len(b)-1]
	}
	return b
}

func trimLeftSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// parseRFC5424 reads "<PRI>1 STAMP HOST APP PROCID MSGID SD MSG".
func parseRFC5424(line []byte) (date, prog []byte, pid uint32, msg []byte, ok bool) {
	i := indexByteFrom(line, 0, '>')
	if i < 2 || i > 4 || i+3 > len(line) || line[i+1] != '1' || line[i+2] != ' ' {
		return nil, nil, 0, nil, false
	}
	f := line[i+3:]
	var fields [5][]byte
	for k := 0; k < 5; k++ {
		sp := indexByteFrom(f, 0, ' ')
		if sp < 0 {
			return nil, nil, 0, nil, false
		}
		fields[k], f = f[:sp], f[sp+1:]
	}
	// structured data: "-" or [..][..] (values may contain brackets)
	if len(f) > 0 && f[0] == '-' {
		f = f[1:]
	} else {
		for len(f) > 0 && f[0] == '[' {
			j := 1
			inq := false
			for ; j < len(f); j++ {
				c := f[j]
				if c == '\\' {
					j++
					continue
				}
				if c == '"' {
					inq = !inq
				} else if c == ']' && !inq {
					break
				}
			}
			if j >= len(f) {
				return nil, nil, 0, nil, false
			}
			f = f[j+1:]
		}
	}
	if string(fields[0]) != "-" {
		date = fields[0]
	}
	name := fields[2]
	if sl := lastIndexByte(name, '/'); sl >= 0 {
		name = name[sl+1:]
	}
	f = trimLeftSpace(f)
	if hasPrefix(f, "\xef\xbb\xbf") { // BOM before a UTF-8 MSG
		f = f[3:]
	}
	return date, name, atou(fields[3]), f, true
}
