package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// FileOptions tune a File. The zero value is usable.
type FileOptions struct {
	Logger *slog.Logger
	// Poll is the fallback poll interval (inotify does the fast path); default 250ms.
	Poll time.Duration
	// StartAtEnd starts at the end of an existing file when there is no saved
	// Position (a file that appears later is always read from its start).
	StartAtEnd bool
	// RotatedGlobs are where rotated copies of the file go; default
	// path+".[0-9]*" (logrotate .1, Asterisk .0 .1 … and timestamps) and path+"-*"
	// (dateext). Compressed copies (.gz, .bz2, .xz, .zst) are ignored.
	RotatedGlobs []string
	// CSV makes each Line one CSV record (Asterisk's cdr_csv Master.csv,
	// cel_custom): a '\n' inside a quoted field does not end it, so a
	// newline an attacker put in a dialled number or a caller name cannot
	// split a record. Positions stay at record boundaries; a record longer
	// than MaxLine is skipped to its real end (counted in LongSkipped) and
	// one still open when its file ends is dropped (CutRecords).
	// With StartAtEnd and no saved position the existing file is scanned
	// once to learn whether it ends inside a record.
	CSV bool
	// Backlog, with no saved Position and StartAtEnd, starts an existing
	// file at its first line stamped within Backlog.Window before now
	// instead of at its end (fail2ban reads findtime back at its first
	// start): attacks logged in the minutes before pbxguard started count.
	Backlog Backlog
}

// Backlog is how far back a file without a saved position is read.
type Backlog struct {
	Window time.Duration // 0 = off: start at the end
	// Stamp returns the time of a line (false when it has none: such
	// lines are skipped while looking for the start).
	Stamp func(line []byte) (time.Time, bool)
	// MaxBytes bounds the work: at most this many bytes before the end are
	// searched and read back (default 64 MiB); a window that starts
	// earlier is cut there (logged).
	MaxBytes int64
	Now      func() time.Time // default time.Now
}

func (b Backlog) on() bool { return b.Window > 0 && b.Stamp != nil }

// File follows one log file across rename rotation, copytruncate and
// truncation.
//
// How lines can still be lost (the gaps):
//   - copytruncate done by another program (logrotate) is not atomic with
//     the writer: lines written between the copy and the truncate are in
//     neither file. Counted in Stats.Gaps only when no copy matches.
//   - a truncation with no copy (": > file") loses what was written after our
//     offset and before the truncation (warned, Stats.Gaps).
//   - after a rename, a writer that still writes to the old file after the
//     new file has data (two writers, or one that has not reopened yet while
//     another writes the new file): we drain the old file to its end once
//     the new one is non-empty, and switch.
//   - several rotations while the daemon was down or while the follower was
//     behind: the files rotated in between are found by modification time
//     (newer than the last write to the file we finished) and read whole,
//     oldest first; a file of the rotated set that was written to after
//     that (another log sharing the glob) would be read too, and a
//     rotation racing with that search can still be missed.
//   - a file truncated and rewritten past our offset in the few microseconds
//     between our check and our read.
type File struct {
	path  string
	dir   string
	base  string
	start Position
	opts  FileOptions
	log   *slog.Logger
	globs []string
	c     counters
	sp    splitter

	// Run-goroutine state.
	f       *os.File
	ino     uint64
	readOff int64 // bytes of f consumed (pending bytes included)
	tail    [64]byte
	tailN   int
	head    [64]byte // the first bytes of f when opened, before we read any
	headN   int
	wake    chan struct{}
	watcher *fsnotify.Watcher
	watched bool

	health healthBox
	onPos  func(Position)
}

// NewFile returns a follower of path starting at start (the zero Position =
// none saved: from the beginning, or the end with StartAtEnd).
func NewFile(path string, start Position, opts FileOptions) *File {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	globs := opts.RotatedGlobs
	if len(globs) == 0 {
		globs = []string{path + ".[0-9]*", path + "-*"}
	}
	f := &File{
		path: path, dir: filepath.Dir(path), base: filepath.Base(path),
		start: start, opts: opts, log: opts.Logger, globs: globs,
		wake: make(chan struct{}, 1),
	}
	f.sp = newSplitter(path, opts.Logger, &f.c)
	f.sp.csv = opts.CSV
	return f
}

