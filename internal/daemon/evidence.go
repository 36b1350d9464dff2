package daemon

// Ban evidence: each ban a jail decides keeps the events that decided it
// and the raw lines they came from (file and line number, or "AMI event").
//
// Design. The hot path (a line → detector → jail) must not allocate, and
// the kernel path must not wait for the disk. So:
//
//   - Per jail, an evidenceRing (guarded by the jail's lock, which the
//     line is judged under anyway) keeps the last ringRecords events of
//     addresses that had at least one failure: fixed records in a slice
//     made once, the line bytes (cut at store.MaxEvidenceLine) copied
//     into a fixed circular byte arena, and per address the sequence
//     number of its latest record, each record linking to the previous
//     one of the same address. Nothing is allocated per line once the
//     ring exists (TestEvidenceZeroAllocs, BenchmarkDaemonPerLine).
//   - Lines are copied, not re-read from the file at ban time: a journal,
//     stdin or AMI has nothing to re-read, a rotation or copytruncate
//     invalidates offsets, and a read on the ban path waits for the disk.
//     The price is a bounded memory, made on a jail's first failure: 8192
//     records of 168 bytes, the 1 MiB arena and the address map, 3.0 MB
//     per jail measured (heap after init), and, under a flood from many
//     addresses, older evidence overwritten (said so in the evidence).
//   - After the kernel took a batch, apply calls keepEvidence: under the
//     jail's lock it copies out the address's chain (at most
//     store.MaxEvidenceEvents), then a writer goroutine (started on
//     demand) computes line numbers (counting newlines up to the offset,
//     with a per-file cache, if the file is still the same inode) and
//     writes the rows with store.AddEvidence.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/jail"
	"github.com/pbxguard/pbxguard/internal/store"
)

const (
	ringRecords = 8192    // events kept per jail
	ringArena   = 1 << 20 // bytes of raw lines kept per jail
)

// record flags
const (
	recStructured = 1 << iota
	recCounted
	recTwin      // a NOTICE twin of a structured event: not counted
	recBanned    // the address was already banned: ignored
	recChallenge // counts only if unanswered
	recAMI       // injected (AMI security event): no line
)

type evRecord struct {
	seq, prev uint64 // 0 = empty / none
	addr      netip.Addr
	at        int64 // unix ns
	kind      event.Kind
	service   event.Service
	flags     uint8
	account   string // detectors intern these: holding them allocates nothing
	detail    string
	detector  string
	source    string // the source's name (path, "journal")
	path      string
	inode     uint64
	offset    int64  // after the line (source.Position.Offset)
	start     uint64 // arena position of the copied bytes
	n, full   int32  // bytes copied, bytes the line had
}

// evidenceRing is one jail's recent events. Not safe for concurrent use:
// the jail's lock guards it.
type evidenceRing struct {
	recs   []evRecord
	seq    uint64
	latest map[netip.Addr]uint64
	arena  []byte
	head   uint64
}

func (r *evidenceRing) init() {
	r.recs = make([]evRecord, ringRecords)
	r.latest = make(map[netip.Addr]uint64, ringRecords)
	r.arena = make([]byte, ringArena)
}

// wants reports whether an event of this address is kept: failures and
// challenges always (a ban may come from unanswered challenges), other
// kinds only for an address already in the ring.
func (r *evidenceRing) wants(ev *event.Event) bool {
	if ev.Kind.IsFailure() || ev.Kind == event.ChallengeSent {
		return true
	}
	if r.latest == nil {
		return false
	}
	_, ok := r.latest[ev.Addr.Unmap().WithZone("")]
	return ok
}

