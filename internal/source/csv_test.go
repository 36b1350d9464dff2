package source

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// splitCSV splits b into records the way the CSV splitter does (the
// record-ending '\n' removed); the last element is the unfinished rest.
func splitCSV(b []byte) (recs []string, rest string) {
	var st csvState
	for {
		j := st.scan(b)
		if j < 0 {
			return recs, string(b)
		}
		recs = append(recs, string(b[:j]))
		b = b[j+1:]
	}
}

func TestCSVScan(t *testing.T) {
	for _, tt := range []struct {
		in   string
		recs []string
		rest string
	}{
		{"a,b\nc\n", []string{"a,b", "c"}, ""},
		{`"5551234567` + "\n" + `,1001,""x""","PJSIP/1001-00000099"` + "\n", []string{`"5551234567` + "\n" + `,1001,""x""","PJSIP/1001-00000099"`}, ""},
		{`"a""` + "\n" + `b",c` + "\n", []string{`"a""` + "\n" + `b",c`}, ""},
		{`"open` + "\n" + `still open`, nil, `"open` + "\n" + `still open`},
		{`"a"` + "\r\n" + `b` + "\n", []string{`"a"` + "\r", "b"}, ""},
		{`ab"c` + "\n" + `d` + "\n", []string{`ab"c`, "d"}, ""},             // bare quote: bad record, ends at the line as encoding/csv's
		{`"a"x,"b` + "\n" + `c` + "\n", []string{`"a"x,"b`, "c"}, ""},       // stray quote: the same
		{`"",""` + "\n" + "\n", []string{`"",""`, ""}, ""},                  // empty line: an empty record
		{`"x",` + "\x00\x01\n", []string{`"x",` + "\x00\x01"}, ""},          // control bytes are data
		{`"a` + "\n\n\n" + `"` + "\n", []string{`"a` + "\n\n\n" + `"`}, ""}, // blank lines inside quotes
	} {
		recs, rest := splitCSV([]byte(tt.in))
		if !slices.Equal(recs, tt.recs) || rest != tt.rest {
			t.Errorf("split %q = %q rest %q, want %q rest %q", tt.in, recs, rest, tt.recs, tt.rest)
		}
	}
}

// FuzzCSVScan: on any input encoding/csv reads without error, the records
// the splitter cuts are encoding/csv's records, one each.
func FuzzCSVScan(f *testing.F) {
	f.Add([]byte("\"a\n,1001\",b\nc,d\n"))
	f.Add([]byte("\"\"\"\n\",\"\r\n\"\r\nx\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := csv.NewReader(strings.NewReader(string(b)))
		r.FieldsPerRecord = -1
		want, err := r.ReadAll()
		if err != nil {
			return
		}
		recs, rest := splitCSV(b)
		if rest != "" {
			recs = append(recs, rest) // encoding/csv ends the last record at EOF
		}
		var got [][]string
		for _, rec := range recs {
			rr := csv.NewReader(strings.NewReader(rec))
			rr.FieldsPerRecord = -1
			one, err := rr.Read()
			if errors.Is(err, io.EOF) {
				continue // an empty line: encoding/csv skips it
			}
			if err != nil {
				t.Fatalf("record %q of %q: %v", rec, b, err)
			}
			if _, err := rr.Read(); !errors.Is(err, io.EOF) {
				t.Fatalf("record %q of %q holds more than one record", rec, b)
			}
			got = append(got, one)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d records, encoding/csv %d: %q vs %q", b, len(got), len(want), got, want)
		}
		for i := range got {
			if !slices.Equal(got[i], want[i]) {
				t.Fatalf("%q: record %d = %q, encoding/csv %q", b, i, got[i], want[i])
			}
		}
	})
}

const forgedDst = "\"\",\"1001\",\"5551234567\n,1001,+88216123456,from-internal,x,PJSIP/1001-00000099,x,Dial,x,2026-11-25 04:00:36,2026-11-25 04:00:36,2026-11-25 04:00:40,4,4,ANSWERED,DOCUMENTATION,1.1,\n\",\"from-internal\",\"PJSIP/1001-00000000\"\n"

func TestFileCSVRecordSpansLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Master.csv")
	appendFile(t, path, "\"a\",\"b\"\n")
	c := &collector{}
	f, stop := follow(t, path, Position{}, FileOptions{CSV: true}, c)
	c.waitN(t, 1)
	// A record cut in its quoted field waits for the rest.
	cut := strings.Index(forgedDst, "\n")
	appendFile(t, path, forgedDst[:cut+1])
	time.Sleep(150 * time.Millisecond)
	if got, _ := c.snapshot(); len(got) != 1 {
		t.Fatalf("a record cut inside quotes was handed on: %q", got)
	}
	appendFile(t, path, forgedDst[cut+1:])
	got := c.waitN(t, 2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := []string{`"a","b"`, strings.TrimSuffix(forgedDst, "\n")}
	if !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	_, pos := c.snapshot()
	if pos[1].Offset != int64(len("\"a\",\"b\"\n")+len(forgedDst)) {
		t.Fatalf("position %d is not the record boundary", pos[1].Offset)
	}
	if f.Stats().Lines != 2 {
		t.Fatalf("stats %+v", f.Stats())
	}
	// A restart at the saved position resumes at the next record.
	appendFile(t, path, "\"c\"\n")
	c2 := &collector{}
	follow(t, path, pos[1], FileOptions{CSV: true}, c2)
	if got := c2.waitN(t, 1); !slices.Equal(got, []string{`"c"`}) {
		t.Fatalf("after restart: %q", got)
	}
}

