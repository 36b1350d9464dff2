package sensor

import (
	"encoding/binary"
	"net/netip"
)

// Proto is the transport of a packet.
type Proto uint8

// Transports.
const (
	UDP Proto = 17
	TCP Proto = 6
)

// Packet is one IP packet as the kernel copied it (possibly cut at the
// snap length): the addresses and ports from the IP and transport headers,
// and the transport payload.
type Packet struct {
	Src, Dst netip.AddrPort
	Proto    Proto
	Payload  []byte // sub-slice of the packet buffer
	SYN      bool   // TCP SYN (no payload to read)
}

// DecodeIP reads an IPv4 or IPv6 packet carrying UDP or TCP. Fragments
// after the first, other protocols and malformed headers give false. It
// allocates nothing.
func DecodeIP(b []byte, p *Packet) bool {
	*p = Packet{}
	if len(b) < 1 {
		return false
	}
	var proto byte
	var l4 []byte
	var src, dst netip.Addr
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return false
		}
		if off := binary.BigEndian.Uint16(b[6:8]) & 0x1fff; off != 0 {
			return false // a later fragment: no transport header
		}
		total := int(binary.BigEndian.Uint16(b[2:4]))
		end := len(b)
		if total >= ihl && total < end {
			end = total
		}
		proto = b[9]
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:end]
	case 6:
		if len(b) < 40 {
			return false
		}
		proto = b[6]
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		end := len(b)
		if pl := int(binary.BigEndian.Uint16(b[4:6])); 40+pl < end {
			end = 40 + pl
		}
		l4 = b[40:end]
		// Skip the common extension headers (hop-by-hop, routing,
		// destination options); a fragment header ends the walk.
		for i := 0; i < 8; i++ {
			switch proto {
			case 0, 43, 60:
				if len(l4) < 8 {
					return false
				}
				n := (int(l4[1]) + 1) * 8
				if len(l4) < n {
					return false
				}
				proto, l4 = l4[0], l4[n:]
				continue
			case 44:
				if len(l4) < 8 || binary.BigEndian.Uint16(l4[2:4])&0xfff8 != 0 {
					return false
				}
				proto, l4 = l4[0], l4[8:]
				continue
			}
			break
		}
	default:
		return false
	}
	switch proto {
	case 17:
		if len(l4) < 8 {
			return false
		}
		p.Proto = UDP
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
		p.Payload = l4[8:]
	case 6:
		if len(l4) < 20 {
			return false
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || len(l4) < off {
			return false
		}
		p.Proto = TCP
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:2]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:4]))
		p.SYN = l4[13]&0x02 != 0
		p.Payload = l4[off:]
	default:
		return false
	}
	return true
}
