package source

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector records the lines a source hands on.
type collector struct {
	mu    sync.Mutex
	lines []string
	pos   []Position
	hook  func(line string) // called outside the lock, may block
}

func (c *collector) handle(l Line) error {
	s := string(l.Data)
	c.mu.Lock()
	c.lines = append(c.lines, s)
	c.pos = append(c.pos, l.Pos)
	hook := c.hook
	c.mu.Unlock()
	if hook != nil {
		hook(s)
	}
	return nil
}

func (c *collector) snapshot() ([]string, []Position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines), slices.Clone(c.pos)
}

// waitN waits (bounded) until n lines arrived and returns them.
func (c *collector) waitN(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := c.snapshot()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d lines, got %d: %q", n, len(got), got)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// follow runs a File until the test ends (or stop is called).
func follow(t *testing.T, path string, start Position, opts FileOptions, c *collector) (f *File, stop func() error) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	if opts.Poll == 0 {
		opts.Poll = 50 * time.Millisecond
	}
	f = NewFile(path, start, opts)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- f.Run(ctx, c.handle) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				err = fmt.Errorf("Run did not return after cancel")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return f, stop
}

func appendFile(t *testing.T, path string, s string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func numbered(prefix string, from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "%s line number %06d\n", prefix, i)
	}
	return b.String()
}

func wantLines(prefix string, from, to int) []string {
	return strings.Split(strings.TrimSuffix(numbered(prefix, from, to), "\n"), "\n")
}

func assertLines(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("lines:\n got %q\nwant %q", got, want)
	}
}

func TestFilePartialLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.log")
	appendFile(t, path, "first\nsec")
	c := &collector{}
	follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 1)
	time.Sleep(100 * time.Millisecond) // give it a chance to (wrongly) hand on "sec"
	if got, _ := c.snapshot(); len(got) != 1 {
		t.Fatalf("a partial line was handed on: %q", got)
	}
	appendFile(t, path, "ond\r\n\x00\x00third\n")
	got := c.waitN(t, 3)
	assertLines(t, got, []string{"first", "second", "third"})
	_, pos := c.snapshot()
	if pos[2].Offset != int64(len("first\nsecond\r\n\x00\x00third\n")) {
		t.Fatalf("offset after third = %d", pos[2].Offset)
	}
	if pos[1].Offset != int64(len("first\nsecond\r\n")) {
		t.Fatalf("offset after second = %d", pos[1].Offset)
	}
}

func TestFileRenameRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	appendFile(t, path, numbered("a", 1, 3))
	c := &collector{}
	f, _ := follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 3)
	// The writer keeps writing to the old file, then rotation renames it and
	// the writer reopens; the new file appears.
	old, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	c.mu.Lock()
	c.hook = func(s string) {
		if s == wantLines("a", 4, 4)[0] {
			<-release
		}
	}
	c.mu.Unlock()
	old.WriteString(numbered("a", 4, 4))
	c.waitN(t, 4) // the follower is now blocked inside line 4
	old.WriteString(numbered("a", 5, 6) + "a tail without newline")
	old.Close()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("b", 1, 2))
	close(release)
	got := c.waitN(t, 9)
	want := append(wantLines("a", 1, 6), "a tail without newline")
	want = append(want, wantLines("b", 1, 2)...)
	assertLines(t, got, want)
	if s := f.Stats(); s.Rotations != 1 || s.Gaps != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// logrotate's "create": the new file exists (empty) before the writer
// reopens; the writer's last lines still go to the renamed file.
func TestFileRenameRotationCreateFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.log")
	appendFile(t, path, numbered("a", 1, 2))
	c := &collector{}
	follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 2)
	old, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "")
	time.Sleep(100 * time.Millisecond) // the follower sees the empty new file
	old.WriteString(numbered("a", 3, 4))
	old.Close()
	time.Sleep(100 * time.Millisecond)
	appendFile(t, path, numbered("b", 1, 1))
	got := c.waitN(t, 5)
	assertLines(t, got, append(wantLines("a", 1, 4), wantLines("b", 1, 1)...))
}

