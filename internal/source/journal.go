package source

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// JournalOptions tune a Journal. The zero value is usable.
type JournalOptions struct {
	Logger *slog.Logger
	// Command is journalctl and any leading arguments; default ["journalctl"].
	// The follow, output and cursor arguments and the matches are appended.
	Command []string
	// Backlog, with no cursor, reads the entries of this window before now
	// (--since=-N s) instead of none (--lines=0): a first start counts the
	// attacks of the minutes before it (fail2ban reads findtime back too),
	// and a restart without a saved cursor loses nothing of a shorter
	// downtime. The daemon passes the jail's findtime.
	Backlog time.Duration
}

// Journal follows the systemd journal through `journalctl -f -o json`.
//
// Each entry becomes one line "Jan _2 15:04:05 host ident[pid]: MESSAGE"
// (local time, from __REALTIME_TIMESTAMP, _HOSTNAME, _COMM (else the name
// of _EXE, else SYSLOG_IDENTIFIER), _PID or SYSLOG_PID) so that the line detectors written for syslog
// files parse it unchanged. Pos.Cursor is the entry's __CURSOR: store it and
// give it back to NewJournal to resume after the last entry handed on.
type Journal struct {
	name    string
	matches []string
	cursor  string
	opts    JournalOptions
	log     *slog.Logger
	c       counters
	out     []byte // formatted line, reused

	mu      sync.Mutex
	lastCur string
}

// NewJournal returns a journal source. matches are journalctl match
// arguments, e.g. "_SYSTEMD_UNIT=ssh.service"; cursor is where to resume
// ("" = from now on).
func NewJournal(name string, matches []string, cursor string, opts JournalOptions) *Journal {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if len(opts.Command) == 0 {
		opts.Command = []string{"journalctl"}
	}
	return &Journal{name: name, matches: matches, cursor: cursor, opts: opts, log: opts.Logger}
}

// Name is the name given to NewJournal.
func (j *Journal) Name() string { return j.name }

// Stats returns the counters.
func (j *Journal) Stats() Stats { return j.c.stats() }

// Cursor is the cursor of the last entry handed on ("" before the first).
func (j *Journal) Cursor() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.lastCur
}

// Args are the arguments passed to the command (after opts.Command).
func (j *Journal) Args() []string {
	args := []string{"--follow", "--output=json"}
	if cur := j.resumeCursor(); cur != "" {
		args = append(args, "--after-cursor="+cur, "--no-tail")
	} else if j.opts.Backlog > 0 {
		args = append(args, fmt.Sprintf("--since=-%ds", int64((j.opts.Backlog+time.Second-1)/time.Second)))
	} else {
		args = append(args, "--lines=0")
	}
	return append(args, j.matches...)
}

func (j *Journal) resumeCursor() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.lastCur != "" {
		return j.lastCur
	}
	return j.cursor
}

// Run starts the command and hands on its entries until ctx is done. The
// command exiting on its own is an error (the daemon restarts the source;
// Run resumes after the last entry handed on).
func (j *Journal) Run(ctx context.Context, handle func(Line) error) error {
	err := j.run(ctx, handle)
	if err != nil && errors.Is(err, errBadCursor) {
		// The journal no longer holds the cursor (rotated or vacuumed while
		// we were down): what was logged in between is gone with it.
		j.c.gaps.Add(1)
		j.log.Warn("source: the saved journal cursor is no longer in the journal; following from now on (entries since the cursor may be lost)",
			"source", j.name, "cursor", j.resumeCursor())
		j.mu.Lock()
		j.cursor, j.lastCur = "", ""
		j.mu.Unlock()
		err = j.run(ctx, handle)
	}
	if errors.Is(err, errBadCursor) {
		err = errors.Unwrap(err)
	}
	return err
}

// errBadCursor wraps the error of a command that rejected the cursor
// before handing on any entry.
var errBadCursor = errors.New("journal cursor rejected")

type badCursorError struct{ err error }

func (e badCursorError) Error() string        { return e.err.Error() }
func (e badCursorError) Unwrap() error        { return e.err }
func (e badCursorError) Is(target error) bool { return target == errBadCursor }

func (j *Journal) run(ctx context.Context, handle func(Line) error) error {
	bin := j.opts.Command[0]
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("source %s: %q not found (%w): install systemd's journalctl, or follow the log file instead (e.g. files: [/var/log/auth.log])", j.name, bin, err)
	}
	hadCursor := j.resumeCursor() != ""
	linesBefore := j.c.lines.Load()
	args := append(append([]string(nil), j.opts.Command[1:]...), j.Args()...)
	cmd := exec.CommandContext(ctx, path, args...)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("source %s: %w", j.name, err)
	}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("source %s: start %s: %w", j.name, path, err)
	}
	j.log.Info("source: following the journal", "source", j.name, "command", path, "args", args)
	rerr := j.read(ctx, out, handle)
	if rerr != nil && ctx.Err() == nil {
		_ = cmd.Process.Kill()
	}
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if rerr != nil {
		return fmt.Errorf("source %s: %w", j.name, rerr)
	}
	msg := strings.TrimSpace(stderr.String())
	if werr == nil {
		werr = errors.New("exited")
	}
	err = fmt.Errorf("source %s: %s stopped: %w", j.name, bin, werr)
	if msg != "" {
		err = fmt.Errorf("source %s: %s stopped: %w: %s", j.name, bin, werr, msg)
	}
	if j.c.lines.Load() == linesBefore && hadCursor && strings.Contains(strings.ToLower(msg), "cursor") {
		return badCursorError{err}
	}
	return err
}

