package systemd

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// FakeNotifySocket listens where $NOTIFY_SOCKET points, as systemd does.
func fakeNotifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func TestNotify(t *testing.T) {
	conn := fakeNotifySocket(t)
	sent, err := Notify("READY=1\nSTATUS=protecting")
	if !sent || err != nil {
		t.Fatalf("Notify: %v %v", sent, err)
	}
	buf := make([]byte, 256)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1\nSTATUS=protecting" {
		t.Fatalf("received %q %v", buf[:n], err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := Notify("READY=1"); sent || err != nil {
		t.Fatalf("without NOTIFY_SOCKET: %v %v", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", "relative")
	if _, err := Notify("READY=1"); err == nil {
		t.Fatal("a relative NOTIFY_SOCKET accepted")
	}
}

func TestStderrIsJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if !fileIsJournal(f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)) {
		t.Fatal("matching dev:ino not recognised")
	}
	for _, s := range []string{"", "x", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), "1:2:3"} {
		if fileIsJournal(f, s) {
			t.Errorf("JOURNAL_STREAM=%q matched", s)
		}
	}
}

func TestJournalHandlerFormat(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(NewJournalHandler(&b, slog.LevelDebug)).With("component", "ami", "jail", "asterisk")
	log.Debug("dbg", "n", 1)
	log.Info("banned", "jail", "sshd", "addr", "203.0.113.7", "for", time.Hour)
	log.Warn("odd", "user", "a b\"\n<3>forged", "empty", "")
	log.WithGroup("g").Error("failed", "err", errors.New("boom"), slog.Group("sub", "k", "v"))
	want := "<7>dbg component=ami jail=asterisk n=1\n" +
		"<6>banned component=ami jail=sshd addr=203.0.113.7 for=1h0m0s\n" +
		"<4>odd component=ami jail=asterisk user=\"a b\\\"\\n<3>forged\" empty=\"\"\n" +
		"<3>failed component=ami jail=asterisk g.err=boom g.sub.k=v\n"
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	slog.New(NewJournalHandler(&b, slog.LevelInfo)).Debug("hidden")
	if b.Len() != 0 {
		t.Fatalf("debug written at info level: %q", b.String())
	}
}

// The unit pbxguard ships uses what this package provides.
func TestDeployedUnit(t *testing.T) {
	b, err := os.ReadFile("../../deploy/pbxguard.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"\nType=notify\n", "\nNotifyAccess=main\n", "\nPartOf=nftables.service\n", "\nAfter=network-online.target nftables.service\n", "\nBefore=asterisk.service\n"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("deploy/pbxguard.service lacks %q", want[1:len(want)-1])
		}
	}
	if bytes.Contains(b, []byte("Type=simple")) {
		t.Errorf("deploy/pbxguard.service still says Type=simple:\n%s", unit)
	}
}