// BenchmarkFileFollow: lines per op through the file follower (reads a
// file of b.N lines from the start); shows the allocations per line.
func BenchmarkFileFollow(b *testing.B) {
	path := filepath.Join(b.TempDir(), "messages.log")
	line := "[2026-11-25 20:00:00] NOTICE[123] chan_sip.c: Registration from '<sip:100@203.0.113.5>' failed for '203.0.113.5:5060' - Wrong password\n"
	fh, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 1<<20)
	for i := 0; i < b.N; i++ {
		buf = append(buf, line...)
		if len(buf) > 1<<20-len(line) {
			fh.Write(buf)
			buf = buf[:0]
		}
	}
	fh.Write(buf)
	fh.Close()
	f := NewFile(path, Position{}, FileOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	b.ResetTimer()
	err = f.Run(ctx, func(l Line) error {
		n++
		if n == b.N {
			cancel()
		}
		return nil
	})
	if err != nil || n != b.N {
		b.Fatalf("%d lines of %d: %v", n, b.N, err)
	}
}

// blockAt makes the follower stop inside the callback of line `at` until
// the returned release is called.
func blockAt(c *collector, at string) (release func()) {
	ch := make(chan struct{})
	c.mu.Lock()
	c.hook = func(s string) {
		if s == at {
			<-ch
		}
	}
	c.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { close(ch) }) }
}

func TestFileCopyTruncate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	appendFile(t, path, numbered("a", 1, 3))
	c := &collector{}
	release := blockAt(c, wantLines("a", 3, 3)[0])
	defer release()
	f, _ := follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 3)
	// While the follower is busy, lines 4-5 are written, then copytruncate.
	appendFile(t, path, numbered("a", 4, 5))
	copyFile(t, path, path+"-20261125")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("b", 1, 2))
	release()
	got := c.waitN(t, 7)
	assertLines(t, got, append(wantLines("a", 1, 5), wantLines("b", 1, 2)...))
	if s := f.Stats(); s.Truncations != 1 || s.CopiesRead != 1 || s.Gaps != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// The follower is stuck in a callback while the file is renamed, the new
// one copytruncated and renamed again: when it comes back, every line of
// the files rotated in between is read, once, in order.
func TestFileLaggingBehindSeveralRotations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	appendFile(t, path, numbered("a", 1, 3))
	c := &collector{}
	release := blockAt(c, wantLines("a", 3, 3)[0])
	defer release()
	follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 3)
	step := func(d time.Duration) { time.Sleep(d) } // distinct modification times
	appendFile(t, path, numbered("a", 4, 4))
	step(10 * time.Millisecond)
	if err := os.Rename(path, path+"-1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("b", 1, 2))
	step(10 * time.Millisecond)
	copyFile(t, path, path+"-2")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("b", 3, 4))
	step(10 * time.Millisecond)
	if err := os.Rename(path, path+"-3"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("c", 1, 2))
	release()
	want := append(append(wantLines("a", 1, 4), wantLines("b", 1, 4)...), wantLines("c", 1, 2)...)
	c.waitN(t, len(want))
	time.Sleep(50 * time.Millisecond)
	got, _ := c.snapshot()
	assertLines(t, got, want)
}

// The new file is copytruncated after we opened it and before our first
// read of it: its beginning is read from the copy.
func TestFileTruncatedBeforeFirstRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	appendFile(t, path, numbered("a", 1, 3))
	c := &collector{}
	atA3, atB1 := make(chan struct{}), make(chan struct{})
	c.hook = func(s string) {
		switch s {
		case wantLines("a", 3, 3)[0]:
			<-atA3
		case wantLines("b", 1, 1)[0]:
			<-atB1
		}
	}
	defer func() {
		select {
		case <-atA3:
		default:
			close(atA3)
		}
		select {
		case <-atB1:
		default:
			close(atB1)
		}
	}()
	follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 3) // blocked inside a3
	time.Sleep(10 * time.Millisecond)
	if err := os.Rename(path, path+"-1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("b", 1, 1))
	time.Sleep(10 * time.Millisecond)
	if err := os.Rename(path, path+"-2"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("c", 1, 2))
	close(atA3)
	c.waitN(t, 4) // the follower opened the new file and is blocked in b1 (catching up)
	copyFile(t, path, path+"-3")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("c", 3, 3))
	close(atB1)
	want := append(append(wantLines("a", 1, 3), wantLines("b", 1, 1)...), wantLines("c", 1, 3)...)
	c.waitN(t, len(want))
	time.Sleep(50 * time.Millisecond)
	got, _ := c.snapshot()
	assertLines(t, got, want)
}

