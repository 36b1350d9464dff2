package systemd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// StderrIsJournal reports whether stderr is connected to journald:
// $JOURNAL_STREAM ("device:inode") matches stderr's own device and inode
// (systemd.exec(5)). A child whose stderr was redirected elsewhere inherits
// the variable but not the match.
func StderrIsJournal() bool {
	return fileIsJournal(os.Stderr, os.Getenv("JOURNAL_STREAM"))
}

func fileIsJournal(f *os.File, stream string) bool {
	devS, inoS, ok := strings.Cut(stream, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devS, 10, 64)
	ino, err2 := strconv.ParseUint(inoS, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// Priority is the syslog priority journald reads from a "<N>" prefix.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // err
	case l >= slog.LevelWarn:
		return 4 // warning
	case l >= slog.LevelInfo:
		return 6 // info
	}
	return 7 // debug
}

// JournalHandler writes one line per record for journald: "<N>message
// key=value …". No timestamp (journald stamps each line) and no level word
// (the priority carries it); a key given twice (by With and by the record)
// appears once, with its last value; values with spaces, quotes, control
// bytes or invalid UTF-8 are quoted with escapes, so no value can split a
// line or forge a priority.
type JournalHandler struct {
	mu     *sync.Mutex
	w      io.Writer
	level  slog.Leveler
	attrs  []slog.Attr // from WithAttrs, keys already prefixed with groups
	prefix string      // open groups, "a.b."
}

// NewJournalHandler writes to w the records at level or above.
func NewJournalHandler(w io.Writer, level slog.Leveler) *JournalHandler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &JournalHandler{mu: &sync.Mutex{}, w: w, level: level}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	return &h2
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(_ context.Context, r slog.Record) error {
	attrs := append([]slog.Attr(nil), h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		attrs = appendAttr(attrs, h.prefix, a)
		return true
	})
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>", Priority(r.Level))
	b.WriteString(escapeMessage(r.Message))
	for _, a := range attrs {
		b.WriteByte(' ')
		b.WriteString(quoteIfNeeded(a.Key))
		b.WriteByte('=')
		b.WriteString(quoteIfNeeded(valueString(a.Value)))
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// appendAttr adds a (groups flattened to dotted keys), replacing an
// earlier attribute of the same key in place.
func appendAttr(list []slog.Attr, prefix string, a slog.Attr) []slog.Attr {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return list
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			list = appendAttr(list, p, g)
		}
		return list
	}
	a.Key = prefix + a.Key
	for i := range list {
		if list[i].Key == a.Key {
			list[i] = a
			return list
		}
	}
	return append(list, a)
}

func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindDuration:
		return v.Duration().String()
	}
	return v.String()
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r <= ' ' || r == '=' || r == '"' || r == '\\' || r == 0x7f || r == 0x2028 || r == 0x2029 {
			return true
		}
		i += size
	}
	return false
}

func quoteIfNeeded(s string) string {
	if needsQuote(s) {
		return strconv.Quote(s)
	}
	return s
}

// escapeMessage keeps a message on one line (messages are ours, but may
// carry an error's text).
func escapeMessage(s string) string {
	if !strings.ContainsAny(s, "\r\n\x00") {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