func (r *evidenceRing) add(ev *event.Event, flags uint8, src string, data []byte, pos *store.Position) {
	if r.recs == nil {
		r.init()
	}
	r.seq++
	slot := &r.recs[r.seq%ringRecords]
	if slot.seq != 0 && r.latest[slot.addr] == slot.seq {
		delete(r.latest, slot.addr)
	}
	addr := ev.Addr.Unmap().WithZone("")
	n := min(len(data), store.MaxEvidenceLine)
	*slot = evRecord{seq: r.seq, prev: r.latest[addr], addr: addr, at: ev.Time.UnixNano(), kind: ev.Kind,
		service: ev.Service, flags: flags, account: ev.Account, detail: ev.Detail, detector: ev.Detector,
		source: src, start: r.head, n: int32(n), full: int32(len(data))}
	if pos != nil {
		slot.path, slot.inode, slot.offset = pos.Path, pos.Inode, pos.Offset
	}
	r.latest[addr] = r.seq
	if n > 0 {
		at := int(r.head % ringArena)
		c := copy(r.arena[at:], data[:n])
		copy(r.arena, data[c:n])
		r.head += uint64(n)
	}
}

// pendingEvidence is a ban's evidence copied out of the ring, before line
// numbers are known.
type pendingEvidence struct {
	ev   store.Evidence
	recs []evRecord
	raw  [][]byte
}

// take copies addr's chain (newest last) and forgets it, so that a later
// ban of the address carries only its own evidence.
func (r *evidenceRing) take(addr netip.Addr, max int) (recs []evRecord, raw [][]byte, dropped int, overwritten bool) {
	if r.latest == nil {
		return nil, nil, 0, false
	}
	addr = addr.Unmap().WithZone("")
	s, ok := r.latest[addr]
	if !ok {
		return nil, nil, 0, false
	}
	delete(r.latest, addr)
	for s != 0 {
		rec := &r.recs[s%ringRecords]
		if rec.seq != s || rec.addr != addr {
			overwritten = true
			break
		}
		s = rec.prev
		if rec.flags&recBanned != 0 {
			continue // after the decision, while the ban was being applied
		}
		if len(recs) == max {
			dropped++
			continue
		}
		recs = append(recs, *rec)
		var b []byte
		if rec.n > 0 && r.head-rec.start <= ringArena {
			b = make([]byte, rec.n)
			at := int(rec.start % ringArena)
			c := copy(b, r.arena[at:])
			copy(b[c:], r.arena)
		}
		raw = append(raw, b)
	}
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
		raw[i], raw[j] = raw[j], raw[i]
	}
	return recs, raw, dropped, overwritten
}

// evidenceJudge is what a Judge may tell about its counting (jailJudge does).
type evidenceJudge interface {
	evidenceCounters() (twins, banned uint64)
	evidenceRule() jail.Config
}

func (a jailJudge) evidenceCounters() (uint64, uint64) {
	s := a.j.Stats()
	return s.TwinsSkipped, s.IgnoredWhileBanned
}

func (a jailJudge) evidenceRule() jail.Config { return a.j.Config() }

// observe judges ev under the jail's lock and keeps it as evidence. src,
// data and pos describe the line (data nil and pos nil for an AMI event).
func (d *Daemon) observe(js *jailState, ev *event.Event, src string, data []byte, pos *store.Position) (Decision, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	r := &js.evidence
	if !r.wants(ev) {
		return js.spec.Judge.Observe(ev)
	}
	ej, counts := js.spec.Judge.(evidenceJudge)
	var twins, banned uint64
	if counts {
		twins, banned = ej.evidenceCounters()
	}
	dec, ok := js.spec.Judge.Observe(ev)
	var flags uint8
	if ev.Structured {
		flags |= recStructured
	}
	if pos == nil {
		flags |= recAMI
	}
	switch {
	case ev.Kind == event.ChallengeSent:
		flags |= recChallenge
	case !counts:
		flags |= recCounted
	default:
		t2, b2 := ej.evidenceCounters()
		switch {
		case t2 != twins:
			flags |= recTwin
		case b2 != banned:
			flags |= recBanned
		case ev.Kind.IsFailure():
			flags |= recCounted
		}
	}
	r.add(ev, flags, src, data, pos)
	return dec, ok
}

// evidenceState is the daemon's evidence writer: started on demand, it
// exits when it has nothing left to write.
type evidenceState struct {
	mu      sync.Mutex
	queue   []pendingEvidence
	running bool
	wg      sync.WaitGroup
	lines   lineCache

	pruning   bool
	lastPrune time.Time
}

