package policy

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// fakeProc writes a /proc tree: sshd (pid 812) listens on 2222 (IPv4) and
// 2222 (IPv6); nginx (pid 900) on 80; an administrator from 198.51.100.7
// is connected to 2222, a web client to 80.
func fakeProc(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	write := func(rel, data string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(rel, target string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	hdr := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	write("net/tcp", hdr+
		// 0.0.0.0:2222 LISTEN inode 5555 (sshd)
		"   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n"+
		// 0.0.0.0:80 LISTEN inode 6666 (nginx)
		"   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6666 1 0 100 0 0 10 0\n"+
		// 192.0.2.1:2222 <- 198.51.100.7:54321 ESTABLISHED
		"   2: 010200C0:08AE 076433C6:D431 01 00000000:00000000 02:00000000 00000000     0        0 7777 4 0 20 4 30 10 -1\n"+
		// 192.0.2.1:80 <- 203.0.113.9:54322 ESTABLISHED
		"   3: 010200C0:0050 097100CB:D432 01 00000000:00000000 02:00000000 00000000     0        0 8888 4 0 20 4 30 10 -1\n")
	write("net/tcp6", "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+
		"   0: 00000000000000000000000000000000:08AE 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5556 1 0 100 0 0 10 0\n")
	write("812/comm", "sshd\n")
	link("812/fd/3", "socket:[5555]")
	link("812/fd/4", "socket:[5556]")
	link("812/fd/0", "/dev/null")
	write("900/comm", "nginx\n")
	link("900/fd/6", "socket:[6666]")
	write("self/comm", "pbxguard\n")
	return root
}

func TestSSHDPortsFromProc(t *testing.T) {
	root := fakeProc(t)
	tcp4, _ := os.ReadFile(filepath.Join(root, "net/tcp"))
	tcp6, _ := os.ReadFile(filepath.Join(root, "net/tcp6"))
	ports, ok := SSHDPorts(root, tcp4, tcp6)
	if !ok || !slices.Equal(ports, []uint16{2222}) {
		t.Fatalf("sshd ports = %v, %v; want [2222]", ports, ok)
	}
	if _, ok := SSHDPorts(t.TempDir(), tcp4, tcp6); ok {
		t.Fatal("no sshd process, yet ok")
	}
}

// SSH on 2222, the configuration says 22 (trusted only), no SSH_CONNECTION
// (sudo env_reset): the session to 2222 is found and the lock-out reported.
func TestLockoutSSHOnUnconfiguredPort(t *testing.T) {
	k := Kernel{Proc: fakeProc(t)}
	sessions := k.LiveSessions(context.Background(), "", 22, 22)
	var got []Session
	for _, s := range sessions {
		if s.Client == netip.MustParseAddr("198.51.100.7") && s.Port == 2222 {
			got = append(got, s)
		}
		if s.Port == 80 {
			t.Fatalf("a connection to nginx counted as an SSH session: %v", s)
		}
	}
	if len(got) != 1 {
		t.Fatalf("sessions = %v, want the one from 198.51.100.7 to port 2222", sessions)
	}
	cfg := Default()
	cfg.Services.SSH.From = Sources{Kind: FromTrusted}
	locked := CheckLockout(cfg, sessions)
	if len(locked) != 1 || locked[0].Session.Client != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("lock-outs = %v, want the 2222 session", locked)
	}
}

func TestParseSSListen(t *testing.T) {
	out := []byte(`LISTEN 0      128          0.0.0.0:2222      0.0.0.0:*    users:(("sshd",pid=812,fd=3))
LISTEN 0      511          0.0.0.0:80        0.0.0.0:*    users:(("nginx",pid=901,fd=6),("nginx",pid=900,fd=6))
LISTEN 0      128             [::]:2222         [::]:*    users:(("sshd",pid=812,fd=4))
LISTEN 0      128                *:2200            *:*    users:(("sshd",pid=813,fd=3))
`)
	if got := ParseSSListen(out); !slices.Equal(got, []uint16{2200, 2222}) {
		t.Fatalf("ss ports = %v", got)
	}
}

// A socket-activated sshd: systemd holds the listener; the connection's
// sshd-session process holds the established socket, whose port counts.
func TestSSHDPortsSocketActivated(t *testing.T) {
	root := t.TempDir()
	hdr := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tcp4 := []byte(hdr +
		"   0: 00000000:0929 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4444 1 0 100 0 0 10 0\n" +
		"   1: 010200C0:0929 076433C6:D431 01 00000000:00000000 02:00000000 00000000     0        0 7777 4 0 20 4 30 10 -1\n")
	os.MkdirAll(filepath.Join(root, "1", "fd"), 0o755)
	os.WriteFile(filepath.Join(root, "1", "comm"), []byte("systemd\n"), 0o644)
	os.Symlink("socket:[4444]", filepath.Join(root, "1", "fd", "40"))
	os.MkdirAll(filepath.Join(root, "4321", "fd"), 0o755)
	os.WriteFile(filepath.Join(root, "4321", "comm"), []byte("sshd-session\n"), 0o644)
	os.Symlink("socket:[7777]", filepath.Join(root, "4321", "fd", "4"))
	if ports, ok := SSHDPorts(root, tcp4, nil); !ok || !slices.Equal(ports, []uint16{2345}) {
		t.Fatalf("ports = %v, %v; want [2345]", ports, ok)
	}
}

// An sshd forwarding (-L) holds an outgoing connection from an ephemeral
// port: not an SSH port.
func TestSSHDPortsIgnoresForwardings(t *testing.T) {
	root := t.TempDir()
	hdr := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tcp4 := []byte(hdr +
		"   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0 100 0 0 10 0\n" +
		"   1: 010200C0:C350 0A0200C0:0CEA 01 00000000:00000000 02:00000000 00000000     0        0 9999 4 0 20 4 30 10 -1\n")
	os.MkdirAll(filepath.Join(root, "812", "fd"), 0o755)
	os.WriteFile(filepath.Join(root, "812", "comm"), []byte("sshd\n"), 0o644)
	os.Symlink("socket:[5555]", filepath.Join(root, "812", "fd", "3"))
	os.Symlink("socket:[9999]", filepath.Join(root, "812", "fd", "7"))
	if ports, ok := SSHDPorts(root, tcp4, nil); !ok || !slices.Equal(ports, []uint16{22}) {
		t.Fatalf("ports = %v, %v; want [22]", ports, ok)
	}
}
