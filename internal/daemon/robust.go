package daemon

import (
	"context"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

// Shutdown and reload are bounded: whatever can block gets a share of
// shutdownBudget and is left behind (logged) when it overruns.
const (
	shutdownBudget = 4 * time.Second
	sourceStopWait = 2 * time.Second
)

// ---- sources: what each one is doing ----

// SourceStatus is one source in Status.
type SourceStatus struct {
	Name  string    `json:"name"`
	State string    `json:"state"` // ok, waiting, failing
	Since time.Time `json:"since"`
	Error string    `json:"error,omitempty"`
}

// healthSource is a Source that tells whether it reads (a file follower
// waiting for its file, or refusing a FIFO at its path).
type healthSource interface{ Health() source.Health }

// positionSource is a Source that reports the position it starts at when
// none was saved, before any line (so that it is stored at once).
type positionSource interface {
	OnStart(fn func(store.Position))
}

// sourceState is what the supervisor knows of one source.
type sourceState struct {
	name    string
	mu      sync.Mutex
	cur     Source
	failing bool
	since   time.Time
	err     string
}

func (s *sourceState) running(src Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = src
	if s.failing || s.since.IsZero() {
		s.failing, s.since, s.err = false, time.Now(), ""
	}
}

func (s *sourceState) failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failing {
		s.since = time.Now()
	}
	s.failing, s.err = true, err.Error()
}

func (s *sourceState) status() SourceStatus {
	s.mu.Lock()
	cur, failing, since, msg := s.cur, s.failing, s.since, s.err
	s.mu.Unlock()
	st := SourceStatus{Name: s.name, State: source.StateOK, Since: since.UTC()}
	if failing {
		st.State, st.Error = source.StateFailing, msg
		return st
	}
	if hs, ok := cur.(healthSource); ok {
		if h := hs.Health(); h.State != "" {
			st.State, st.Error = h.State, h.Error
			if !h.Since.IsZero() {
				st.Since = h.Since.UTC()
			}
		}
	}
	return st
}

// registerSourceMetrics exposes pbxguard_source_up{jail,source} (1 = reading).
func (d *Daemon) registerSourceMetrics() {
	for _, js := range d.jails {
		for _, s := range js.srcs {
			d.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "pbxguard_source_up", Help: "1 when a source reads its log, 0 when it waits for its file or fails (see pbxguard status).",
				ConstLabels: prometheus.Labels{"jail": js.spec.Name, "source": s.name},
			}, func() float64 {
				if s.status().State == source.StateOK {
					return 1
				}
				return 0
			}))
		}
	}
}

// ---- positions: never past a decision that is not stored ----

// ticket is a decision on its way to the store. pre is its source's
// position before the line that made it: until the ticket is done (the
// decision durably stored, or not a ban at all), the saved position of
// that source goes no further than pre, so that after a crash or a full
// disk the line is read again and the decision made again.
type ticket struct {
	done   bool
	pre    store.Position
	hasPre bool
}

// issueTicket records a decision of source key whose lines start at pre.
func (d *Daemon) issueTicket(key string, pre store.Position, hasPre bool) *ticket {
	d.posMu.Lock()
	defer d.posMu.Unlock()
	t := &ticket{pre: pre, hasPre: hasPre}
	d.gates[key] = append(d.gates[key], t)
	return t
}

// checkpoints remember, per source, the position before the first line
// of each period (a second, or findtime/1024), back to findtime: a
// decision not yet stored holds its source's saved position back to the
// start of its findtime window, so that after a restart the lines that led
// to it are read again and the jail, whose counters start afresh, decides
// it again. Used by the source's goroutine only; no allocation per line.
type checkpoints struct {
	window, step time.Duration
	ring         []checkpoint
	head         int
}

type checkpoint struct {
	at     int64 // period start, unix nanoseconds
	pos    store.Position
	hasPos bool
}

func newCheckpoints(window time.Duration) *checkpoints {
	if window <= 0 {
		window = 10 * time.Minute
	}
	return &checkpoints{window: window, step: max(time.Second, window/1024)}
}

