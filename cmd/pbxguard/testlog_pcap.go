package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"

	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/sensor"
)

// isPcap reports whether the stream starts with a pcap or pcapng magic.
func isPcap(br *bufio.Reader) bool {
	b, err := br.Peek(4)
	if err != nil {
		return false
	}
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1, 0x0a0d0d0a:
		return true
	}
	return false
}

// scanPcap runs a capture through the SIP sensor (what the daemon's
// sensor would have made of that traffic) and counts its events like log
// lines: "lines" are packets.
func scanPcap(r io.Reader, name string, o testLogOpts, res *testLogResult, out *bufio.Writer) error {
	pr, err := sensor.NewPcapReader(r)
	if err != nil {
		return err
	}
	var ports []uint16
	for _, p := range o.sipPorts {
		if p > 0 && p < 65536 {
			ports = append(ports, uint16(p))
		}
	}
	var n int64
	var buf []byte
	s := sensor.New(sensor.Config{UDPPorts: ports, TCPPorts: ports}, func(ev *event.Event) {
		res.add(ev)
		if o.format == "events" {
			buf = appendEventJSON(buf[:0], name, n, sensor.Detector, ev)
			out.Write(buf)
		}
	})
	for {
		ip, at, err := pr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		n++
		res.lines++
		s.HandleIP(ip, at)
	}
}
