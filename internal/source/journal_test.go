package source

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeJournalctl writes a shell script that records its arguments and
// prints the given output, then (follow mode) waits.
func fakeJournalctl(t *testing.T, output string, exitAfter bool) (cmd []string, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	outFile := filepath.Join(dir, "out.json")
	if err := os.WriteFile(outFile, []byte(output), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + argsFile + "\ncat " + outFile + "\n"
	if exitAfter {
		script += "echo 'Failed to open journal: permission denied' >&2\nexit 1\n"
	} else {
		script += "exec sleep 30\n"
	}
	bin := filepath.Join(dir, "journalctl")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{bin}, argsFile
}

const journalOut = `{"__CURSOR":"s=abc;i=1","__REALTIME_TIMESTAMP":"1764100800000000","_HOSTNAME":"pbx","SYSLOG_IDENTIFIER":"sshd","_PID":"4242","MESSAGE":"Failed password for root from 203.0.113.9 port 52211 ssh2"}
this is not json
{"__CURSOR":"s=abc;i=2","__REALTIME_TIMESTAMP":"1764100801000000","_HOSTNAME":"pbx","_COMM":"sshd","SYSLOG_PID":"4243","MESSAGE":[73,110,118,97,108,105,100,32,117,115,101,114,32,255]}
{"MESSAGE":"no cursor"}
{"__CURSOR":"s=abc;i=3","__REALTIME_TIMESTAMP":"1764100802000000","_HOSTNAME":"pbx","SYSLOG_IDENTIFIER":["sshd","dup"],"MESSAGE":"Connection closed by 2001:db8::7 port 1 [preauth]"}
`

func TestJournal(t *testing.T) {
	cmd, argsFile := fakeJournalctl(t, journalOut, false)
	j := NewJournal("sshd-journal", []string{"_SYSTEMD_UNIT=ssh.service"}, "s=abc;i=0", JournalOptions{Logger: testLogger(t), Command: cmd})
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- j.Run(ctx, c.handle) }()
	got := c.waitN(t, 3)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	stamp := func(us int64) string { return time.UnixMicro(us).Local().Format(time.Stamp) }
	assertLines(t, got, []string{
		stamp(1764100800000000) + " pbx sshd[4242]: Failed password for root from 203.0.113.9 port 52211 ssh2",
		stamp(1764100801000000) + " pbx sshd[4243]: Invalid user \xff",
		stamp(1764100802000000) + " pbx sshd: Connection closed by 2001:db8::7 port 1 [preauth]",
	})
	_, pos := c.snapshot()
	if pos[2].Cursor != "s=abc;i=3" || j.Cursor() != "s=abc;i=3" {
		t.Fatalf("cursor %q / %q", pos[2].Cursor, j.Cursor())
	}
	if s := j.Stats(); s.Malformed != 2 || s.Lines != 3 {
		t.Fatalf("stats %+v", s)
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "--follow\n--output=json\n--after-cursor=s=abc;i=0\n--no-tail\n_SYSTEMD_UNIT=ssh.service\n"
	if string(args) != want {
		t.Fatalf("args %q, want %q", args, want)
	}
}

func TestJournalNoCursorStartsAtEnd(t *testing.T) {
	j := NewJournal("j", nil, "", JournalOptions{})
	if got := strings.Join(j.Args(), " "); got != "--follow --output=json --lines=0" {
		t.Fatalf("args %q", got)
	}
}

func TestJournalCommandExits(t *testing.T) {
	cmd, _ := fakeJournalctl(t, journalOut, true)
	j := NewJournal("j", nil, "", JournalOptions{Command: cmd})
	c := &collector{}
	err := j.Run(context.Background(), c.handle)
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("want the command's stderr in the error, got %v", err)
	}
	if got, _ := c.snapshot(); len(got) != 3 {
		t.Fatalf("lines before exit: %q", got)
	}
	// A restart resumes after the last entry handed on.
	if a := strings.Join(j.Args(), " "); !strings.Contains(a, "--after-cursor=s=abc;i=3") {
		t.Fatalf("restart args %q", a)
	}
}

