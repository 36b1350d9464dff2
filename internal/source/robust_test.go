package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitHealth waits (bounded) until the follower reports state.
func waitHealth(t *testing.T, f *File, state string) Health {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := f.Health()
		if h.State == state {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %+v, want state %q", h, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFileNonRegularNeverBlocks: a FIFO, a directory or a socket at the
// followed path is refused (opening a FIFO would block until a writer
// comes, and Run would never return): the follower reports it as failing,
// returns at once when stopped, and reads the file that replaces it.
func TestFileNonRegularNeverBlocks(t *testing.T) {
	for _, tc := range []struct {
		kind string
		make func(path string) error
	}{
		{"FIFO", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
	} {
		for _, saved := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/saved=%v", tc.kind, saved), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "messages.log")
				if err := tc.make(path); err != nil {
					t.Fatal(err)
				}
				start := Position{}
				if saved {
					start = Position{Path: path, Inode: 12345, Offset: 10, Size: 10}
				}
				c := &collector{}
				f, stop := follow(t, path, start, FileOptions{StartAtEnd: true, Poll: 10 * time.Millisecond}, c)
				h := waitHealth(t, f, StateFailing)
				if !strings.Contains(h.Error, tc.kind) || !strings.Contains(h.Error, path) {
					t.Fatalf("health error %q does not say %s at %s", h.Error, tc.kind, path)
				}
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				appendFile(t, path, numbered("a", 1, 2))
				assertLines(t, c.waitN(t, 2), wantLines("a", 1, 2))
				waitHealth(t, f, StateOK)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// TestFileFIFOStopsAtOnce: stopping a follower whose path is a FIFO with no
// writer returns (today's os.Open blocks forever).
func TestFileFIFOStopsAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "security.log")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	f := NewFile(path, Position{}, FileOptions{Logger: testLogger(t), StartAtEnd: true, Poll: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx, (&collector{}).handle) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		// Unblock the open so that the goroutine ends, then fail.
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		t.Fatal("Run did not return 5 s after cancel: the follower is stuck opening the FIFO")
	}
}

// TestFileStartPositionReported: with no saved position the follower tells
// its starting position before any line; a follower started later from it
// reads the lines written in between (a restart loses nothing).
func TestFileStartPositionReported(t *testing.T) {
	for _, partial := range []bool{false, true} {
		t.Run(fmt.Sprintf("partial=%v", partial), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "messages.log")
			content := numbered("old", 1, 3)
			if partial {
				content += "old partial"
			}
			appendFile(t, path, content)
			got := make(chan Position, 4)
			f := NewFile(path, Position{}, FileOptions{Logger: testLogger(t), StartAtEnd: true, Poll: 10 * time.Millisecond})
			f.OnPosition(func(p Position) { got <- p })
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			c := &collector{}
			go func() { errc <- f.Run(ctx, c.handle) }()
			var start Position
			select {
			case start = <-got:
			case <-time.After(5 * time.Second):
				t.Fatal("no starting position reported")
			}
			cancel()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if want := int64(len(numbered("old", 1, 3))); start.Offset != want || start.Inode == 0 || start.Path != path || start.Check == 0 {
				t.Fatalf("start %+v, want offset %d with inode and check", start, want)
			}
			// Down: lines are written. Restarted from the reported position.
			rest := ""
			if partial {
				rest = " completed\n"
			}
			appendFile(t, path, rest+numbered("new", 1, 2))
			c2 := &collector{}
			follow(t, path, start, FileOptions{StartAtEnd: true}, c2)
			want := wantLines("new", 1, 2)
			if partial {
				want = append([]string{"old partial completed"}, want...)
			}
			assertLines(t, c2.waitN(t, len(want)), want)
		})
	}
}

func isoStamp(line []byte) (time.Time, bool) {
	if len(line) < 21 || line[0] != '[' {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05", string(line[1:20]), time.Local)
	return t, err == nil
}

// TestFileBacklog: with no saved position, an existing file is read from
// its first line stamped within the window (lines without a stamp before
// it skipped), bounded by MaxBytes.
func TestFileBacklog(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.Local)
	line := func(ago time.Duration, s string) string {
		return "[" + now.Add(-ago).Format("2006-01-02 15:04:05") + "] " + s + "\n"
	}
	content := line(3*time.Hour, "ancient") + line(20*time.Minute, "old") + "  continuation without stamp\n" +
		line(9*time.Minute, "recent 1") + "  its continuation\n" + line(time.Minute, "recent 2")
	bl := Backlog{Window: 10 * time.Minute, Stamp: isoStamp, Now: func() time.Time { return now }}

	t.Run("window", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "messages.log")
		appendFile(t, path, content)
		c := &collector{}
		follow(t, path, Position{}, FileOptions{StartAtEnd: true, Backlog: bl}, c)
		appendFile(t, path, line(0, "live"))
		got := c.waitN(t, 4)
		want := []string{strings.TrimSuffix(line(9*time.Minute, "recent 1"), "\n"), "  its continuation",
			strings.TrimSuffix(line(time.Minute, "recent 2"), "\n"), strings.TrimSuffix(line(0, "live"), "\n")}
		assertLines(t, got, want)
	})
	t.Run("nothing recent", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "messages.log")
		appendFile(t, path, line(3*time.Hour, "ancient")+line(20*time.Minute, "old"))
		c := &collector{}
		follow(t, path, Position{}, FileOptions{StartAtEnd: true, Backlog: bl}, c)
		appendFile(t, path, line(0, "live"))
		assertLines(t, c.waitN(t, 1), []string{strings.TrimSuffix(line(0, "live"), "\n")})
	})
	t.Run("bounded", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "messages.log")
		var b strings.Builder
		for i := range 2000 {
			b.WriteString(line(5*time.Minute, fmt.Sprintf("recent %04d", i)))
		}
		appendFile(t, path, b.String())
		one := len(line(5*time.Minute, "recent 0000"))
		bl := bl
		bl.MaxBytes = int64(10*one + one/2) // ten whole lines and a cut one
		c := &collector{}
		follow(t, path, Position{}, FileOptions{StartAtEnd: true, Backlog: bl}, c)
		time.Sleep(100 * time.Millisecond) // started before "live" is written
		appendFile(t, path, line(0, "live"))
		c.waitN(t, 11)
		time.Sleep(50 * time.Millisecond)
		got, _ := c.snapshot()
		if len(got) != 11 || !strings.HasSuffix(got[0], "recent 1990") || !strings.HasSuffix(got[10], "live") {
			t.Fatalf("read back %d lines: first %q last %q", len(got), got[0], got[len(got)-1])
		}
	})
	t.Run("saved position wins", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "messages.log")
		appendFile(t, path, content)
		fi, _ := os.Stat(path)
		st := fi.Sys().(*syscall.Stat_t)
		c := &collector{}
		follow(t, path, Position{Path: path, Inode: st.Ino, Offset: fi.Size(), Size: fi.Size()}, FileOptions{StartAtEnd: true, Backlog: bl}, c)
		appendFile(t, path, line(0, "live"))
		time.Sleep(50 * time.Millisecond)
		assertLines(t, c.waitN(t, 1), []string{strings.TrimSuffix(line(0, "live"), "\n")})
	})
}
