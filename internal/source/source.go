// Package source is where log bytes come from: a file follower that survives
// rotation and truncation and remembers its offset, the systemd journal, and
// any io.Reader (stdin, tests). A source hands on complete lines and knows
// nothing about what they mean.
package source

import (
	"bytes"
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Position is where a source has read up to: the offset just after the last
// complete line handed on. The daemon stores it and gives it back to NewFile
// (or the Cursor to NewJournal) after a restart.
type Position struct {
	Path   string // the followed path (not the rotated copy's name)
	Inode  uint64 // inode of the file Offset refers to (may be a rotated copy)
	Size   int64  // bytes of that file read so far (>= Offset)
	Offset int64  // just after the last complete line handed on
	Cursor string // journal cursor (journal sources only)
	// Check fingerprints the last bytes before Offset (up to 32 bytes of the
	// last line, '\n' included). 0 = unknown. On resume it tells a file that
	// was truncated and rewritten while we were down from the one we read, and
	// finds the copy a copytruncate left behind. Persist it with Offset.
	Check uint64
}

// Line is one complete line, without its '\n' (and without a '\r' before it).
type Line struct {
	Source   string
	Data     []byte // valid only during the callback: copy what you keep
	Pos      Position
	Received time.Time
}

// Source produces lines.
type Source interface {
	Name() string
	// Run hands lines to handle until ctx is done (then it returns nil) or a
	// fatal error happens (an error from handle is fatal and returned wrapped).
	Run(ctx context.Context, handle func(Line) error) error
}

// Stats are a source's counters; safe to read while Run runs.
type Stats struct {
	Lines       uint64 // lines handed on
	Bytes       uint64 // bytes read
	LongSkipped uint64 // lines longer than MaxLine, skipped
	Rotations   uint64 // rename rotations followed (file sources)
	Truncations uint64 // truncations (copytruncate or plain) seen (file sources)
	CopiesRead  uint64 // rotated copies read to recover lines (file sources)
	Gaps        uint64 // times lines were certainly or possibly lost (truncation without copy, stale journal cursor)
	Malformed   uint64 // malformed entries skipped (journal)
	CutRecords  uint64 // CSV records (FileOptions.CSV) still open when their file ended, dropped
}

// MaxLine is the longest line handed on. Longer lines are skipped, counted
// (Stats.LongSkipped) and logged.
const MaxLine = 64 << 10

type counters struct {
	lines, bytes, longSkipped, rotations, truncations, copiesRead, gaps, malformed, cutRecords atomic.Uint64
}

func (c *counters) stats() Stats {
	return Stats{
		Lines: c.lines.Load(), Bytes: c.bytes.Load(), LongSkipped: c.longSkipped.Load(),
		Rotations: c.rotations.Load(), Truncations: c.truncations.Load(),
		CopiesRead: c.copiesRead.Load(), Gaps: c.gaps.Load(), Malformed: c.malformed.Load(),
		CutRecords: c.cutRecords.Load(),
	}
}

// splitter turns a byte stream into lines with one fixed buffer: no
// allocation per line. buf[:pend] holds the start of an incomplete line.
type splitter struct {
	name     string
	log      *slog.Logger
	c        *counters
	buf      []byte
	pend     int
	skipping bool // inside an over-long line (or a line we start inside): drop until the next '\n'
	// csv: a line is a CSV record (encoding/csv's grammar): a '\n' inside a
	// quoted field does not end it. st is where the scan of the bytes seen
	// so far stands; it survives skipped (over-long) records, so a record
	// is never re-read as lines.
	csv bool
	st  csvState
}

func newSplitter(name string, log *slog.Logger, c *counters) splitter {
	return splitter{name: name, log: log, c: c, buf: make([]byte, 2*MaxLine)}
}

// space is where the next read goes; it is never shorter than MaxLine.
func (s *splitter) space() []byte { return s.buf[s.pend:] }

// feed hands on the complete lines in the pending bytes plus the n bytes just
// read into space(). endOff is the stream offset just after those n bytes;
// pos is the template for Line.Pos (Offset and Check are filled in).
func (s *splitter) feed(n int, endOff int64, pos Position, now time.Time, handle func(Line) error) error {
	data := s.buf[:s.pend+n]
	base := endOff - int64(len(data)) // stream offset of data[0]; < 0 when pending came from a previous file
	start, i := 0, s.pend
	s.c.bytes.Add(uint64(n))
	for {
		var j int
		if s.csv {
			j = s.st.scan(data[i:])
		} else {
			j = bytes.IndexByte(data[i:], '\n')
		}
		if j < 0 {
			break
		}
		end := i + j
		if s.skipping {
			s.skipping = false
			start, i = end+1, end+1
			continue
		}
		if s.csv && end-start > MaxLine {
			// A record too long for Asterisk to have written (cdr_csv
			// writes at most 1 KiB) that arrived in one read: skipped
			// whole, like one that did not.
			s.c.longSkipped.Add(1)
			s.log.Warn("source: CSV record longer than the maximum skipped", "source", s.name, "max_bytes", MaxLine, "offset", base+int64(start))
			start, i = end+1, end+1
			continue
		}
		line := data[start:end]
		for len(line) > 0 && line[0] == 0 {
			// NULs left by a writer that kept its offset across a
			// copytruncate (no O_APPEND): the file restarts with a hole.
			line = line[1:]
		}
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		pos.Offset = base + int64(end+1)
		pos.Check = fingerprint(data[max(start, end+1-checkLen) : end+1])
		s.c.lines.Add(1)
		if err := handle(Line{Source: s.name, Data: line, Pos: pos, Received: now}); err != nil {
			s.pend = copy(s.buf, data[end+1:])
			return err
		}
		start, i = end+1, end+1
	}
	rest := data[start:]
	switch {
	case s.skipping:
		s.pend = 0
	case len(rest) >= MaxLine:
		s.c.longSkipped.Add(1)
		s.log.Warn("source: line longer than the maximum skipped", "source", s.name, "max_bytes", MaxLine, "offset", base+int64(start))
		s.skipping, s.pend = true, 0
	default:
		s.pend = copy(s.buf, rest)
	}
	return nil
}

// flush hands on a pending incomplete line as if it were complete (used when
// its file is finished, e.g. after a rename rotation).
func (s *splitter) flush(pos Position, now time.Time, handle func(Line) error) error {
	if s.csv && s.st.open() {
		// A CSV record cut by the end of its file: never handed on (its
		// rest, if any, would have to be read as a record of its own).
		if s.pend > 0 || s.skipping {
			s.c.cutRecords.Add(1)
			s.log.Warn("source: CSV record cut by the end of its file dropped", "source", s.name, "bytes", s.pend)
		}
		s.pend, s.skipping, s.st = 0, false, csvRecordStart
		return nil
	}
	s.st = csvRecordStart
	if s.skipping || s.pend == 0 {
		s.pend, s.skipping = 0, false
		return nil
	}
	line := s.buf[:s.pend]
	pos.Check = fingerprint(line[max(0, len(line)-checkLen):])
	s.pend = 0
	s.c.lines.Add(1)
	return handle(Line{Source: s.name, Data: line, Pos: pos, Received: now})
}

// drop forgets pending bytes (their continuation is lost).
func (s *splitter) drop() { s.pend, s.skipping, s.st = 0, false, csvRecordStart }

// csvState is where a scan of CSV bytes stands, following encoding/csv
// (RFC 4180, LazyQuotes off): a field that starts with '"' runs to the
// '"' that is followed by ',' or the end of the line; "" inside it is a
// quote; a '\n' inside it is data.
type csvState uint8

const (
	csvRecordStart csvState = iota // at the start of a record
	csvFieldStart                  // after a ','
	csvUnquoted                    // in an unquoted field
	csvQuoted                      // in a quoted field
	csvQuote                       // after a '"' in a quoted field: its end, or the first of ""
	csvQuoteCR                     // after `"\r` (ends the record when '\n' follows)
	// csvBad: a bare quote in an unquoted field or a stray one after a
	// closing quote; encoding/csv rejects the record and reads on after the
	// line, so the record ends at the next '\n' (the parser rejects it).
	csvBad
)

// open reports whether the scan stands inside a record that has begun.
func (st csvState) open() bool { return st != csvRecordStart }

// scan advances the state over b and returns the index of the '\n' that
// ends the current record (the state is then csvRecordStart), or -1 when b
// does not end it.
func (st *csvState) scan(b []byte) int {
	s := *st
	for i, c := range b {
		switch s {
		case csvRecordStart, csvFieldStart, csvUnquoted:
			switch c {
			case '\n':
				*st = csvRecordStart
				return i
			case ',':
				s = csvFieldStart
			case '"':
				if s == csvUnquoted {
					s = csvBad
				} else {
					s = csvQuoted
				}
			default:
				s = csvUnquoted
			}
		case csvQuoted:
			if c == '"' {
				s = csvQuote
			}
		case csvQuote:
			switch c {
			case '"':
				s = csvQuoted
			case ',':
				s = csvFieldStart
			case '\r':
				s = csvQuoteCR
			case '\n':
				*st = csvRecordStart
				return i
			default:
				s = csvBad
			}
		case csvQuoteCR:
			if c == '\n' {
				*st = csvRecordStart
				return i
			}
			s = csvBad
		case csvBad:
			if c == '\n' {
				*st = csvRecordStart
				return i
			}
		}
	}
	*st = s
	return -1
}

const checkLen = 32

// fingerprint is FNV-1a of b (at most checkLen bytes) with len(b) in the top
// byte, so that a check can be verified knowing only Offset.
func fingerprint(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h&(1<<56-1) | uint64(len(b))<<56
}

func checkSpan(check uint64) int64 { return int64(check >> 56) }
