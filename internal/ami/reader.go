package ami

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxMessageSize bounds one message (all its lines, command output
// included) when the caller does not choose a limit.
const DefaultMaxMessageSize = 1 << 20

// readBufferSize is the size of the Reader's read buffer; lines longer
// than this are assembled in a separate buffer bounded by the message limit.
const readBufferSize = 32 << 10

// Errors a Reader reports. A *ParseError wraps ErrMalformed or ErrTooLarge
// and means one message was skipped: the Reader has resynchronised and the
// next call to Next continues with the following message.
var (
	ErrMalformed = errors.New("malformed AMI message")
	ErrTooLarge  = errors.New("AMI message too large")
	ErrNotAMI    = errors.New("peer is not an Asterisk Manager Interface")
)

// ParseError describes a message the Reader skipped.
type ParseError struct {
	Offset int64  // stream offset of the first byte of the skipped message
	Line   string // the first offending line (cut to 64 bytes)
	Err    error  // ErrMalformed or ErrTooLarge
}

func (e *ParseError) Error() string {
	if errors.Is(e.Err, ErrTooLarge) {
		return fmt.Sprintf("ami: message at byte %d skipped: %v (raise the message size limit if this is a legitimate command output)", e.Offset, e.Err)
	}
	return fmt.Sprintf("ami: message at byte %d skipped: %v: line %q is not \"Key: Value\"", e.Offset, e.Err, e.Line)
}

func (e *ParseError) Unwrap() error { return e.Err }

// bannerPrefix starts the greeting line Asterisk sends on connect
// ("Asterisk Call Manager/9.0.0"; proxies say "Asterisk Call Manager Proxy/…").
var bannerPrefix = []byte("Asterisk Call Manager")

// endCommand ends the output of a "Response: Follows" command response
// (Asterisk up to 13), possibly glued to the last output line.
var endCommand = []byte("--END COMMAND--")

// span locates one header inside the message body; k0 < 0 means the
// synthetic key "Output" (a raw line of a Response: Follows command output).
type span struct{ k0, k1, v0, v1 int32 }

// Reader splits an AMI byte stream into messages. It accepts CRLF and bare
// LF line ends, the greeting banner, command output in the old
// ("Response: Follows" … "--END COMMAND--") and new ("Output:" headers)
// forms, reads split at any byte, bounds the size of a message, and never
// panics: a bad message yields a *ParseError and the Reader moves on to the
// next blank line. A Reader is not safe for concurrent use.
type Reader struct {
	br     *bufio.Reader
	max    int
	off    int64 // stream offset of the next unread byte
	long   []byte
	banner string

	// the message being assembled
	body    []byte
	spans   []span
	size    int
	start   int64
	bad     error
	badLine string
	follows bool // inside a Response: Follows command response
	output  bool // the raw output of a Follows response has started
	ended   bool // --END COMMAND-- seen
}

// NewReader returns a Reader with DefaultMaxMessageSize.
func NewReader(r io.Reader) *Reader { return NewReaderSize(r, DefaultMaxMessageSize) }

// NewReaderSize returns a Reader that skips (with ErrTooLarge) any message
// larger than max bytes. Memory held by the Reader is O(max) whatever the
// input: the message body (max), one 16-byte span per line of at least 4
// bytes (4×max at worst, doubled by slice growth), a long-line buffer
// (max) and a 32 KiB read buffer.
func NewReaderSize(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize), max: max}
}

// Banner is the greeting line seen so far ("Asterisk Call Manager/9.0.0"),
// or "".
func (r *Reader) Banner() string { return r.banner }

// Offset is the number of bytes consumed from the underlying reader.
func (r *Reader) Offset() int64 { return r.off }

// ReadBanner reads the greeting line a manager sends on connect. It fails
// with ErrNotAMI (quoting what came instead) when the first line is not an
// Asterisk Call Manager banner, which usually means a wrong port.
func (r *Reader) ReadBanner() (string, error) {
	line, tooLong, err := r.readLine()
	if err != nil && (err != io.EOF || len(line) == 0) {
		return "", err
	}
	if !tooLong && bytes.HasPrefix(line, bannerPrefix) {
		r.banner = string(trimEOL(line))
		return r.banner, nil
	}
	return "", fmt.Errorf("%w: it greeted with %q instead of \"Asterisk Call Manager/…\"", ErrNotAMI, cut(line, 64))
}