// note is called for each line before it is handled, with the position
// before it.
func (c *checkpoints) note(received time.Time, before store.Position, hasBefore bool) {
	at := received.UnixNano() / int64(c.step) * int64(c.step)
	if n := len(c.ring); n > c.head && c.ring[n-1].at >= at {
		return
	}
	c.ring = append(c.ring, checkpoint{at: at, pos: before, hasPos: hasBefore})
	cut := received.Add(-c.window - c.step).UnixNano()
	for c.head < len(c.ring)-1 && c.ring[c.head].at < cut {
		c.head++
	}
	if c.head > 1024 && c.head > len(c.ring)/2 {
		c.ring = append(c.ring[:0], c.ring[c.head:]...)
		c.head = 0
	}
}

// since is the position before the first line received at or after t.
func (c *checkpoints) since(t time.Time) (store.Position, bool) {
	at := t.UnixNano()
	for i := c.head; i < len(c.ring); i++ {
		if c.ring[i].at+int64(c.step) > at {
			return c.ring[i].pos, c.ring[i].hasPos
		}
	}
	if n := len(c.ring); n > c.head {
		return c.ring[n-1].pos, c.ring[n-1].hasPos
	}
	return store.Position{}, false
}

func (d *Daemon) resolveTickets(ts []*ticket) {
	if len(ts) == 0 {
		return
	}
	d.posMu.Lock()
	for _, t := range ts {
		t.done = true
	}
	d.posDirty = true
	d.posMu.Unlock()
}

// safePositions returns the positions that may be saved (posMu held): a
// source with a decision not yet stored saves the position before it.
// blocked reports whether some source is held back.
func (d *Daemon) safePositions() (ps []store.Position, blocked bool) {
	ps = make([]store.Position, 0, len(d.positions))
	for key, p := range d.positions {
		if q := d.gates[key]; len(q) > 0 {
			i := 0
			for i < len(q) && q[i].done {
				i++
			}
			q = q[i:]
			if len(q) == 0 {
				delete(d.gates, key)
			} else {
				d.gates[key] = q
				blocked = true
				if !q[0].hasPre {
					continue
				}
				p = q[0].pre
			}
		}
		p.Source = key
		ps = append(ps, p)
	}
	return ps, blocked
}

// ---- the store: retried, never dropped silently ----

// StoreStatus is the store's health in Status.
type StoreStatus struct {
	OK          bool      `json:"ok"`
	Since       time.Time `json:"since"`
	LastError   string    `json:"last_error,omitempty"`
	Errors      uint64    `json:"errors"`
	PendingBans int       `json:"pending_bans"`             // decided, in the kernel, not yet stored (retried)
	DroppedBans uint64    `json:"dropped_bans,omitempty"`   // given up (queue full): their lines are read again at the next start
	Recovered   string    `json:"recovered_from,omitempty"` // a corrupt store moved aside at start
}

type storeHealth struct {
	mu      sync.Mutex
	ok      bool
	since   time.Time
	lastErr string
	errors  atomic.Uint64
	pending atomic.Int64
	dropped atomic.Uint64
}

// storeFailed records a failed store operation (what names it).
func (d *Daemon) storeFailed(what string, err error) {
	d.storeH.errors.Add(1)
	d.metrics.storeErrors.Inc()
	d.metrics.storeOK.Set(0)
	h := &d.storeH
	h.mu.Lock()
	if h.ok {
		h.since = d.now()
	}
	h.ok, h.lastErr = false, what+": "+err.Error()
	h.mu.Unlock()
}

func (d *Daemon) storeWorked() {
	h := &d.storeH
	h.mu.Lock()
	if !h.ok {
		h.ok, h.since = true, d.now()
		d.metrics.storeOK.Set(1)
		if h.lastErr != "" {
			d.log.Info("store: writing again", "state_dir_file", d.opts.Store.Path())
		}
	}
	h.mu.Unlock()
}

func (d *Daemon) storeStatus() StoreStatus {
	h := &d.storeH
	h.mu.Lock()
	defer h.mu.Unlock()
	return StoreStatus{OK: h.ok, Since: h.since.UTC(), LastError: h.lastErr, Errors: h.errors.Load(),
		PendingBans: int(h.pending.Load()), DroppedBans: h.dropped.Load(), Recovered: d.opts.Store.RecoveredFrom()}
}