// keepEvidence copies the evidence of bans the kernel took (rows) out of
// their jails' rings and hands it to the writer.
func (d *Daemon) keepEvidence(rows []store.Ban) {
	var out []pendingEvidence
	for _, row := range rows {
		js, ok := d.byName[row.Jail]
		if !ok {
			continue
		}
		pe := pendingEvidence{ev: store.Evidence{Prefix: row.Prefix, Addr: row.Addr, Jail: row.Jail,
			At: row.Since, Until: row.Until, Reason: row.Reason}}
		dec := &pe.ev.Decision
		js.mu.Lock()
		recs, raw, dropped, overwritten := js.evidence.take(row.Addr, store.MaxEvidenceEvents)
		if ej, ok := js.spec.Judge.(evidenceJudge); ok {
			c := ej.evidenceRule()
			dec.MaxRetry, dec.FindTime, dec.BanTime = c.MaxRetry, c.FindTime.String(), c.BanTime.String()
			dec.MaxBanTime, dec.Increment = c.MaxBanTime.String(), c.Increment
		}
		js.mu.Unlock()
		pe.recs, pe.raw = recs, raw
		dec.Duration = row.Until.Sub(row.Since).Round(time.Second).String()
		dec.Count = row.Count
		dec.Dropped = dropped
		if overwritten {
			dec.Note = fmt.Sprintf("older events of this address were overwritten (the jail keeps its last %d events)", ringRecords)
		}
		pfx := row.Prefix
		dec.Allowlist = []string{
			"jail: " + row.Addr.String() + " is not in the allowlist (checked for every event)",
			"daemon: " + pfx.String() + " touches no allowlist entry (checked before the kernel)",
			"firewall: the allowlist gate let " + pfx.String() + " into the kernel",
		}
		out = append(out, pe)
	}
	if len(out) == 0 {
		return
	}
	e := &d.evidence
	e.mu.Lock()
	e.queue = append(e.queue, out...)
	if !e.running {
		e.running = true
		e.wg.Add(1)
		go d.writeEvidence()
	}
	e.mu.Unlock()
}