func TestFileTruncatedAndRegrownPastOffset(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	appendFile(t, path, numbered("a", 1, 3))
	c := &collector{}
	release := blockAt(c, wantLines("a", 3, 3)[0])
	defer release()
	follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 3)
	appendFile(t, path, numbered("a", 4, 5))
	copyFile(t, path, path+".1")
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	// More than we had read: the size alone does not show the truncation.
	appendFile(t, path, numbered("b", 1, 10))
	release()
	got := c.waitN(t, 15)
	assertLines(t, got, append(wantLines("a", 1, 5), wantLines("b", 1, 10)...))
}

func TestFileTruncationWithoutCopy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	appendFile(t, path, numbered("a", 1, 3))
	c := &collector{}
	release := blockAt(c, wantLines("a", 3, 3)[0])
	defer release()
	f, _ := follow(t, path, Position{}, FileOptions{}, c)
	c.waitN(t, 3)
	appendFile(t, path, numbered("a", 4, 5)) // lost: no copy
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, numbered("b", 1, 2))
	release()
	c.waitN(t, 5)
	time.Sleep(50 * time.Millisecond) // nothing more may arrive
	got, _ := c.snapshot()
	assertLines(t, got, append(wantLines("a", 1, 3), wantLines("b", 1, 2)...))
	if s := f.Stats(); s.Truncations != 1 || s.Gaps != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestFileAppearsLater(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dirExists bool
	}{{"file", true}, {"directory and file", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "asterisk")
			if tc.dirExists {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "security.log")
			c := &collector{}
			follow(t, path, Position{}, FileOptions{StartAtEnd: true, Poll: 20 * time.Millisecond}, c)
			time.Sleep(60 * time.Millisecond)
			if !tc.dirExists {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			appendFile(t, path, numbered("a", 1, 2)) // a new file is read from its start
			c.waitN(t, 2)
			appendFile(t, path, numbered("a", 3, 3))
			got := c.waitN(t, 3)
			assertLines(t, got, wantLines("a", 1, 3))
		})
	}
}

func TestFileStartAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.log")
	appendFile(t, path, numbered("old", 1, 3)+"old partial")
	c := &collector{}
	follow(t, path, Position{}, FileOptions{StartAtEnd: true}, c)
	time.Sleep(50 * time.Millisecond)
	appendFile(t, path, " rest of it\n"+numbered("new", 1, 2))
	got := c.waitN(t, 2)
	assertLines(t, got, wantLines("new", 1, 2))
}

func TestFileLongLineSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.log")
	long := strings.Repeat("x", 3*MaxLine)
	appendFile(t, path, "before\n"+long+"\nafter\n")
	c := &collector{}
	f, _ := follow(t, path, Position{}, FileOptions{}, c)
	got := c.waitN(t, 2)
	assertLines(t, got, []string{"before", "after"})
	_, pos := c.snapshot()
	if want := int64(len("before\n" + long + "\nafter\n")); pos[1].Offset != want {
		t.Fatalf("offset %d, want %d", pos[1].Offset, want)
	}
	if s := f.Stats(); s.LongSkipped != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestFileResume stops the follower, changes the file while it is down and
