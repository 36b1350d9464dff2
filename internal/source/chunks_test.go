package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// TestParallelChunks: every line is handed on exactly once and whole,
// whatever the chunk size; a line longer than a chunk is reported, never
// handed on (neither its start nor its cut end); a read error comes back.
func TestParallelChunks(t *testing.T) {
	var in strings.Builder
	var want []string
	for i := range 500 {
		l := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i%37))
		if i == 123 || i == 124 {
			l = "LONG" + strings.Repeat("y", 300) + "\n" // longer than every chunk below
		} else {
			want = append(want, l)
		}
		in.WriteString(l)
	}
	in.WriteString("last line without end")
	want = append(want, "last line without end")
	for _, size := range []int{64, 100, 257, 4096} {
		for _, workers := range []int{1, 3} {
			var mu sync.Mutex
			var got []string
			perWorker := make([]int, workers)
			long := 0
			err := ParallelChunks(iotest.HalfReader(strings.NewReader(in.String())), workers, size, func(w int, chunk []byte) {
				perWorker[w]++ // no lock: w is this goroutine's own
				EachLine(chunk, func(l []byte) {
					mu.Lock()
					got = append(got, string(l))
					mu.Unlock()
				})
			}, func() { long++ })
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			w := slices.Clone(want)
			slices.Sort(w)
			if size < 300 && (long != 2 || !slices.Equal(got, w)) {
				t.Errorf("size %d workers %d: %d lines (want %d), %d over-long (want 2)", size, workers, len(got), len(w), long)
			}
			if size >= 300 && (long != 0 || len(got) != len(want)+2) {
				t.Errorf("size %d workers %d: %d lines (want %d), %d over-long", size, workers, len(got), len(want)+2, long)
			}
			for _, l := range got {
				if strings.HasPrefix(l, "y") {
					t.Fatalf("size %d: the cut end of an over-long line was handed on: %q", size, l)
				}
			}
		}
	}
	boom := errors.New("disk gone")
	r := io.MultiReader(strings.NewReader("a\nb\n"), iotest.ErrReader(boom))
	var n atomic.Int64
	err := ParallelChunks(r, 2, 64, func(_ int, chunk []byte) { n.Add(int64(bytes.Count(chunk, []byte("\n")))) }, nil)
	if !errors.Is(err, boom) || n.Load() != 2 {
		t.Errorf("read error: %v, %d lines; want %v and the 2 lines read before it", err, n.Load(), boom)
	}
}
