// Package instance is the single-instance lock of `pbxguard run`: an
// flock(2) on a file in the state directory, taken before the daemon opens
// its store or touches the kernel. A second daemon on the same state
// directory learns the PID of the first and stops without touching
// anything. The kernel drops the lock when the holder dies, however it
// dies: no stale lock to clean up.
package instance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// FileName is the lock file in the state directory.
const FileName = "pbxguard.lock"

// Lock is a held single-instance lock.
type Lock struct {
	Path string
	f    *os.File
}

// HeldError says that another process holds the lock.
type HeldError struct {
	Path string
	PID  int // 0 when the holder's PID could not be read
}

func (e *HeldError) Error() string {
	who := "another pbxguard"
	if e.PID > 0 {
		who = fmt.Sprintf("another pbxguard (PID %d)", e.PID)
	}
	return fmt.Sprintf("%s is already running on this state directory: it holds %s. "+
		"Nothing was touched; stop it first (systemctl stop pbxguard), or use another state_dir", who, e.Path)
}

// Acquire takes the lock in dir (created, mode 0700, when absent) without
// waiting: a lock held elsewhere is a *HeldError naming the holder's PID.
// The file keeps the PID of the holder.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &HeldError{Path: path, PID: readPID(f)}
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &Lock{Path: path, f: f}, nil
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil {
		return 0
	}
	return pid
}

// Release drops the lock (the file stays, emptied).
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.f.Truncate(0)
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}