// starts it again from the last Position: no line lost, none twice.
func TestFileResume(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, path string) // while down
		want   []string                        // lines after restart
		gaps   uint64
	}{
		{"unchanged", func(t *testing.T, path string) { appendFile(t, path, numbered("a", 4, 5)) }, wantLines("a", 4, 5), 0},
		{"renamed", func(t *testing.T, path string) {
			appendFile(t, path, numbered("a", 4, 5))
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("b", 1, 2))
		}, append(wantLines("a", 4, 5), wantLines("b", 1, 2)...), 0},
		{"renamed to .0 (Asterisk logger rotate)", func(t *testing.T, path string) {
			appendFile(t, path, numbered("a", 4, 5))
			if err := os.Rename(path, path+".0"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("b", 1, 2))
		}, append(wantLines("a", 4, 5), wantLines("b", 1, 2)...), 0},
		{"renamed, new file not there yet", func(t *testing.T, path string) {
			appendFile(t, path, numbered("a", 4, 5))
			if err := os.Rename(path, path+"-20261125"); err != nil {
				t.Fatal(err)
			}
		}, wantLines("a", 4, 5), 0},
		{"copytruncate", func(t *testing.T, path string) {
			appendFile(t, path, numbered("a", 4, 5))
			copyFile(t, path, path+".1")
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("b", 1, 2))
		}, append(wantLines("a", 4, 5), wantLines("b", 1, 2)...), 0},
		{"copytruncate, regrown past offset", func(t *testing.T, path string) {
			appendFile(t, path, numbered("a", 4, 5))
			copyFile(t, path, path+".1")
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("b", 1, 9))
		}, append(wantLines("a", 4, 5), wantLines("b", 1, 9)...), 0},
		{"renamed twice", func(t *testing.T, path string) {
			appendFile(t, path, numbered("a", 4, 5))
			time.Sleep(10 * time.Millisecond)
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("b", 1, 2))
			time.Sleep(10 * time.Millisecond)
			if err := os.Rename(path, path+"-2"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("c", 1, 2))
		}, append(append(wantLines("a", 4, 5), wantLines("b", 1, 2)...), wantLines("c", 1, 2)...), 0},
		{"truncated, no copy", func(t *testing.T, path string) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path, numbered("b", 1, 2))
		}, wantLines("b", 1, 2), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "messages.log")
			appendFile(t, path, numbered("a", 1, 3)+"a partial")
			c := &collector{}
			_, stop := follow(t, path, Position{}, FileOptions{}, c)
			c.waitN(t, 3)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			_, pos := c.snapshot()
			last := pos[len(pos)-1]
			if last.Path != path || last.Inode == 0 || last.Offset != int64(len(numbered("a", 1, 3))) || last.Check == 0 {
				t.Fatalf("position %+v", last)
			}
			// The partial line is completed while we are down.
			appendFile(t, path, " completed\n")
			tc.change(t, path)
			c2 := &collector{}
			f2, _ := follow(t, path, last, FileOptions{StartAtEnd: true}, c2)
			want := append([]string{"a partial completed"}, tc.want...)
			if tc.name == "truncated, no copy" {
				want = tc.want
			}
			c2.waitN(t, len(want))
			time.Sleep(50 * time.Millisecond) // nothing more (no duplicates) may arrive
			got, _ := c2.snapshot()
			assertLines(t, got, want)
			if s := f2.Stats(); s.Gaps != tc.gaps {
				t.Fatalf("gaps %d, want %d (%+v)", s.Gaps, tc.gaps, s)
			}
		})
	}
}

func TestFileRunAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages.log")
	appendFile(t, path, numbered("a", 1, 3)+"a part")
	f := NewFile(path, Position{}, FileOptions{Logger: testLogger(t), Poll: 20 * time.Millisecond})
	for round, want := range [][]string{wantLines("a", 1, 3), append([]string{"a partial"}, wantLines("a", 4, 5)...)} {
		c := &collector{}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- f.Run(ctx, c.handle) }()
		if round == 1 {
			appendFile(t, path, "ial\n"+numbered("a", 4, 5))
		}
		c.waitN(t, len(want))
		time.Sleep(50 * time.Millisecond)
		cancel()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		got, _ := c.snapshot()
		assertLines(t, got, want)
	}
}

// TestFileStress: a writer appends numbered lines as fast as ~50k/s for 2 s,
// alternating rename rotation and copytruncate every 0.5 s; every line must
// be handed on exactly once.
func TestFileStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test")
	}
	t.Run("fast consumer", func(t *testing.T) { stress(t, 0, 0) })
	// A consumer that stalls 30 ms every 3000 lines lags behind the writer,
	// so rotations happen while lines are still unread.
	t.Run("slow consumer", func(t *testing.T) { stress(t, 3000, 30*time.Millisecond) })
	// A consumer that stalls 1.2 s once falls more than two rotations
	// behind: a rename and a copytruncate happen before it comes back.
	t.Run("stalled consumer", func(t *testing.T) { stress(t, 20000, 1200*time.Millisecond) })
}