// storeQueueMax bounds the bans held while the store fails (~100 MB);
// storeChunk is about how many go in one transaction.
const (
	storeQueueMax = 500_000
	storeChunk    = 4096
)

// storeReq is, in order: bans to record, decisions (tickets) whose bans
// were queued before it, or (done != nil) a flush barrier.
type storeReq struct {
	rows    []store.Ban
	tickets []*ticket
	done    chan struct{}
}

// storeWriter records bans in the store off the kernel path. A failed
// write (disk full, I/O error) keeps the bans queued, in order, and is
// retried (0.5 s doubling to 30 s); tickets and barriers are released only
// when every ban queued before them is stored. It stops when storeStop is
// closed, after one last attempt bounded by the shutdown deadline.
func (d *Daemon) storeWriter(stop <-chan struct{}, deadline func() time.Time) {
	var q []storeReq
	rows := 0
	pause := 500 * time.Millisecond
	var retryAt time.Time
	stopping := false
	add := func(r storeReq) {
		q = append(q, r)
		rows += len(r.rows)
	}
	for {
		if len(q) == 0 || (!stopping && time.Now().Before(retryAt)) {
			var timer <-chan time.Time
			if len(q) > 0 {
				timer = time.After(time.Until(retryAt))
			}
			select {
			case r := <-d.storeQ:
				add(r)
			case <-timer:
			case <-stop:
				stopping = true
			}
		}
	drain:
		for {
			select {
			case r := <-d.storeQ:
				add(r)
			default:
				break drain
			}
		}
		if stopping && len(q) == 0 {
			return
		}
		if !stopping && time.Now().Before(retryAt) {
			d.storeH.pending.Store(int64(rows))
			continue
		}
		// Written in transactions of whole requests, about storeChunk bans
		// each, oldest first: on a nearly full disk as much as fits is
		// stored, and each request's tickets are released as soon as it
		// and everything before it is.
		var err error
		wrote := false
		for len(q) > 0 {
			n, cnt := 0, 0
			for n < len(q) && (n == 0 || cnt+len(q[n].rows) <= storeChunk) {
				cnt += len(q[n].rows)
				n++
			}
			if cnt > 0 {
				batch := make([]store.Ban, 0, cnt)
				for _, r := range q[:n] {
					batch = append(batch, r.rows...)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if stopping {
					ctx, cancel = context.WithDeadline(context.Background(), deadline())
				}
				err = d.opts.Store.AddBans(ctx, batch)
				cancel()
				if err != nil {
					break
				}
				wrote = true
			}
			for _, r := range q[:n] {
				d.resolveTickets(r.tickets)
				if r.done != nil {
					close(r.done)
				}
			}
			q = q[n:]
			rows -= cnt
			d.storeH.pending.Store(int64(rows))
		}
		if err == nil {
			if wrote {
				d.storeWorked()
			}
			q, rows, pause, retryAt = q[:0], 0, 500*time.Millisecond, time.Time{}
			continue
		}
		d.storeFailed("saving bans", err)
		d.storeH.pending.Store(int64(rows))
		if stopping {
			d.log.Error("store: bans not saved at shutdown; their log lines are read again at the next start (positions were not moved past them)",
				"bans", rows, "err", err)
			for _, r := range q {
				if r.done != nil {
					close(r.done)
				}
			}
			return
		}
		d.log.Error("store: saving bans failed; they stay in the kernel and are retried (is the state directory's disk full?)",
			"bans", rows, "retry_in", pause, "store", d.opts.Store.Path(), "err", err)
		// The write-ahead log keeps old page versions: folding it into the
		// database gives room back on a full disk.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if cerr := d.opts.Store.Checkpoint(cctx); cerr != nil {
			d.log.Debug("store: checkpoint after a failed write", "err", cerr)
		}
		cancel()
		retryAt = time.Now().Add(pause)
		pause = min(2*pause, 30*time.Second)
		if rows > storeQueueMax {
			// Bounded: the oldest go. Their tickets stay open, so the
			// positions of their sources stay before their lines.
			n := 0
			i := 0
			for i < len(q) && rows-n > storeQueueMax {
				n += len(q[i].rows)
				if q[i].done != nil {
					close(q[i].done)
				}
				i++
			}
			q = append(q[:0], q[i:]...)
			rows -= n
			d.storeH.dropped.Add(uint64(n))
			d.metrics.storeDropped.Add(float64(n))
			d.log.Error("store: too many unsaved bans; the oldest are given up here (still in the kernel until the restart, and decided again from their lines after it)",
				"given_up", n, "kept", rows)
		}
	}
}