func TestJournalMissingCommand(t *testing.T) {
	j := NewJournal("j", nil, "", JournalOptions{Command: []string{"/nonexistent/journalctl"}})
	err := j.Run(context.Background(), func(Line) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "install") {
		t.Fatalf("want a clear not-found error, got %v", err)
	}
}

// A cursor the journal no longer holds: journalctl fails at once; the
// source warns, counts a gap and follows from now on.
func TestJournalStaleCursor(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "journalctl")
	script := `#!/bin/sh
case "$*" in
*--after-cursor*) echo "Failed to seek to cursor: Invalid argument" >&2; exit 1;;
esac
echo '{"__CURSOR":"s=new;i=9","MESSAGE":"hello","SYSLOG_IDENTIFIER":"sshd"}'
exec sleep 30
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	j := NewJournal("j", nil, "s=gone;i=1", JournalOptions{Logger: testLogger(t), Command: []string{bin}})
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- j.Run(ctx, c.handle) }()
	got := c.waitN(t, 1)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(got[0], " sshd: hello") || j.Stats().Gaps != 1 || j.Cursor() != "s=new;i=9" {
		t.Fatalf("got %q, stats %+v, cursor %q", got, j.Stats(), j.Cursor())
	}
}

// TestJournalIdentTrusted: the program name comes from journald's trusted
// _COMM (or _EXE), not from SYSLOG_IDENTIFIER, which any local user sets
// (`logger -t sshd "Failed password for root from 203.0.113.9 …"`).
func TestJournalIdentTrusted(t *testing.T) {
	out := `{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1764100800000000","_HOSTNAME":"pbx","SYSLOG_IDENTIFIER":"sshd","_COMM":"logger","_EXE":"/usr/bin/logger","_PID":"77","MESSAGE":"Failed password for root from 203.0.113.9 port 1 ssh2"}
{"__CURSOR":"c2","__REALTIME_TIMESTAMP":"1764100800000000","_HOSTNAME":"pbx","SYSLOG_IDENTIFIER":"sshd","_EXE":"/usr/bin/python3.12","_PID":"78","MESSAGE":"x"}
{"__CURSOR":"c3","__REALTIME_TIMESTAMP":"1764100800000000","_HOSTNAME":"pbx","SYSLOG_IDENTIFIER":"sshd-session","_COMM":"sshd-session","_PID":"79","MESSAGE":"y"}
{"__CURSOR":"c4","__REALTIME_TIMESTAMP":"1764100800000000","_HOSTNAME":"pbx","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"z"}
`
	cmd, _ := fakeJournalctl(t, out, false)
	j := NewJournal("j", nil, "", JournalOptions{Logger: testLogger(t), Command: cmd})
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- j.Run(ctx, c.handle) }()
	got := c.waitN(t, 4)
	cancel()
	<-errc
	stamp := time.UnixMicro(1764100800000000).Local().Format(time.Stamp)
	assertLines(t, got, []string{
		stamp + " pbx logger[77]: Failed password for root from 203.0.113.9 port 1 ssh2",
		stamp + " pbx python3.12[78]: x",
		stamp + " pbx sshd-session[79]: y",
		stamp + " pbx kernel: z",
	})
}

// TestJournalBacklog: with no cursor, the window before now is read
// (--since), not nothing (--lines=0); a cursor wins.
func TestJournalBacklog(t *testing.T) {
	j := NewJournal("j", []string{"_COMM=sshd"}, "", JournalOptions{Backlog: 10 * time.Minute})
	if got := strings.Join(j.Args(), " "); got != "--follow --output=json --since=-600s _COMM=sshd" {
		t.Fatalf("args %q", got)
	}
	j = NewJournal("j", nil, "s=1", JournalOptions{Backlog: 10 * time.Minute})
	if got := strings.Join(j.Args(), " "); got != "--follow --output=json --after-cursor=s=1 --no-tail" {
		t.Fatalf("args %q", got)
	}
}
