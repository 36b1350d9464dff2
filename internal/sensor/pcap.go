package sensor

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// PcapReader reads a classic libpcap capture file (the format tcpdump -w
// and tshark -F pcap write), both byte orders, micro- and nanosecond
// stamps, and hands out IP packets: Ethernet (with VLAN tags), Linux
// cooked (SLL, SLL2), raw IP and loopback link types. pcapng is refused
// with a hint.
type PcapReader struct {
	r        *bufio.Reader
	order    binary.ByteOrder
	nano     bool
	link     uint32
	snap     uint32
	hdr      [16]byte
	buf      []byte
	Skipped  uint64 // records that carried no IPv4/IPv6 packet
	maxFrame uint32
}

// Link types.
const (
	linkNull     = 0
	linkEthernet = 1
	linkRaw      = 101
	linkLoop     = 108
	linkSLL      = 113
	linkIPv4     = 228
	linkIPv6     = 229
	linkSLL2     = 276
)

// NewPcapReader reads the file header.
func NewPcapReader(r io.Reader) (*PcapReader, error) {
	p := &PcapReader{r: bufio.NewReaderSize(r, 1<<16)}
	var h [24]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		return nil, fmt.Errorf("pcap: reading the file header: %w", err)
	}
	switch {
	case binary.LittleEndian.Uint32(h[0:4]) == 0xa1b2c3d4:
		p.order = binary.LittleEndian
	case binary.BigEndian.Uint32(h[0:4]) == 0xa1b2c3d4:
		p.order = binary.BigEndian
	case binary.LittleEndian.Uint32(h[0:4]) == 0xa1b23c4d:
		p.order, p.nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(h[0:4]) == 0xa1b23c4d:
		p.order, p.nano = binary.BigEndian, true
	case binary.LittleEndian.Uint32(h[0:4]) == 0x0a0d0d0a:
		return nil, errors.New("pcap: this is pcapng; convert it with: tshark -F pcap -r IN.pcapng -w OUT.pcap (or editcap -F pcap)")
	default:
		return nil, errors.New("pcap: not a pcap file (bad magic)")
	}
	p.snap = p.order.Uint32(h[16:20])
	p.link = p.order.Uint32(h[20:24]) & 0x0fffffff
	switch p.link {
	case linkNull, linkEthernet, linkRaw, linkLoop, linkSLL, linkIPv4, linkIPv6, linkSLL2:
	default:
		return nil, fmt.Errorf("pcap: link type %d is not supported (Ethernet, Linux cooked, raw IP and loopback are)", p.link)
	}
	p.maxFrame = 256 * 1024
	p.buf = make([]byte, 64*1024)
	return p, nil
}

// Next returns the next IP packet and its capture time; io.EOF at the end.
// The packet is valid until the next call.
func (p *PcapReader) Next() ([]byte, time.Time, error) {
	for {
		if _, err := io.ReadFull(p.r, p.hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				return nil, time.Time{}, errors.New("pcap: the file ends inside a record header (cut capture)")
			}
			return nil, time.Time{}, err
		}
		sec, frac := p.order.Uint32(p.hdr[0:4]), p.order.Uint32(p.hdr[4:8])
		incl := p.order.Uint32(p.hdr[8:12])
		if incl > p.maxFrame {
			return nil, time.Time{}, fmt.Errorf("pcap: a record of %d bytes (corrupt file?)", incl)
		}
		if int(incl) > len(p.buf) {
			p.buf = make([]byte, incl)
		}
		b := p.buf[:incl]
		if _, err := io.ReadFull(p.r, b); err != nil {
			return nil, time.Time{}, errors.New("pcap: the file ends inside a record (cut capture)")
		}
		ns := int64(frac) * 1000
		if p.nano {
			ns = int64(frac)
		}
		t := time.Unix(int64(sec), ns)
		if ip := p.ip(b); ip != nil {
			return ip, t, nil
		}
		p.Skipped++
	}
}

// ip strips the link header.
func (p *PcapReader) ip(b []byte) []byte {
	var ethType uint16
	switch p.link {
	case linkRaw, linkIPv4, linkIPv6:
		return b
	case linkNull, linkLoop:
		if len(b) < 4 {
			return nil
		}
		return b[4:]
	case linkEthernet:
		if len(b) < 14 {
			return nil
		}
		ethType, b = binary.BigEndian.Uint16(b[12:14]), b[14:]
		for (ethType == 0x8100 || ethType == 0x88a8) && len(b) >= 4 {
			ethType, b = binary.BigEndian.Uint16(b[2:4]), b[4:]
		}
	case linkSLL:
		if len(b) < 16 {
			return nil
		}
		ethType, b = binary.BigEndian.Uint16(b[14:16]), b[16:]
	case linkSLL2:
		if len(b) < 20 {
			return nil
		}
		ethType, b = binary.BigEndian.Uint16(b[0:2]), b[20:]
	}
	if ethType != 0x0800 && ethType != 0x86dd {
		return nil
	}
	return b
}

// WritePcapHeader and WritePcapRecord write a raw-IP pcap file (tests, and
// captures made by the sensor's users).
func WritePcapHeader(w io.Writer) error {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 65535)
	binary.LittleEndian.PutUint32(h[20:], linkRaw)
	_, err := w.Write(h[:])
	return err
}

// WritePcapRecord writes one raw-IP packet captured at t.
func WritePcapRecord(w io.Writer, t time.Time, ip []byte) error {
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(h[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(h[8:], uint32(len(ip)))
	binary.LittleEndian.PutUint32(h[12:], uint32(len(ip)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(ip)
	return err
}
