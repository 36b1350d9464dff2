package sensor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel tap. nftables rules in pbxguard's own table
// (inet pbxguard_sensor) copy SIP packets, cut at the snap length, to an
// NFLOG group: the requests to the PBX's SIP ports (at most RatePerSource
// per second from one source — the kernel drops the rest of a flood before
// it costs the daemon anything) and the PBX's answers. The daemon reads
// the group on a raw netfilter netlink socket into one reused buffer: no
// cgo, no libpcap, no allocation per packet.
//
// Why NFLOG and not AF_PACKET+BPF: a classic BPF filter has no per-source
// state, so it cannot rate-limit per source in the kernel; nftables can
// (a dynamic set with a limit per element), and NFLOG packets arrive
// already filtered and cut. Packets of banned sources are dropped by the
// ban table (priority -10) before the sensor's hook (-5) sees them.

// TapConfig is what the tap copies.
type TapConfig struct {
	Group         uint16   // NFLOG group [7]
	Snaplen       uint32   // bytes copied per packet [1024]
	UDPPorts      []uint16 // [5060]
	TCPPorts      []uint16 // [5060]
	RatePerSource int      // packets per second copied per source [200]
	Netns         string   // run nft inside this named network namespace ("" = current)
}

// TableName is the sensor's own nftables table.
const TableName = "pbxguard_sensor"

func (c TapConfig) withDefaults() TapConfig {
	if c.Group == 0 {
		c.Group = 7
	}
	if c.Snaplen == 0 {
		c.Snaplen = 1024
	}
	if len(c.UDPPorts) == 0 {
		c.UDPPorts = []uint16{5060}
	}
	if len(c.TCPPorts) == 0 {
		c.TCPPorts = []uint16{5060}
	}
	if c.RatePerSource <= 0 {
		c.RatePerSource = 200
	}
	return c
}