func (d *Daemon) writeEvidence() {
	e := &d.evidence
	defer e.wg.Done()
	for {
		e.mu.Lock()
		batch := e.queue
		e.queue = nil
		if len(batch) == 0 {
			e.running = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		rows := make([]store.Evidence, len(batch))
		for i, pe := range batch {
			rows[i] = e.finish(pe)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := d.opts.Store.AddEvidence(ctx, rows); err != nil {
			d.log.Error("saving ban evidence", "count", len(rows), "err", err)
		}
		cancel()
	}
}

// waitEvidence waits until the evidence queued so far is in the store.
func (d *Daemon) waitEvidence() { d.evidence.wg.Wait() }

func (e *evidenceState) finish(pe pendingEvidence) store.Evidence {
	ev := pe.ev
	dec := &ev.Decision
	for i, rec := range pe.recs {
		x := store.EvidenceEvent{Time: time.Unix(0, rec.at).UTC(), Kind: rec.kind.String(), Service: rec.service.String(),
			Account: Escape([]byte(rec.account)), Detail: Escape([]byte(rec.detail)), Detector: rec.detector,
			Structured: rec.flags&recStructured != 0, Counted: rec.flags&recCounted != 0, Source: rec.source}
		switch {
		case rec.flags&recTwin != 0:
			x.Note = "not counted: a twin of a counted report of the same request (NOTICE, security event or the wire)"
		case rec.flags&recChallenge != 0:
			x.Note = "a challenge: counts only if no authentication answers it within challenge_timeout"
		case !x.Counted:
			x.Note = "not counted (weight 0)"
		}
		if x.Counted {
			if dec.First.IsZero() || x.Time.Before(dec.First) {
				dec.First = x.Time
			}
			if x.Time.After(dec.Last) {
				dec.Last = x.Time
			}
			dec.Failures++
		}
		if x.Structured && x.Counted {
			dec.Structured = true
		}
		switch {
		case rec.flags&recAMI != 0:
			x.Source = "AMI event"
			x.Raw = Escape(fmt.Appendf(nil, "AMI security event %s (%s) service=%s account=%q", rec.kind, rec.detail, rec.service, rec.account))
		default:
			raw := pe.raw[i]
			x.Raw, x.Cut = Escape(raw), rec.full > rec.n
			if raw == nil && rec.full > 0 {
				x.Raw, x.Note = "", "the line was overwritten in the evidence ring before the ban"
			}
			x.Offset = rec.offset
			if rec.path != "" {
				x.Source = rec.path
				x.Line = e.lines.lineAt(rec.path, rec.inode, rec.offset)
			}
		}
		ev.Events = append(ev.Events, x)
	}
	return ev
}

// Escape renders attacker-reachable bytes as one printable line: valid
// UTF-8 stays, control bytes, DEL and invalid bytes become \xNN, and a
// backslash is doubled, so that the text cannot split a record or forge
// an escape.
func Escape(b []byte) string {
	var out []byte
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x20 && c < 0x7f {
			if c == '\\' {
				out = append(out, '\\', '\\')
			} else {
				out = append(out, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if c >= 0x80 && r != utf8.RuneError && r > 0x9f && r != 0x2028 && r != 0x2029 {
			out = append(out, b[i:i+n]...)
			i += n
			continue
		}
		out = append(out, '\\', 'x', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		i++
	}
	return string(out)
}

// lineCache turns file offsets into line numbers by counting newlines,
// remembering the last count per file so that a burst of bans reads each
// file once.
type lineCache struct {
	mu   sync.Mutex
	last map[string]lineMark
}

type lineMark struct {
	inode  uint64
	offset int64
	line   int64
}

// lineAt is the 1-based number of the line that ends at offset (exclusive)
// in path, or 0 when the file is no longer the one read (rotated) or
// cannot be read.
func (c *lineCache) lineAt(path string, inode uint64, offset int64) int64 {
	if offset <= 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && inode != 0 && st.Ino != inode {
		return 0
	}
	if fi.Size() < offset {
		return 0
	}
	from, n := int64(0), int64(0)
	if m, ok := c.last[path]; ok && m.inode == inode && m.offset <= offset {
		from, n = m.offset, m.line
	}
	buf := make([]byte, 64<<10)
	for at := from; at < offset; {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), offset-at)], at)
		n += int64(bytes.Count(buf[:k], []byte{'\n'}))
		at += int64(k)
		if err != nil && err != io.EOF || k == 0 {
			return 0
		}
	}
	if c.last == nil {
		c.last = map[string]lineMark{}
	}
	c.last[path] = lineMark{inode: inode, offset: offset, line: n}
	return n
}

// FormatSource is "file:line", "file@offset" or the source's name.
func FormatSource(x store.EvidenceEvent) string {
	switch {
	case x.Line > 0:
		return x.Source + ":" + strconv.FormatInt(x.Line, 10)
	case x.Offset > 0:
		return x.Source + "@" + strconv.FormatInt(x.Offset, 10)
	}
	return x.Source
}

// pruneEvery is how often maybePrune deletes old history.
const pruneEvery = time.Hour

// maybePrune deletes ban history, ban evidence and incidents older than
// Options.Retention, at most once per pruneEvery, on its own goroutine
// (the tick loop does not wait for the disk).
func (d *Daemon) maybePrune(ctx context.Context) {
	if d.opts.Retention <= 0 {
		return
	}
	e := &d.evidence
	now := d.now()
	e.mu.Lock()
	if e.pruning || (!e.lastPrune.IsZero() && now.Sub(e.lastPrune) < pruneEvery) {
		e.mu.Unlock()
		return
	}
	e.pruning, e.lastPrune = true, now
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		defer func() { e.mu.Lock(); e.pruning = false; e.mu.Unlock() }()
		n, err := d.opts.Store.Prune(ctx, now.Add(-d.opts.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Error("pruning old history", "retention", d.opts.Retention, "err", err)
		case n > 0:
			d.log.Info("pruned old history, evidence and incidents", "rows", n, "retention", d.opts.Retention)
		}
	}()
}