// A record longer than MaxLine is skipped to its real end: the lines inside
// its quotes are never read as records.
func TestFileCSVLongRecordSkippedWhole(t *testing.T) {
	for _, size := range []int{MaxLine + 10, 3 * MaxLine} { // within one read; across reads
		path := filepath.Join(t.TempDir(), "Master.csv")
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c := &collector{}
		f, stop := follow(t, path, Position{}, FileOptions{CSV: true}, c)
		long := "\"" + strings.Repeat("x", size) + "\n\"\"forged\"\",PJSIP/1001-00000099\n" + strings.Repeat("y\n", 100) + "\",\"z\"\n"
		appendFile(t, path, long[:len(long)/2])
		time.Sleep(100 * time.Millisecond)
		appendFile(t, path, long[len(long)/2:]+"\"next\"\n")
		c.waitN(t, 1)
		time.Sleep(100 * time.Millisecond)
		got, _ := c.snapshot()
		if len(got) != 1 || got[0] != `"next"` || f.Stats().LongSkipped != 1 {
			t.Fatalf("size %d: %d records (first %.80q), stats %+v", size, len(got), got[0], f.Stats())
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// Started at the end of a file that ends inside a quoted field (with a '\n'
// there): the rest of that record is skipped, not read as a record.
func TestFileCSVStartAtEndInsideRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "Master.csv")
	appendFile(t, path, "\"old\"\n\"cut here\n")
	c := &collector{}
	follow(t, path, Position{}, FileOptions{CSV: true, StartAtEnd: true}, c)
	time.Sleep(100 * time.Millisecond)
	appendFile(t, path, ",\"PJSIP/1001-00000099\"\n\"new\"\n")
	c.waitN(t, 1)
	time.Sleep(100 * time.Millisecond)
	got, _ := c.snapshot()
	if !slices.Equal(got, []string{`"new"`}) {
		t.Fatalf("records %q, want only \"new\"", got)
	}
}

// A record still open when its file is rotated away is dropped, counted.
func TestFileCSVCutByRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Master.csv")
	appendFile(t, path, "\"a\"\n")
	c := &collector{}
	f, _ := follow(t, path, Position{}, FileOptions{CSV: true}, c)
	c.waitN(t, 1)
	appendFile(t, path, "\"cut\n")
	time.Sleep(100 * time.Millisecond)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, ",PJSIP/1001-00000099\n\"b\"\n")
	got := c.waitN(t, 3)
	// The new file starts at a record boundary: its first line is a record
	// of its own, never glued to the old file's cut record.
	if !slices.Equal(got, []string{`"a"`, ",PJSIP/1001-00000099", `"b"`}) {
		t.Fatalf("records %q", got)
	}
	if f.Stats().CutRecords != 1 {
		t.Fatalf("stats %+v, want CutRecords 1", f.Stats())
	}
}

// The CSV splitter allocates nothing per record (the feed of a read that
// holds many records).
func TestCSVFeedZeroAllocs(t *testing.T) {
	data, err := os.ReadFile("../../testdata/corpus/asterisk-20/log/cdr-csv/Master.csv")
	if err != nil {
		t.Fatal(err)
	}
	var c counters
	sp := newSplitter("Master.csv", slog.New(slog.DiscardHandler), &c)
	sp.csv = true
	n := 0
	handle := func(Line) error { n++; return nil }
	now := time.Now()
	allocs := testing.AllocsPerRun(20, func() {
		m := copy(sp.space(), data)
		_ = sp.feed(m, int64(m), Position{Path: "Master.csv"}, now, handle)
	})
	if allocs != 0 || n == 0 || sp.pend != 0 {
		t.Fatalf("%.1f allocations per feed of %d records (%d handed on, %d pending)", allocs, bytes.Count(data, []byte("\n")), n, sp.pend)
	}
}

// BenchmarkReaderCSVRecords: the CSV follower's splitter on the corpus
// Master.csv (bytes/s, allocations).
func BenchmarkReaderCSVRecords(b *testing.B) {
	one, err := os.ReadFile("../../testdata/corpus/asterisk-20/log/cdr-csv/Master.csv")
	if err != nil {
		b.Fatal(err)
	}
	data := bytes.Repeat(one, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	n := 0
	for b.Loop() {
		r := NewReader("bench", &sliceReader{b: data}).WithCSV()
		_ = r.Run(context.Background(), func(Line) error { n++; return nil })
	}
	_ = n
}