// readLine returns the next line without its line end. The slice is valid
// until the next read. tooLong reports a line over the message limit (its
// bytes are dropped). At the end of the stream it returns the partial last
// line (if any) with io.EOF.
func (r *Reader) readLine() (line []byte, tooLong bool, err error) {
	line, err = r.br.ReadSlice('\n')
	r.off += int64(len(line))
	if err == nil {
		return trimEOL(line), false, nil
	}
	if err != bufio.ErrBufferFull {
		return line, false, err
	}
	r.long = append(r.long[:0], line...)
	for {
		line, err = r.br.ReadSlice('\n')
		r.off += int64(len(line))
		if !tooLong {
			if len(r.long)+len(line) > r.max {
				tooLong = true
				r.long = r.long[:0]
			} else {
				r.long = append(r.long, line...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		out := r.long
		if cap(r.long) > readBufferSize*4 {
			r.long = nil // do not keep a huge buffer for the rest of the session
		}
		if err != nil {
			return out, tooLong, err
		}
		return trimEOL(out), tooLong, nil
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	for n := len(b); n > 0 && b[n-1] == '\r'; n-- {
		b = b[:n-1]
	}
	return b
}

func (r *Reader) reset() {
	r.body = r.body[:0]
	r.spans = r.spans[:0]
	r.size = 0
	r.bad = nil
	r.badLine = ""
	r.follows, r.output, r.ended = false, false, false
	if cap(r.body) > readBufferSize*4 || cap(r.spans) > 4096 {
		r.body, r.spans = nil, nil // do not keep a huge message's buffers
	}
}

func (r *Reader) empty() bool { return len(r.spans) == 0 && r.bad == nil && r.size == 0 }

func (r *Reader) markBad(err error, line []byte) {
	if r.bad == nil {
		r.bad = err
		r.badLine = string(cut(line, 64))
	}
	r.body = r.body[:0]
	r.spans = r.spans[:0]
}

// Next returns the next message. It returns io.EOF at a clean end of
// stream, an error wrapping io.ErrUnexpectedEOF when the stream ends inside
// a message, a *ParseError for a skipped message (call Next again), and the
// underlying reader's error otherwise.
func (r *Reader) Next() (*Message, error) {
	r.reset()
	r.start = r.off
	for {
		line, tooLong, err := r.readLine()
		if err != nil {
			if err == io.EOF {
				if len(line) == 0 && r.empty() {
					return nil, io.EOF
				}
				return nil, fmt.Errorf("ami: stream ended inside the message at byte %d: %w", r.start, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		// Inside the raw output of a "Response: Follows" command response
		// blank lines are output, and only --END COMMAND-- ends it (an
		// oversized one is skipped up to there, or 4× the limit at most).
		inOutput := r.follows && !r.ended && r.size <= 4*r.max
		if tooLong {
			r.markBad(ErrTooLarge, nil)
			r.size += r.max + 1
			continue
		}
		if len(line) == 0 {
			if r.empty() {
				r.start = r.off
				continue
			}
			if inOutput {
				if r.bad == nil {
					r.addOutput(line)
				}
				continue
			}
			if r.bad != nil {
				return nil, &ParseError{Offset: r.start, Line: r.badLine, Err: r.bad}
			}
			return r.build(), nil
		}
		if r.empty() && bytes.HasPrefix(line, bannerPrefix) {
			r.banner = string(cut(line, 128))
			r.start = r.off
			continue
		}
		r.size += len(line) + 2
		if inOutput && bytes.HasSuffix(line, endCommand) {
			if pre := line[:len(line)-len(endCommand)]; len(pre) > 0 && r.bad == nil && r.size <= r.max {
				r.addOutput(pre)
			}
			r.ended = true
			continue
		}
		if r.size > r.max {
			r.markBad(ErrTooLarge, nil)
			continue
		}
		if r.bad != nil {
			continue
		}
		if inOutput {
			if !r.output {
				if k, v, ok := splitHeader(line); ok && isFollowsHeader(k) {
					r.addHeader(k, v)
					continue
				}
				r.output = true
			}
			r.addOutput(line)
			continue
		}
		k, v, ok := splitHeader(line)
		if !ok {
			r.markBad(ErrMalformed, line)
			continue
		}
		if len(r.spans) == 0 && string(k) == "Response" && bytes.EqualFold(v, []byte("Follows")) {
			r.follows = true
		}
		r.addHeader(k, v)
	}
}

// isFollowsHeader: the headers Asterisk writes before the raw output of a
// "Response: Follows" command response.
func isFollowsHeader(k []byte) bool {
	return string(k) == "Privilege" || string(k) == "ActionID" || string(k) == "Message"
}

// splitHeader splits "Key: Value". The key must be non-empty and free of
// spaces and control characters; the one blank after the colon is dropped.
func splitHeader(line []byte) (k, v []byte, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return nil, nil, false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c == 0x7f {
			return nil, nil, false
		}
	}
	v = line[i+1:]
	if len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:] // Asterisk writes "Key: Value"; more blanks are data ("Output:   Contact: …")
	}
	return line[:i], v, true
}

func (r *Reader) addHeader(k, v []byte) {
	k0 := int32(len(r.body))
	r.body = append(r.body, k...)
	v0 := int32(len(r.body))
	r.body = append(r.body, v...)
	r.spans = append(r.spans, span{k0, v0, v0, int32(len(r.body))})
}

func (r *Reader) addOutput(line []byte) {
	v0 := int32(len(r.body))
	r.body = append(r.body, line...)
	r.spans = append(r.spans, span{-1, -1, v0, int32(len(r.body))})
}

// build turns the assembled body into a Message: one string for all keys
// and values, one slice of headers.
func (r *Reader) build() *Message {
	s := string(r.body)
	hs := make([]Header, len(r.spans))
	for i, sp := range r.spans {
		if sp.k0 < 0 {
			hs[i].Key = "Output"
		} else {
			hs[i].Key = s[sp.k0:sp.k1]
		}
		hs[i].Value = s[sp.v0:sp.v1]
	}
	return &Message{Headers: hs}
}

// ParseMessage parses one message from b (the blank line at its end is
// optional). Bytes after the first message are ignored.
func ParseMessage(b []byte) (*Message, error) {
	buf := make([]byte, 0, len(b)+4)
	buf = append(buf, b...)
	buf = append(buf, "\r\n\r\n"...)
	m, err := NewReader(bytes.NewReader(buf)).Next()
	if err == io.EOF {
		return nil, fmt.Errorf("ami: no message in %d bytes: %w", len(b), ErrMalformed)
	}
	return m, err
}

func cut(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
