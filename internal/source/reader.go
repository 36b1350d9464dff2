package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// Reader hands on the lines of an io.Reader (stdin, tests). Pos.Offset counts
// bytes from the start of the stream.
type Reader struct {
	name string
	r    io.Reader
	c    counters
	sp   splitter
}

// NewReader returns a source reading r to its end.
func NewReader(name string, r io.Reader) *Reader {
	rd := &Reader{name: name, r: r}
	rd.sp = newSplitter(name, slog.New(slog.DiscardHandler), &rd.c)
	return rd
}

// WithLogger sets the logger for warnings (long lines); it returns rd.
func (rd *Reader) WithLogger(l *slog.Logger) *Reader {
	if l != nil {
		rd.sp.log = l
	}
	return rd
}

// WithCSV makes each line one CSV record, as FileOptions.CSV does for a
// file (a record still open at EOF is dropped, counted in CutRecords); it
// returns rd.
func (rd *Reader) WithCSV() *Reader {
	rd.sp.csv = true
	return rd
}

// Name is the name given to NewReader.
func (rd *Reader) Name() string { return rd.name }

// Stats returns the counters.
func (rd *Reader) Stats() Stats { return rd.c.stats() }

// Run reads to EOF (a last line without '\n' is handed on then) and returns
// nil. When ctx is done it returns nil after the read in progress returns:
// a Read blocked on a terminal or pipe is not interrupted.
func (rd *Reader) Run(ctx context.Context, handle func(Line) error) error {
	var off int64
	for {
		if ctx.Err() != nil {
			return nil
		}
		n, err := rd.r.Read(rd.sp.space())
		if n > 0 {
			off += int64(n)
			if herr := rd.sp.feed(n, off, Position{Path: rd.name, Size: off}, time.Now(), handle); herr != nil {
				return fmt.Errorf("source %s: %w", rd.name, herr)
			}
		}
		if errors.Is(err, io.EOF) {
			if ferr := rd.sp.flush(Position{Path: rd.name, Size: off, Offset: off}, time.Now(), handle); ferr != nil {
				return fmt.Errorf("source %s: %w", rd.name, ferr)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("source %s: read: %w", rd.name, err)
		}
	}
}