// ---- bounded waits ----

// tracked is a set of named goroutines, so that a shutdown that has to
// leave some behind says which.
type tracked struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	names map[string]int
}

func (t *tracked) Go(name string, fn func()) {
	t.mu.Lock()
	if t.names == nil {
		t.names = map[string]int{}
	}
	t.names[name]++
	t.mu.Unlock()
	t.wg.Add(1)
	go func() {
		defer func() {
			t.mu.Lock()
			if t.names[name]--; t.names[name] == 0 {
				delete(t.names, name)
			}
			t.mu.Unlock()
			t.wg.Done()
		}()
		fn()
	}()
}

// Wait waits at most d; it returns the names still running then.
func (t *tracked) Wait(d time.Duration) []string {
	return waitBounded(t.wg.Wait, d, func() []string {
		t.mu.Lock()
		defer t.mu.Unlock()
		var out []string
		for n := range t.names {
			out = append(out, n)
		}
		sort.Strings(out)
		return out
	})
}

// waitBounded runs wait, at most d; on timeout it returns left() (or a
// placeholder).
func waitBounded(wait func(), d time.Duration, left func() []string) []string {
	done := make(chan struct{})
	go func() { wait(); close(done) }()
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		if left != nil {
			if l := left(); len(l) > 0 {
				return l
			}
		}
		return []string{"(unnamed)"}
	}
}

func waitChan(c <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-c:
		return true
	case <-t.C:
		return false
	}
}

// lineStamp returns a log line's leading timestamp: Asterisk's "[Mmm dd
// HH:MM:SS]" or "[YYYY-MM-DD HH:MM:SS(.frac)]", syslog's "Mmm dd
// HH:MM:SS", or ISO 8601 / RFC 3339 (rsyslog's high-precision format).
// Year-less stamps get the latest year that does not put them more than a
// day ahead of now. It serves the read-back of a file without a saved
// position, not detection (the detectors have their own).
func lineStamp(loc *time.Location, now func() time.Time) func([]byte) (time.Time, bool) {
	if loc == nil {
		loc = time.Local
	}
	return func(b []byte) (time.Time, bool) {
		if len(b) > 0 && b[0] == '[' {
			b = b[1:]
		}
		if len(b) >= 19 && b[4] == '-' && b[7] == '-' && (b[10] == ' ' || b[10] == 'T') {
			end := 19
			for end < len(b) && b[end] != ' ' && b[end] != ']' {
				end++
			}
			tok := string(b[:end])
			if t, err := time.Parse(time.RFC3339Nano, tok); err == nil {
				return t, true
			}
			if t, err := time.ParseInLocation("2006-01-02 15:04:05", strings.Replace(string(b[:19]), "T", " ", 1), loc); err == nil {
				return t, true
			}
			return time.Time{}, false
		}
		if len(b) < 15 {
			return time.Time{}, false
		}
		t, err := time.ParseInLocation(time.Stamp, string(b[:15]), loc)
		if err != nil {
			return time.Time{}, false
		}
		n := now().In(loc)
		y := n.Year()
		t = t.AddDate(y-t.Year(), 0, 0)
		if t.After(n.Add(24 * time.Hour)) {
			t = t.AddDate(-1, 0, 0)
		}
		return t, true
	}
}

// flushStore waits until every ban queued for the store before the call
// is stored (or ctx ends: a failing store is waited for no longer).
func (d *Daemon) flushStore(ctx context.Context) {
	done := make(chan struct{})
	select {
	case d.storeQ <- storeReq{done: done}:
	case <-ctx.Done():
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}
