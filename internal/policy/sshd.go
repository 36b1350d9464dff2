package policy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// sshdNames are the process names (comm) of OpenSSH: the listener, and
// the per-connection process of OpenSSH 9.8+ (which also serves sessions
// of a socket-activated sshd, whose listener is systemd's).
var sshdNames = map[string]bool{"sshd": true, "sshd-session": true}

// SSHDPorts returns the TCP ports that sshd really serves: the listening
// and established sockets of /proc/net/tcp and tcp6 (tcp4, tcp6: their
// contents) whose inode is an open file descriptor (socket:[inode]) of a
// process named sshd or sshd-session, found through procRoot/<pid>/comm
// and procRoot/<pid>/fd.
// Processes whose descriptors cannot be read (not root) are skipped; ok is
// false when no sshd process could be read at all (use the ss fallback).
func SSHDPorts(procRoot string, tcp4, tcp6 []byte) (ports []uint16, ok bool) {
	inodes := sshdSocketInodes(procRoot)
	if inodes == nil {
		return nil, false
	}
	var all []listener
	listening := map[uint16]bool{}
	for _, data := range [][]byte{tcp4, tcp6} {
		for _, l := range listeners(data) {
			all = append(all, l)
			if l.listen {
				listening[l.port] = true
			}
		}
	}
	seen := map[uint16]bool{}
	for _, l := range all {
		// An established socket of sshd counts when something listens on
		// its port (socket activation); not its outgoing forwardings.
		if inodes[l.inode] && !seen[l.port] && (l.listen || listening[l.port]) {
			seen[l.port] = true
			ports = append(ports, l.port)
		}
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	return ports, true
}

// sshdSocketInodes returns the socket inodes of every sshd process; nil
// when no sshd process's descriptors could be read.
func sshdSocketInodes(procRoot string) map[string]bool {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out map[string]bool
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
		if err != nil || !sshdNames[strings.TrimSpace(string(comm))] {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // another user's process: not readable
		}
		if out == nil {
			out = map[string]bool{}
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if in, ok := strings.CutPrefix(target, "socket:["); ok {
				out[strings.TrimSuffix(in, "]")] = true
			}
		}
	}
	return out
}

type listener struct {
	port   uint16
	inode  string
	listen bool
}

// listeners reads the listening (0A) and established (01) sockets of a
// /proc/net/tcp{,6} table with their local ports and inodes.
func listeners(data []byte) []listener {
	var out []listener
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || (f[3] != "0A" && f[3] != "01") { // TCP_LISTEN, TCP_ESTABLISHED
			continue
		}
		local, ok := parseHexAddrPort(f[1])
		if !ok {
			continue
		}
		out = append(out, listener{port: local.Port(), inode: f[9], listen: f[3] == "0A"})
	}
	return out
}

// ParseSSListen reads `ss -Hltnp` output and returns the ports that sshd
// listens on (lines whose process list names "sshd").
func ParseSSListen(data []byte) []uint16 {
	seen := map[uint16]bool{}
	var out []uint16
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `(("sshd"`) && !strings.Contains(line, `("sshd",`) {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local := f[3] // State Recv-Q Send-Q Local:Port Peer:Port Process
		i := strings.LastIndexByte(local, ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(local[i+1:], 10, 16)
		if err != nil || seen[uint16(p)] {
			continue
		}
		seen[uint16(p)] = true
		out = append(out, uint16(p))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// sshdPorts finds sshd's listening ports in the kernel's namespace: from
// /proc (Kernel.Proc), else from `ss -Hltnp`.
func (k Kernel) sshdPorts(ctx context.Context) []uint16 {
	proc := k.proc()
	tcp4, _ := k.ReadFile(ctx, proc+"/net/tcp")
	tcp6, _ := k.ReadFile(ctx, proc+"/net/tcp6")
	if ports, ok := SSHDPorts(proc, tcp4, tcp6); ok {
		return ports
	}
	if k.Proc != "" {
		return nil // a fake /proc (tests): no fallback to the real host
	}
	out, err := k.run(ctx, nil, "ss", "-Hltnp")
	if err != nil {
		if k.Log != nil {
			k.Log.Debug("lock-out check: ss -Hltnp failed; only the configured SSH ports are checked", "err", err)
		}
		return nil
	}
	return ParseSSListen(out)
}

func (k Kernel) proc() string {
	if k.Proc == "" {
		return "/proc"
	}
	return strings.TrimRight(k.Proc, "/")
}