func portSet(ports []uint16) string {
	var s []string
	for _, p := range ports {
		s = append(s, fmt.Sprint(p))
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

// Ruleset is the nft script that (re)creates the sensor's table.
func (c TapConfig) Ruleset() string {
	c = c.withDefaults()
	log := fmt.Sprintf("log group %d snaplen %d", c.Group, c.Snaplen)
	rate := fmt.Sprintf("limit rate %d/second burst %d packets", c.RatePerSource, c.RatePerSource)
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\n", TableName, TableName)
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	b.WriteString("\tset src4 { type ipv4_addr; flags dynamic,timeout; timeout 10s; size 65536; }\n")
	b.WriteString("\tset src6 { type ipv6_addr; flags dynamic,timeout; timeout 10s; size 65536; }\n")
	b.WriteString("\tset dst4 { type ipv4_addr; flags dynamic,timeout; timeout 10s; size 65536; }\n")
	b.WriteString("\tset dst6 { type ipv6_addr; flags dynamic,timeout; timeout 10s; size 65536; }\n")
	b.WriteString("\tcounter copied_in {}\n\tcounter copied_out {}\n")
	b.WriteString("\tchain in {\n\t\ttype filter hook input priority -5; policy accept;\n")
	for _, pr := range []struct{ proto, ports string }{{"udp", portSet(c.UDPPorts)}, {"tcp", portSet(c.TCPPorts)}} {
		fmt.Fprintf(&b, "\t\tmeta nfproto ipv4 %s dport %s update @src4 { ip saddr %s } counter name copied_in %s\n", pr.proto, pr.ports, rate, log)
		fmt.Fprintf(&b, "\t\tmeta nfproto ipv6 %s dport %s update @src6 { ip6 saddr %s } counter name copied_in %s\n", pr.proto, pr.ports, rate, log)
	}
	b.WriteString("\t}\n\tchain out {\n\t\ttype filter hook output priority -5; policy accept;\n")
	for _, pr := range []struct{ proto, ports string }{{"udp", portSet(c.UDPPorts)}, {"tcp", portSet(c.TCPPorts)}} {
		fmt.Fprintf(&b, "\t\tmeta nfproto ipv4 %s sport %s update @dst4 { ip daddr %s } counter name copied_out %s\n", pr.proto, pr.ports, rate, log)
		fmt.Fprintf(&b, "\t\tmeta nfproto ipv6 %s sport %s update @dst6 { ip6 daddr %s } counter name copied_out %s\n", pr.proto, pr.ports, rate, log)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func (c TapConfig) nft(ctx context.Context, script string) error {
	args := []string{"-f", "-"}
	name := "nft"
	if c.Netns != "" {
		name, args = "ip", append([]string{"netns", "exec", c.Netns, "nft"}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("sensor: nft not found: install nftables (apt-get install nftables)")
		}
		return fmt.Errorf("sensor: loading the sensor's nftables table: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// Install loads the sensor's table (replacing an old one).
func (c TapConfig) Install(ctx context.Context) error { return c.nft(ctx, c.Ruleset()) }

// Uninstall deletes the sensor's table (absent is fine).
func (c TapConfig) Uninstall(ctx context.Context) error {
	return c.nft(ctx, fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", TableName, TableName))
}

// Tap is an NFLOG group bound on a netfilter netlink socket.
type Tap struct {
	fd    int
	group uint16
	buf   []byte
	seq   uint32
	// Drops counts the times the kernel told us packets were lost
	// (ENOBUFS: the socket buffer overflowed).
	Drops uint64
}

// netlink and nfnetlink_log constants (linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULOG   = 4
	nfulnlMsgPacket  = 0
	nfulnlMsgConfig  = 1
	nfulaCfgCmd      = 1
	nfulaCfgMode     = 2
	nfulaCfgNlbufsiz = 3
	nfulaCfgTimeout  = 4
	nfulaCfgQthresh  = 5
	cmdBind          = 1
	cmdUnbind        = 2
	cmdPFBind        = 3
	cmdPFUnbind      = 4
	copyPacket       = 2
	nfulaTimestamp   = 3
	nfulaPayload     = 9
)

// OpenTap binds NFLOG group on a new socket; the caller must be root
// (CAP_NET_ADMIN) in the network namespace to watch.
func OpenTap(group uint16, snaplen uint32) (*Tap, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("sensor: netfilter netlink socket: %w (needs CAP_NET_ADMIN)", err)
	}
	t := &Tap{fd: fd, group: group, buf: make([]byte, 1<<17)}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sensor: bind netlink: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 0)
	// Old kernels need the per-family bind; new ones ignore it.
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		_ = t.config(fam, 0, attr(nfulaCfgCmd, []byte{cmdPFUnbind}), false)
		_ = t.config(fam, 0, attr(nfulaCfgCmd, []byte{cmdPFBind}), false)
	}
	if err := t.config(unix.AF_UNSPEC, group, attr(nfulaCfgCmd, []byte{cmdBind}), true); err != nil {
		t.Close()
		return nil, fmt.Errorf("sensor: binding NFLOG group %d: %w (another program, e.g. ulogd, may hold it: choose another sensor.nflog_group)", group, err)
	}
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode[0:4], snaplen)
	mode[4] = copyPacket
	msg := attr(nfulaCfgMode, mode)
	var q [4]byte
	binary.BigEndian.PutUint32(q[:], 1) // deliver each packet at once
	msg = append(msg, attr(nfulaCfgQthresh, q[:])...)
	binary.BigEndian.PutUint32(q[:], 0)
	msg = append(msg, attr(nfulaCfgTimeout, q[:])...)
	binary.BigEndian.PutUint32(q[:], 1<<16)
	msg = append(msg, attr(nfulaCfgNlbufsiz, q[:])...)
	if err := t.config(unix.AF_UNSPEC, group, msg, true); err != nil {
		t.Close()
		return nil, fmt.Errorf("sensor: NFLOG copy mode: %w", err)
	}
	return t, nil
}

func attr(typ uint16, data []byte) []byte {
	n := 4 + len(data)
	b := make([]byte, (n+3)&^3)
	binary.LittleEndian.PutUint16(b[0:2], uint16(n))
	binary.LittleEndian.PutUint16(b[2:4], typ)
	copy(b[4:], data)
	return b
}

// config sends one NFULNL_MSG_CONFIG and, with ack, waits for the answer.
func (t *Tap) config(family uint8, group uint16, attrs []byte, ack bool) error {
	t.seq++
	flags := uint16(unix.NLM_F_REQUEST)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	msg := make([]byte, 16+4+len(attrs))
	binary.LittleEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.LittleEndian.PutUint16(msg[4:6], nfnlSubsysULOG<<8|nfulnlMsgConfig)
	binary.LittleEndian.PutUint16(msg[6:8], flags)
	binary.LittleEndian.PutUint32(msg[8:12], t.seq)
	msg[16] = family
	binary.BigEndian.PutUint16(msg[18:20], group)
	copy(msg[20:], attrs)
	if err := unix.Sendto(t.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	if !ack {
		return nil
	}
	for i := 0; i < 8; i++ {
		n, _, err := unix.Recvfrom(t.fd, t.buf, 0)
		if err != nil {
			return err
		}
		b := t.buf[:n]
		for len(b) >= 16 {
			l := int(binary.LittleEndian.Uint32(b[0:4]))
			if l < 16 || l > len(b) {
				break
			}
			if binary.LittleEndian.Uint16(b[4:6]) == unix.NLMSG_ERROR && binary.LittleEndian.Uint32(b[8:12]) == t.seq && l >= 20 {
				if e := int32(binary.LittleEndian.Uint32(b[16:20])); e != 0 {
					return unix.Errno(-e)
				}
				return nil
			}
			b = b[(l+3)&^3:]
		}
	}
	return errors.New("no answer from the kernel")
}

// Run reads packets until ctx is done and hands each IP packet (valid only
// during the call) with its kernel timestamp (or the receive time) to fn.
func (t *Tap) Run(ctx context.Context, fn func(ip []byte, at time.Time)) error {
	fds := []unix.PollFd{{Fd: int32(t.fd), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		n, err := unix.Poll(fds, 200)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("sensor: poll: %w", err)
		}
		if n == 0 {
			continue
		}
		m, _, err := unix.Recvfrom(t.fd, t.buf, unix.MSG_DONTWAIT)
		if err != nil {
			switch err {
			case unix.EAGAIN, unix.EINTR:
				continue
			case unix.ENOBUFS:
				t.Drops++
				continue
			}
			return fmt.Errorf("sensor: reading NFLOG: %w", err)
		}
		now := time.Now()
		b := t.buf[:m]
		for len(b) >= 16 {
			l := int(binary.LittleEndian.Uint32(b[0:4]))
			if l < 16 || l > len(b) {
				break
			}
			if binary.LittleEndian.Uint16(b[4:6]) == nfnlSubsysULOG<<8|nfulnlMsgPacket && l >= 20 {
				payload, at := packetAttrs(b[20:l])
				if payload != nil {
					if at.IsZero() {
						at = now
					}
					fn(payload, at)
				}
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
	return nil
}

// packetAttrs finds NFULA_PAYLOAD and NFULA_TIMESTAMP in a packet message.
func packetAttrs(b []byte) (payload []byte, at time.Time) {
	for len(b) >= 4 {
		l := int(binary.LittleEndian.Uint16(b[0:2]))
		typ := binary.LittleEndian.Uint16(b[2:4]) & 0x3fff
		if l < 4 || l > len(b) {
			return payload, at
		}
		data := b[4:l]
		switch typ {
		case nfulaPayload:
			payload = data
		case nfulaTimestamp:
			if len(data) >= 16 {
				sec := int64(binary.BigEndian.Uint64(data[0:8]))
				usec := int64(binary.BigEndian.Uint64(data[8:16]))
				at = time.Unix(sec, usec*1000)
			}
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return payload, at
}

// Close unbinds the group and closes the socket.
func (t *Tap) Close() error {
	_ = t.config(unix.AF_UNSPEC, t.group, attr(nfulaCfgCmd, []byte{cmdUnbind}), false)
	return unix.Close(t.fd)
}
