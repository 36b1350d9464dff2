package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"
)

// Health states of a source.
const (
	StateOK      = "ok"      // reading
	StateWaiting = "waiting" // the file is not there yet
	StateFailing = "failing" // something at the path cannot be read (a FIFO, a directory, no permission)
)

// Health is what a source is doing now; safe to read while Run runs.
type Health struct {
	State string    `json:"state"`
	Since time.Time `json:"since"`
	Error string    `json:"error,omitempty"`
}

type healthBox struct {
	mu sync.Mutex
	h  Health
}

// set records a state; Since changes only when the state or error does.
// It reports whether anything changed (so callers log once).
func (b *healthBox) set(state string, err error) bool {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h.State == state && b.h.Error == msg {
		return false
	}
	b.h = Health{State: state, Since: time.Now(), Error: msg}
	return true
}

func (b *healthBox) get() Health {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.h
}

// ErrNotRegular is returned (wrapped in a *NotRegularError) for a path that
// holds a FIFO, a device, a socket or a directory: opening a FIFO for
// reading blocks until a writer comes, so such paths are never opened.
var ErrNotRegular = errors.New("not a regular file")

// NotRegularError names the path and what is there.
type NotRegularError struct {
	Path string
	Mode fs.FileMode
}

func (e *NotRegularError) Error() string {
	return fmt.Sprintf("%s is a %s, not a regular file: pbxguard reads log files only (point the jail at the file the logger writes)", e.Path, fileKind(e.Mode))
}

func (e *NotRegularError) Is(target error) bool { return target == ErrNotRegular }

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m.IsDir():
		return "directory"
	default:
		return "special file (" + m.Type().String() + ")"
	}
}

// openRegular opens path for reading without ever blocking: what is at the
// path is checked before the open (a FIFO, device, socket or directory is
// refused with a *NotRegularError) and, against a swap between the check
// and the open, the open is non-blocking and the opened file checked again.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	fh, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	fi, err = fh.Stat()
	if err != nil {
		fh.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		fh.Close()
		return nil, &NotRegularError{Path: path, Mode: fi.Mode()}
	}
	return fh, nil
}