// Name is the followed path.
func (f *File) Name() string { return f.path }

// Stats returns the counters.
func (f *File) Stats() Stats { return f.c.stats() }

// Health tells whether the follower reads its file, waits for it, or
// cannot read what is at its path; safe to call while Run runs.
func (f *File) Health() Health { return f.health.get() }

// OnPosition sets fn to be told the position the follower starts at when
// no position was saved (the end of the file, or the start of the read
// back window), before any line is handed on: store it at once, so that
// lines written while pbxguard is down are read after its restart. Set it
// before Run.
func (f *File) OnPosition(fn func(Position)) { f.onPos = fn }

// started reports the starting position (see OnPosition).
func (f *File) started(p Position) {
	f.start = p // a later Run resumes there too
	if f.onPos != nil {
		f.onPos(p)
	}
}

// refuse records and logs (once per cause) why the path cannot be followed now.
func (f *File) refuse(err error) {
	if errors.Is(err, fs.ErrNotExist) {
		if f.health.set(StateWaiting, errors.New("waiting for the file to appear")) {
			f.log.Info("source: waiting for file to appear", "path", f.path)
		}
		return
	}
	if f.health.set(StateFailing, err) {
		f.log.Error("source: cannot follow this path; retrying until it holds a regular file", "path", f.path, "err", err)
	}
}

// reading records that the file is open and read.
func (f *File) reading() {
	if old := f.health.get(); f.health.set(StateOK, nil) && old.State == StateFailing {
		f.log.Info("source: the path holds a regular file again; following it", "path", f.path)
	}
}

// Run follows the file until ctx is done. Run may be called again after it
// returned (the daemon restarting a source): it resumes after the last line
// handed on.
func (f *File) Run(ctx context.Context, handle func(Line) error) error {
	inner := handle
	handle = func(l Line) error {
		if err := inner(l); err != nil {
			return err
		}
		f.start = l.Pos // where a later Run resumes
		return nil
	}
	defer func() {
		f.sp.drop()
		f.readOff, f.tailN, f.headN, f.watched, f.watcher = 0, 0, 0, false, nil
	}()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.log.Warn("source: inotify unavailable, polling only", "path", f.path, "poll", f.opts.Poll, "err", err)
	} else {
		f.watcher = w
		defer w.Close()
		f.watch()
		go f.forward(w)
	}
	defer func() {
		if f.f != nil {
			f.f.Close()
			f.f = nil
		}
	}()
	if err := f.resume(ctx, handle); err != nil {
		return f.fatal(ctx, err)
	}
	tick := time.NewTicker(f.opts.Poll)
	defer tick.Stop()
	for {
		if err := f.step(ctx, handle); err != nil {
			return f.fatal(ctx, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-tick.C:
			if !f.watched {
				f.watch()
			}
		}
	}
}

func (f *File) fatal(ctx context.Context, err error) error {
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return fmt.Errorf("source %s: %w", f.path, err)
}

// watch puts an inotify watch on the directory (it may not exist yet).
func (f *File) watch() {
	if f.watcher == nil {
		return
	}
	if err := f.watcher.Add(f.dir); err != nil {
		if !f.watched {
			f.log.Debug("source: cannot watch directory yet, polling", "dir", f.dir, "err", err)
		}
		return
	}
	f.watched = true
}

func (f *File) forward(w *fsnotify.Watcher) {
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if filepath.Base(ev.Name) != f.base {
				continue
			}
			select {
			case f.wake <- struct{}{}:
			default:
			}
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// Overflow or similar: the poll covers us; wake up to re-check.
			f.log.Warn("source: inotify error, re-checking", "path", f.path, "err", err)
			select {
			case f.wake <- struct{}{}:
			default:
			}
		}
	}
}