// journalEntry holds the fields we use. Fields absent from an entry keep
// their zero value because read resets the struct before each entry.
type journalEntry struct {
	Cursor    jfield `json:"__CURSOR"`
	Realtime  jfield `json:"__REALTIME_TIMESTAMP"`
	Hostname  jfield `json:"_HOSTNAME"`
	Ident     jfield `json:"SYSLOG_IDENTIFIER"`
	Comm      jfield `json:"_COMM"`
	Exe       jfield `json:"_EXE"`
	PID       jfield `json:"_PID"`
	SyslogPID jfield `json:"SYSLOG_PID"`
	Message   jfield `json:"MESSAGE"`
}

// jfield is a journal JSON value: a string, an array of byte values (binary
// or non-UTF-8 data), an array of strings (a field set more than once: the
// first is kept) or null.
type jfield []byte

func (f *jfield) UnmarshalJSON(b []byte) error {
	*f = (*f)[:0]
	switch {
	case len(b) == 0 || bytes.Equal(b, []byte("null")):
		return nil
	case b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = append(*f, s...)
		return nil
	case b[0] == '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		if len(raw) == 0 {
			return nil
		}
		if raw[0][0] == '"' || raw[0][0] == '[' {
			return f.UnmarshalJSON(raw[0])
		}
		for _, r := range raw {
			v, err := strconv.ParseUint(string(r), 10, 8)
			if err != nil {
				return fmt.Errorf("byte array: %w", err)
			}
			*f = append(*f, byte(v))
		}
		return nil
	default:
		*f = append(*f, b...) // a number: keep its text
		return nil
	}
}

const maxJournalEntry = 1 << 20

func (j *Journal) read(ctx context.Context, r io.Reader, handle func(Line) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var e journalEntry
	var line []byte
	var big bool
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !big && len(line)+len(chunk) <= maxJournalEntry {
				line = append(line, chunk...)
			} else {
				big = true
			}
			continue
		}
		if len(chunk) > 0 || len(line) > 0 {
			full := chunk
			if len(line) > 0 {
				line = append(line, chunk...)
				full = line
			}
			if big {
				j.c.longSkipped.Add(1)
				j.log.Warn("source: journal entry too long, skipped", "source", j.name, "max_bytes", maxJournalEntry)
			} else if herr := j.entry(full, &e, handle); herr != nil {
				return herr
			}
			line, big = line[:0], false
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

func (j *Journal) entry(b []byte, e *journalEntry, handle func(Line) error) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil
	}
	j.c.bytes.Add(uint64(len(b)))
	e.reset()
	if err := json.Unmarshal(b, e); err != nil || len(e.Cursor) == 0 {
		n := j.c.malformed.Add(1)
		if n <= 10 || n%1000 == 0 {
			if err == nil {
				err = errors.New("no __CURSOR")
			}
			j.log.Warn("source: malformed journal entry skipped", "source", j.name, "err", err, "skipped_total", n)
		}
		return nil
	}
	data := j.format(e)
	cur := string(e.Cursor)
	j.c.lines.Add(1)
	if err := handle(Line{Source: j.name, Data: data, Pos: Position{Cursor: cur}, Received: time.Now()}); err != nil {
		return err
	}
	j.mu.Lock()
	j.lastCur = cur
	j.mu.Unlock()
	return nil
}

func (e *journalEntry) reset() {
	for _, f := range []*jfield{&e.Cursor, &e.Realtime, &e.Hostname, &e.Ident, &e.Comm, &e.Exe, &e.PID, &e.SyslogPID, &e.Message} {
		*f = (*f)[:0]
	}
}

// format builds "Jan _2 15:04:05 host ident[pid]: message" in a buffer
// reused by the (single) reading goroutine.
func (j *Journal) format(e *journalEntry) []byte {
	b := j.out[:0]
	ts := time.Now()
	if us, err := strconv.ParseInt(string(e.Realtime), 10, 64); err == nil {
		ts = time.UnixMicro(us)
	}
	b = ts.Local().AppendFormat(b, time.Stamp)
	b = append(b, ' ')
	host := e.Hostname
	if len(host) == 0 {
		host = jfield("localhost")
	}
	b = append(b, host...)
	b = append(b, ' ')
	// The program name: journald's own fields first. _COMM and _EXE are
	// set by journald from the kernel's view of the sender; SYSLOG_IDENTIFIER
	// is whatever the sender claims (`logger -t sshd` forges it), so it is
	// used only for entries without them (kernel messages, imported logs).
	ident := e.Comm
	if len(ident) == 0 && len(e.Exe) > 0 {
		ident = e.Exe
		if i := bytes.LastIndexByte(ident, '/'); i >= 0 {
			ident = ident[i+1:]
		}
	}
	if len(ident) == 0 {
		ident = e.Ident
	}
	if len(ident) == 0 {
		ident = jfield("unknown")
	}
	b = append(b, ident...)
	pid := e.PID
	if len(pid) == 0 {
		pid = e.SyslogPID
	}
	if len(pid) > 0 {
		b = append(b, '[')
		b = append(b, pid...)
		b = append(b, ']')
	}
	b = append(b, ": "...)
	b = append(b, e.Message...)
	j.out = b
	return b
}

// tailBuffer keeps the last 4 KiB written to it (the command's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