func stress(t *testing.T, every int, stall time.Duration) {
	dir := t.TempDir()
	path := filepath.Join(dir, "messages.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	seen := make(map[int]int)
	var mu sync.Mutex
	var bad []string
	f := NewFile(path, Position{}, FileOptions{Logger: testLogger(t), Poll: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- f.Run(ctx, func(l Line) error {
			var n int
			if _, err := fmt.Sscanf(string(l.Data), "stress %d", &n); err != nil {
				mu.Lock()
				bad = append(bad, string(l.Data))
				mu.Unlock()
				return nil
			}
			mu.Lock()
			seen[n]++
			mu.Unlock()
			if stall > 0 && n%every == 0 && (every > 10000) == (n == every) {
				time.Sleep(stall)
			}
			return nil
		})
	}()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// 100k lines paced at 50k/s (2 s; longer when the machine is busy),
	// rotating every 25k lines (0.5 s at full pace), alternating rename and
	// copytruncate.
	rate, total := 50000, 100000
	if raceEnabled {
		rate, total = 5000, 10000
	}
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	written, rotations := 0, 0
	begin := time.Now()
	buf := make([]byte, 0, 64<<10)
	for written < total {
		target := min(total, int(time.Since(begin).Seconds()*float64(rate))+1)
		nextRot := (rotations + 1) * total / 4
		buf = buf[:0]
		for written < target && written < nextRot && len(buf) < 60<<10 {
			written++
			buf = fmt.Appendf(buf, "stress %d padding to look like a log line\n", written)
		}
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if written == nextRot && written < total {
			rotations++
			copyName := fmt.Sprintf("%s-%d", path, rotations)
			if rotations%2 == 1 { // rename rotation
				w.Close()
				if err := os.Rename(path, copyName); err != nil {
					t.Fatal(err)
				}
				w, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
			} else { // copytruncate, atomic w.r.t. our own writes
				copyFile(t, path, copyName)
				err = w.Truncate(0)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	dur := time.Since(begin)
	w.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= written || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	var missing, twice []int
	for i := 1; i <= written; i++ {
		switch seen[i] {
		case 0:
			missing = append(missing, i)
		case 1:
		default:
			twice = append(twice, i)
		}
	}
	t.Logf("written %d lines in %v with %d rotations; stats %+v", written, dur, rotations, f.Stats())
	if len(missing) > 0 || len(twice) > 0 || len(bad) > 0 || len(seen) != written {
		t.Fatalf("missing %d (first %v), twice %d (first %v), garbled %d (first %q), distinct %d of %d",
			len(missing), first(missing), len(twice), first(twice), len(bad), first(bad), len(seen), written)
	}
	if rotations != 3 {
		t.Fatalf("%d rotations, want 3", rotations)
	}
}

func first[T any](s []T) []T { return s[:min(len(s), 5)] }

func TestReader(t *testing.T) {
	r := NewReader("stdin", io.MultiReader(strings.NewReader("one\ntw"), strings.NewReader("o\nthree")))
	c := &collector{}
	if err := r.Run(context.Background(), c.handle); err != nil {
		t.Fatal(err)
	}
	got, pos := c.snapshot()
	assertLines(t, got, []string{"one", "two", "three"})
	if pos[1].Offset != 8 || pos[2].Offset != 13 {
		t.Fatalf("positions %+v", pos)
	}
	wantErr := fmt.Errorf("stop")
	err := NewReader("x", strings.NewReader("a\nb\n")).Run(context.Background(), func(Line) error { return wantErr })
	if err == nil || !strings.Contains(err.Error(), "stop") {
		t.Fatalf("handler error not returned: %v", err)
	}
}

func BenchmarkReaderLines(b *testing.B) {
	data := []byte(strings.Repeat("[2026-11-25 20:00:00] NOTICE[123] chan_sip.c: Registration from '<sip:100@203.0.113.5>' failed for '203.0.113.5:5060' - Wrong password\n", 1000))
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	n := 0
	for b.Loop() {
		r := NewReader("bench", &sliceReader{b: data})
		_ = r.Run(context.Background(), func(Line) error { n++; return nil })
	}
	_ = n
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkFileLatency: time from a line's write(2) to its callback, one
// line at a time (inotify path). Reports p50/p99 in microseconds.
func BenchmarkFileLatency(b *testing.B) {
	path := filepath.Join(b.TempDir(), "messages.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	got := make(chan time.Time, 1)
	f := NewFile(path, Position{}, FileOptions{Poll: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- f.Run(ctx, func(l Line) error { got <- time.Now(); return nil })
	}()
	defer func() { cancel(); <-errc }()
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	line := []byte("[2026-11-25 20:00:00] NOTICE[123] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:100@203.0.113.5>' failed for '203.0.113.5:5060' (callid: x) - No matching endpoint found\n")
	time.Sleep(50 * time.Millisecond) // the follower is up and watching
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if _, err := w.Write(line); err != nil {
			b.Fatal(err)
		}
		select {
		case at := <-got:
			lat = append(lat, at.Sub(start))
		case <-time.After(5 * time.Second):
			b.Fatal("line not handed on within 5 s")
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