// resume opens the file at the saved position (or the start/end).
func (f *File) resume(ctx context.Context, handle func(Line) error) error {
	st := f.start
	fh, err := openRegular(f.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrNotRegular) {
			return err
		}
		f.refuse(err)
		if st.Inode != 0 {
			// Renamed away while we were down and not recreated yet.
			return f.readRestOfCopy(ctx, st, 0, handle)
		}
		return nil
	}
	ino, size, err := fileID(fh)
	if err != nil {
		fh.Close()
		return err
	}
	f.adopt(fh, ino)
	f.reading()
	switch {
	case st.Inode == 0:
		startOff := int64(0)
		if f.opts.StartAtEnd && size > 0 {
			off, back := size, false
			if f.opts.Backlog.on() {
				off, back = f.backlogStart(fh, size)
			}
			if err := f.seek(off); err != nil {
				return err
			}
			startOff = off
			if f.sp.csv {
				// Only a scan from the start tells whether a '\n' at the
				// end closes a record or sits inside a quoted field.
				var st csvState
				buf := make([]byte, 64<<10)
				boundary := int64(0) // where the last complete record ends
				for off := int64(0); off < size; {
					n, err := fh.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
					for b, used := buf[:n], int64(0); len(b) > 0; {
						j := st.scan(b)
						if j < 0 {
							break
						}
						used += int64(j + 1)
						boundary = off + used
						b = b[j+1:]
					}
					off += int64(n)
					if err != nil && n == 0 {
						break
					}
				}
				f.sp.st, f.sp.skipping = st, st.open() // inside a record: start at the next one
				if st.open() {
					startOff = boundary // a restart re-skips the open record from its start
				}
			} else {
				var last [1]byte
				if back {
					f.headN = 0
				} else if _, err := fh.ReadAt(last[:], size-1); err == nil && last[0] != '\n' {
					f.sp.skipping = true // we are inside a line: start at the next one
					startOff = lineStartBefore(fh, size)
				}
			}
		}
		f.log.Info("source: following", "path", f.path, "offset", f.readOff)
		f.started(f.posAt(fh, ino, startOff))
		return nil
	case st.Inode == ino && size >= st.Offset && checkAt(fh, st.Offset, st.Check):
		f.log.Info("source: resuming", "path", f.path, "offset", st.Offset)
		return f.seek(st.Offset)
	default:
		// Rotated (or truncated) while we were down: finish the old file
		// from its copy, then read the current one from its start.
		if err := f.readRestOfCopy(ctx, st, ino, handle); err != nil {
			return err
		}
		f.log.Info("source: following", "path", f.path, "offset", 0)
		return nil
	}
}

// readRestOfCopy finds the rotated copy holding the file of st (by inode, or
// by Check) and reads it from st.Offset to its end. curIno is the inode now
// at the path (never taken as the copy).
func (f *File) readRestOfCopy(ctx context.Context, st Position, curIno uint64, handle func(Line) error) error {
	cands := f.candidates(curIno)
	var pick *os.File
	var pickIno uint64
	for _, name := range cands {
		fh, err := openRegular(name)
		if err != nil {
			continue
		}
		ino, size, err := fileID(fh)
		if err == nil && size >= st.Offset && (ino == st.Inode || (st.Check != 0 && checkAt(fh, st.Offset, st.Check))) {
			if pick == nil || ino == st.Inode {
				if pick != nil {
					pick.Close()
				}
				pick, pickIno = fh, ino
				if ino == st.Inode {
					break
				}
				continue
			}
		}
		fh.Close()
	}
	if pick == nil {
		f.c.gaps.Add(1)
		f.log.Warn("source: the file was rotated or truncated while we were down and no rotated copy holds the rest: lines after the saved offset may be lost",
			"path", f.path, "saved_inode", st.Inode, "saved_offset", st.Offset, "looked_in", f.globs)
		return nil
	}
	defer pick.Close()
	f.c.copiesRead.Add(1)
	f.log.Info("source: reading the rest of the rotated copy", "path", f.path, "copy", pick.Name(), "offset", st.Offset)
	if _, err := pick.Seek(st.Offset, io.SeekStart); err != nil {
		return err
	}
	off := st.Offset
	if err := f.drain(ctx, pick, pickIno, &off, handle); err != nil {
		return err
	}
	if err := f.sp.flush(Position{Path: f.path, Inode: pickIno, Size: off, Offset: off}, time.Now(), handle); err != nil {
		return err
	}
	// Further rotations while we were down.
	var mod time.Time
	if fi, err := pick.Stat(); err == nil {
		mod = fi.ModTime()
	}
	return f.catchUp(ctx, mod, []uint64{pickIno, curIno}, handle)
}

// candidates lists rotated copies, newest first, skipping compressed ones
// and the file now at the path.
func (f *File) candidates(curIno uint64) []string {
	type cand struct {
		name string
		mod  time.Time
	}
	var cs []cand
	seen := map[string]bool{}
	for _, g := range f.globs {
		names, _ := filepath.Glob(g)
		for _, n := range names {
			if seen[n] || n == f.path || compressed(n) {
				continue
			}
			seen[n] = true
			fi, err := os.Stat(n)
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && curIno != 0 && st.Ino == curIno {
				continue
			}
			cs = append(cs, cand{n, fi.ModTime()})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int { return b.mod.Compare(a.mod) })
	out := make([]string, 0, min(len(cs), 16))
	for i := 0; i < len(cs) && i < 16; i++ {
		out = append(out, cs[i].name)
	}
	return out
}

func compressed(name string) bool {
	for _, s := range []string{".gz", ".bz2", ".xz", ".zst", ".lz4", ".Z"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

func (f *File) seek(off int64) error {
	if _, err := f.f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	f.readOff = off
	f.tailN, f.headN = 0, 0
	if off > 0 {
		n := min(off, int64(len(f.tail)))
		if m, err := f.f.ReadAt(f.tail[:n], off-n); err == nil || m == int(n) {
			f.tailN = m
		}
	}
	return nil
}

// adopt makes fh (at offset 0) the followed file and remembers its first
// bytes: should it be copytruncated before our first read, they find the
// copy that holds its beginning.
func (f *File) adopt(fh *os.File, ino uint64) {
	f.f, f.ino, f.readOff, f.tailN = fh, ino, 0, 0
	n, _ := fh.ReadAt(f.head[:], 0)
	f.headN = n
}

// headIntact reports whether the file still starts with the bytes it had
// when we opened it.
func (f *File) headIntact() bool {
	var cur [64]byte
	n, _ := f.f.ReadAt(cur[:f.headN], 0)
	return n == f.headN && bytes.Equal(cur[:n], f.head[:f.headN])
}

// recoverHead reads the copy of the file's beginning (made by a
// copytruncate between our open and our first read) from its start.
func (f *File) recoverHead(ctx context.Context, handle func(Line) error) error {
	f.c.truncations.Add(1)
	var cur [64]byte
	for _, name := range f.candidates(f.ino) {
		fh, err := openRegular(name)
		if err != nil {
			continue
		}
		n, _ := fh.ReadAt(cur[:f.headN], 0)
		ino, _, ierr := fileID(fh)
		if n != f.headN || !bytes.Equal(cur[:n], f.head[:f.headN]) || ierr != nil {
			fh.Close()
			continue
		}
		f.c.copiesRead.Add(1)
		f.log.Info("source: file truncated before we read it, reading its copy", "path", f.path, "copy", name)
		var off int64
		err = f.drain(ctx, fh, ino, &off, handle)
		fh.Close()
		if err != nil {
			return err
		}
		f.headN = 0
		_, err = f.f.Seek(0, io.SeekStart)
		return err
	}
	f.c.gaps.Add(1)
	f.log.Warn("source: file truncated before we read it and no rotated copy holds its beginning: those lines are lost", "path", f.path, "looked_in", f.globs)
	f.headN = 0
	_, err := f.f.Seek(0, io.SeekStart)
	return err
}

// openPath opens the file at its path and follows it from its start.
// opened is false when it is not there (err nil: wait for it) or on error.
func (f *File) openPath() (opened bool, err error) {
	fh, err := openRegular(f.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNotRegular) {
			f.refuse(err)
			return false, nil
		}
		f.refuse(err)
		return false, err
	}
	ino, _, err := fileID(fh)
	if err != nil {
		fh.Close()
		return false, err
	}
	f.adopt(fh, ino)
	f.reading()
	f.log.Info("source: following", "path", f.path, "inode", ino)
	return true, nil
}

// step does everything one wake-up needs: open, truncation, read, rotation.
func (f *File) step(ctx context.Context, handle func(Line) error) error {
	if f.f == nil {
		if opened, err := f.openPath(); !opened {
			return err
		}
	}
	if err := f.checkTruncated(ctx, handle); err != nil {
		return err
	}
	if err := f.drain(ctx, f.f, f.ino, &f.readOff, handle); err != nil {
		return err
	}
	if err := f.checkTruncated(ctx, handle); err != nil {
		return err
	}
	fi, err := os.Stat(f.path)
	if err != nil {
		return nil // renamed or removed and not recreated yet: keep the old fd
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Ino == f.ino {
		return nil
	}
	if fi.Size() == 0 {
		// A new, still empty file: the writer may not have reopened yet
		// (logrotate's "create" makes the file before signalling it) and
		// may still append to the old one. Keep following the old file
		// until the new one has data: nothing is lost by waiting.
		return nil
	}
	// Rename rotation: finish the old file, then switch.
	if err := f.drain(ctx, f.f, f.ino, &f.readOff, handle); err != nil {
		return err
	}
	if err := f.sp.flush(Position{Path: f.path, Inode: f.ino, Size: f.readOff, Offset: f.readOff}, time.Now(), handle); err != nil {
		return err
	}
	var oldMod time.Time
	if ofi, err := f.f.Stat(); err == nil {
		oldMod = ofi.ModTime()
	}
	oldIno := f.ino
	f.c.rotations.Add(1)
	f.log.Info("source: file rotated, switching to the new one", "path", f.path, "old_inode", f.ino, "new_inode", st.Ino)
	f.f.Close()
	f.f = nil
	// Hold the new file first, then read what was rotated between the old
	// one and it (when we were more than one rotation behind), then the new
	// file from its start.
	if opened, err := f.openPath(); !opened {
		return err
	}
	if err := f.catchUp(ctx, oldMod, []uint64{oldIno, f.ino}, handle); err != nil {
		return err
	}
	return f.step(ctx, handle)
}

// catchUp reads, oldest first and each from its start, the rotated files
// modified after `after` other than the inodes in skip: the files that
// were rotated away while we were still reading an older one (or were
// down). They hold only lines we have not seen: a copy made of a file we
// were reading is older than that file's last write.
func (f *File) catchUp(ctx context.Context, after time.Time, skip []uint64, handle func(Line) error) error {
	if after.IsZero() {
		return nil
	}
	type cand struct {
		name string
		mod  time.Time
		ino  uint64
	}
	var cs []cand
	seen := map[string]bool{}
	for _, g := range f.globs {
		names, _ := filepath.Glob(g)
		for _, n := range names {
			if seen[n] || n == f.path || compressed(n) {
				continue
			}
			seen[n] = true
			fi, err := os.Stat(n)
			if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().After(after) {
				continue
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok || slices.Contains(skip, st.Ino) {
				continue
			}
			cs = append(cs, cand{n, fi.ModTime(), st.Ino})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int { return a.mod.Compare(b.mod) })
	for _, c := range cs {
		fh, err := openRegular(c.name)
		if err != nil {
			continue
		}
		ino, _, err := fileID(fh)
		if err != nil || ino != c.ino {
			fh.Close()
			continue
		}
		f.c.copiesRead.Add(1)
		f.log.Warn("source: reading a file rotated while we were behind", "path", f.path, "file", c.name)
		var off int64
		err = f.drain(ctx, fh, ino, &off, handle)
		if err == nil {
			err = f.sp.flush(Position{Path: f.path, Inode: ino, Size: off, Offset: off}, time.Now(), handle)
		}
		fh.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// checkTruncated notices a truncation (size below our offset, or the bytes
// before our offset no longer what we read) and recovers.
func (f *File) checkTruncated(ctx context.Context, handle func(Line) error) error {
	if f.readOff == 0 {
		return nil
	}
	fi, err := f.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= f.readOff && f.tailIntact() {
		return nil
	}
	return f.recoverTruncation(ctx, fi.Size(), handle)
}

// tailIntact reports whether the bytes before our offset are still the ones
// we read last.
func (f *File) tailIntact() bool {
	if f.tailN == 0 {
		return true
	}
	var cur [64]byte
	n, _ := f.f.ReadAt(cur[:f.tailN], f.readOff-int64(f.tailN))
	return n == f.tailN && bytes.Equal(cur[:n], f.tail[:f.tailN])
}

// recoverTruncation reads the lines between our offset and the truncation
// from a rotated copy when one matches, then restarts the file at 0.
func (f *File) recoverTruncation(ctx context.Context, size int64, handle func(Line) error) error {
	f.c.truncations.Add(1)
	if cp, ino := f.findCopyByTail(); cp != nil {
		f.c.copiesRead.Add(1)
		f.log.Info("source: file truncated, reading the rest from its copy", "path", f.path, "copy", cp.Name(), "offset", f.readOff)
		off := f.readOff
		_, err := cp.Seek(off, io.SeekStart)
		if err == nil {
			err = f.drain(ctx, cp, ino, &off, handle)
		}
		cp.Close()
		if err != nil {
			return err
		}
		// A pending partial line continues in the truncated file (the writer
		// goes on where the copy ends).
	} else {
		f.c.gaps.Add(1)
		f.log.Warn("source: file truncated and no rotated copy holds what was written after our offset: those lines are lost",
			"path", f.path, "offset", f.readOff, "size_now", size, "looked_in", f.globs)
		f.sp.drop()
	}
	if _, err := f.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	f.readOff, f.tailN, f.headN = 0, 0, 0
	return nil
}

// findCopyByTail returns an open rotated copy whose bytes just before our
// offset are the ones we read last.
func (f *File) findCopyByTail() (*os.File, uint64) {
	if f.tailN == 0 {
		return nil, 0
	}
	var cur [64]byte
	for _, name := range f.candidates(f.ino) {
		fh, err := openRegular(name)
		if err != nil {
			continue
		}
		n, _ := fh.ReadAt(cur[:f.tailN], f.readOff-int64(f.tailN))
		if n == f.tailN && bytes.Equal(cur[:n], f.tail[:f.tailN]) {
			ino, _, err := fileID(fh)
			if err == nil {
				return fh, ino
			}
		}
		fh.Close()
	}
	return nil, 0
}

// drain reads r from *off to EOF, handing on lines.
func (f *File) drain(ctx context.Context, r *os.File, ino uint64, off *int64, handle func(Line) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		space := f.sp.space()
		n, err := r.Read(space)
		if n > 0 && r == f.f && f.readOff == 0 && f.headN > 0 {
			if !f.headIntact() {
				if rerr := f.recoverHead(ctx, handle); rerr != nil {
					return rerr
				}
				continue
			}
			f.headN = 0 // from now on the tail guards us
		}
		if n > 0 && r == f.f && f.readOff > 0 && !f.tailIntact() {
			// Truncated (and perhaps rewritten past our offset) before or
			// while we read: the chunk may not be the continuation. What
			// followed our offset is in the copy, if there is one.
			size := int64(0)
			if fi, serr := f.f.Stat(); serr == nil {
				size = fi.Size()
			}
			if rerr := f.recoverTruncation(ctx, size, handle); rerr != nil {
				return rerr
			}
			continue
		}
		if n > 0 {
			f.keepTail(space[:n], r == f.f)
			*off += int64(n)
			pos := Position{Path: f.path, Inode: ino, Size: *off}
			if herr := f.sp.feed(n, *off, pos, time.Now(), handle); herr != nil {
				return herr
			}
		}
		if err == io.EOF || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// keepTail remembers the last bytes read from the followed file.
func (f *File) keepTail(b []byte, current bool) {
	if !current {
		return
	}
	if len(b) >= len(f.tail) {
		f.tailN = copy(f.tail[:], b[len(b)-len(f.tail):])
		return
	}
	keep := min(f.tailN, len(f.tail)-len(b))
	copy(f.tail[:], f.tail[f.tailN-keep:f.tailN])
	f.tailN = keep + copy(f.tail[keep:], b)
}

// checkAt reports whether the bytes before off match check (0 = unknown: true).
func checkAt(r io.ReaderAt, off int64, check uint64) bool {
	if check == 0 {
		return true
	}
	n := checkSpan(check)
	if n == 0 || n > off || n > checkLen {
		return false
	}
	var b [checkLen]byte
	m, _ := r.ReadAt(b[:n], off-n)
	return int64(m) == n && fingerprint(b[:n]) == check
}

func fileID(fh *os.File) (ino uint64, size int64, err error) {
	fi, err := fh.Stat()
	if err != nil {
		return 0, 0, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return ino, fi.Size(), nil
}

// posAt is the Position of offset off (a line start) in fh: Check covers
// the bytes of the line before it, as the splitter computes it.
func (f *File) posAt(fh *os.File, ino uint64, off int64) Position {
	p := Position{Path: f.path, Inode: ino, Size: off, Offset: off}
	if off <= 0 {
		return p
	}
	var b [checkLen + 1]byte
	n := min(off, int64(len(b)))
	if m, _ := fh.ReadAt(b[:n], off-n); int64(m) != n {
		return p
	}
	seg := b[:n]
	if i := bytes.LastIndexByte(seg[:len(seg)-1], '\n'); i >= 0 {
		seg = seg[i+1:]
	}
	p.Check = fingerprint(seg[max(0, len(seg)-checkLen):])
	return p
}

// lineStartBefore is the offset just after the last '\n' before size
// (looked for in the last MaxLine bytes), or size when there is none.
func lineStartBefore(fh *os.File, size int64) int64 {
	from := max(0, size-MaxLine)
	buf := make([]byte, size-from)
	n, _ := fh.ReadAt(buf, from)
	if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
		return from + int64(i) + 1
	}
	if from == 0 {
		return 0
	}
	return size
}

// defaultBacklogBytes bounds the read-back of a file without a position.
const defaultBacklogBytes = 64 << 20

// backlogStart finds the first line stamped within the backlog window, in
// at most MaxBytes before size, reading forward line by line (one pass,
// bounded). It returns size (back=false) when no line is that recent.
func (f *File) backlogStart(fh *os.File, size int64) (off int64, back bool) {
	bl := f.opts.Backlog
	maxBytes := bl.MaxBytes
	if maxBytes <= 0 {
		maxBytes = defaultBacklogBytes
	}
	now := time.Now
	if bl.Now != nil {
		now = bl.Now
	}
	since := now().Add(-bl.Window)
	from := max(0, size-maxBytes)
	r := io.NewSectionReader(fh, from, size-from)
	buf := make([]byte, 256<<10)
	pos := from // stream offset of buf[0]
	n := 0
	first := from > 0 // the first line may be cut: skip it
	stamped := false  // a stamped line older than the window was seen
	for {
		m, err := r.Read(buf[n:])
		n += m
		data := buf[:n]
		start := 0
		for {
			j := bytes.IndexByte(data[start:], '\n')
			if j < 0 {
				break
			}
			line := data[start : start+j]
			if first {
				first = false
			} else if t, ok := bl.Stamp(line); ok && !t.Before(since) {
				lineOff := pos + int64(start)
				if from > 0 && !stamped {
					f.log.Warn("source: no saved position; reading back is limited: lines of the window before this offset are skipped",
						"path", f.path, "offset", lineOff, "max_bytes", maxBytes, "window", bl.Window)
				}
				f.log.Info("source: no saved position; reading back the lines of the last window", "path", f.path,
					"window", bl.Window, "from_offset", lineOff, "bytes", size-lineOff)
				return lineOff, true
			} else if ok {
				stamped = true
			}
			start += j + 1
		}
		// Keep the incomplete tail; a line longer than the buffer is dropped.
		if start == 0 && n == len(buf) {
			pos += int64(n)
			n = 0
			first = true
		} else {
			pos += int64(start)
			n = copy(buf, data[start:])
		}
		if err != nil {
			return size, false
		}
	}
}
