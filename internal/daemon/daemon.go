// Package daemon wires pbxguard's stages together and owns their
// goroutines: per jail, sources feed detectors, detectors feed the jail,
// the jail's decisions go (batched) to the kernel firewall and the store.
// It also runs the expiry loop, the control socket and /metrics.
//
// The stages reach the daemon through the small interfaces below, so that
// the core is tested with fakes and the real packages are plugged in by
// Build (build.go).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// Line is one log line handed to the daemon by a source.
type Line struct {
	Data     []byte // valid only during the callback
	Pos      store.Position
	Received time.Time
}

// Source produces lines until ctx is done.
type Source interface {
	Run(ctx context.Context, handle func(Line) error) error
}

// Detector turns a line into at most one event (detect.Detector).
type Detector interface {
	Name() string
	Detect(line []byte, ev *event.Event) bool
}

// Decision is a jail's verdict: ban Prefix until Until.
type Decision struct {
	Jail     string
	Addr     netip.Addr
	Prefix   netip.Prefix
	At       time.Time
	Duration time.Duration
	Until    time.Time
	BanCount int
	Reason   string
	Failures int
}

// Judge is a jail: events in, decisions out. The daemon serialises calls.
type Judge interface {
	Observe(ev *event.Event) (Decision, bool)
	Tick(now time.Time) []Decision
	Forget(addr netip.Addr)
}

// SourceSpec is one source of a jail, with its own detector.
type SourceSpec struct {
	Key      string // store key of its position: "jail:path" or "jail:journal"
	Name     string // for logs and metrics (the path, or "journal")
	Source   Source
	Detector Detector
	// Reopen, when set, makes a fresh source that resumes at pos (the
	// position of the last line handled). A source that stops with an
	// error is then reopened after a pause instead of stopping the daemon
	// (journalctl exiting, a log directory that vanished).
	Reopen func(pos store.Position) Source
	// start is the position the first source was opened at.
	start store.Position
}

// JailSpec is one jail and its sources.
type JailSpec struct {
	Name    string
	Judge   Judge
	Sources []SourceSpec
	BanTime time.Duration // default duration of manual bans into this jail
	// FindTime is the jail's window: a ban not yet stored holds its
	// source's saved position back by it (default 10m).
	FindTime time.Duration
}

// Options are the daemon's parts.
type Options struct {
	Logger  *slog.Logger
	Store   *store.Store
	Backend firewall.Backend
	// Allowed reports whether a prefix touches the allowlist (and so must
	// never reach the kernel), with the allowlist entry for the message.
	Allowed       func(netip.Prefix) (netip.Prefix, bool)
	Jails         []JailSpec
	ControlSocket string // "" = no control socket
	MetricsListen string // "" = no /metrics
	// Now is the clock; nil = time.Now.
	Now func() time.Time
	// ManualBanTime is the default duration of `pbxguard ban` (default 1h).
	ManualBanTime time.Duration
	// SaveEvery is the position save period (default 1s).
	SaveEvery time.Duration
	// TickEvery is the expiry/challenge period (default 1s).
	TickEvery time.Duration
	// CheckEvery is how often the kernel state is verified (heal.go;
	// default 1s).
	CheckEvery time.Duration
	// Version is shown by status.
	Version string
	// Workers run beside the sources (AMI listener, fraud monitor).
	Workers []Worker
	// Audit is the result of the Asterisk configuration audit run at
	// start (nil = not run): exposed as pbxguard_audit_findings and in
	// Status.
	Audit *AuditStatus
	// Ready, when set, is called by Run once the kernel holds every
	// restored ban and every stage has started (systemd's READY=1).
	Ready func()
	// Retention: ban history, evidence and incidents older than this are
	// pruned (hourly, evidence.go); 0 keeps them forever.
	Retention time.Duration
}

// Batching of decisions into one backend Add.
const (
	batchWait = time.Millisecond
	batchMax  = 256
)

type pending struct {
	d        Decision
	received time.Time // when the line that caused it was read (zero for ticks)
	ticket   *ticket   // the line's source waits for it to be stored (nil for ticks, AMI)
}

type jailState struct {
	spec     JailSpec
	srcs     []*sourceState // per spec.Sources
	mu       sync.Mutex     // serialises the Judge
	lines    atomic.Uint64
	events   atomic.Uint64
	evidence evidenceRing // recent events, for ban evidence (evidence.go); guarded by mu
}

// normPrefix turns IPv4-mapped IPv6 into IPv4 and clears host bits.
func normPrefix(p netip.Prefix) netip.Prefix {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() {
		a, bits = a.Unmap(), max(bits-96, 0)
	}
	return netip.PrefixFrom(a.WithZone(""), bits).Masked()
}

// Daemon is a running pbxguard.
type Daemon struct {
	// tap, when set, sees the log events the fraud monitor learns from
	// (auth_success: which address an extension registers from;
	// call_rejected: unauthenticated calls to international numbers).
	tap atomic.Pointer[func(event.Event)]
	// fraudMon is the AMI worker's fraud monitor, read by the AGI worker.
	fraudMon monitorSlot

	opts    Options
	log     *slog.Logger
	now     func() time.Time
	metrics *Metrics
	jails   []*jailState
	byName  map[string]*jailState
	started time.Time
	running atomic.Bool // set once Run has started every stage

	decisions  chan pending
	storeQ     chan storeReq // bans to write, off the kernel path
	bannerStop chan struct{} // closed at shutdown once the sources stopped
	storeH     storeHealth

	fwMu sync.Mutex // serialises the backend

	posMu     sync.Mutex
	positions map[string]store.Position // last line handled, per source key
	gates     map[string][]*ticket      // decisions not yet stored, per source key, oldest first
	posDirty  bool

	health workerHealth // the workers' up/down, for Status and /metrics

	activeMu sync.Mutex
	active   map[netip.Prefix]string // prefix -> jail, mirror of the store's active bans
	retry    []store.Ban             // bans the kernel refused, retried on tick
	// held is the ban in force per prefix (the longest one decided: see
	// extend), the kernel's timeout and the store's until.
	held map[netip.Prefix]store.Ban

	sup    supervisor // restarts followed sources that stop
	kernel kernelSync // does the kernel hold what the store says (heal.go)

	evidence evidenceState               // ban evidence writer (evidence.go)
	cluster  atomic.Pointer[clusterLink] // publishes bans to other nodes (cluster.go)
}

// New checks the options and makes a daemon; Run starts it.
func New(opts Options) (*Daemon, error) {
	if opts.Store == nil || opts.Backend == nil {
		return nil, errors.New("daemon: a store and a firewall backend are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Allowed == nil {
		opts.Allowed = func(netip.Prefix) (netip.Prefix, bool) { return netip.Prefix{}, false }
	}
	if opts.ManualBanTime <= 0 {
		opts.ManualBanTime = time.Hour
	}
	if opts.SaveEvery <= 0 {
		opts.SaveEvery = time.Second
	}
	if opts.TickEvery <= 0 {
		opts.TickEvery = time.Second
	}
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = time.Second
	}
	d := &Daemon{
		opts:      opts,
		log:       opts.Logger,
		now:       opts.Now,
		metrics:   NewMetrics(),
		byName:    map[string]*jailState{},
		decisions: make(chan pending, 4096),
		storeQ:    make(chan storeReq, 1024),
		positions: map[string]store.Position{},
		gates:     map[string][]*ticket{},
		active:    map[netip.Prefix]string{},
		held:      map[netip.Prefix]store.Ban{},
		sup:       defaultSupervisor(),
	}
	d.storeH.ok, d.storeH.since = true, opts.Now()
	d.metrics.storeOK.Set(1)
	if rec := opts.Store.RecoveredFrom(); rec != "" {
		d.metrics.storeRecovered.Set(1)
	}
	for _, j := range opts.Jails {
		if _, dup := d.byName[j.Name]; dup {
			return nil, fmt.Errorf("daemon: jail %q twice", j.Name)
		}
		js := &jailState{spec: j}
		for _, sp := range j.Sources {
			js.srcs = append(js.srcs, &sourceState{name: sp.Name})
		}
		d.jails = append(d.jails, js)
		d.byName[j.Name] = js
		d.metrics.activeBans.WithLabelValues(j.Name).Set(0)
	}
	d.registerSourceMetrics()
	d.registerWorkers(d.now())
	if opts.Audit != nil {
		for sev, n := range opts.Audit.Findings {
			d.metrics.auditFindings.WithLabelValues(sev).Set(float64(n))
		}
	}
	return d, nil
}

// Metrics returns the daemon's metrics (for tests and embedding).
func (d *Daemon) Metrics() *Metrics { return d.metrics }

// Run reconciles the kernel with the store, starts every stage and blocks
// until ctx is done (SIGTERM), then shuts down in order: sources stop,
// pending decisions reach the kernel and the store, positions are saved.
// Kernel entries stay: they carry their own timeouts and are restored by
// the next start.
func (d *Daemon) Run(ctx context.Context) error {
	d.started = d.now()
	if err := d.reconcile(ctx); err != nil {
		return err
	}

	var ctl *controlServer
	if d.opts.ControlSocket != "" {
		var err error
		if ctl, err = listenControl(d.opts.ControlSocket, d, d.log); err != nil {
			return err
		}
		defer ctl.Close() // closed early at shutdown; again is a no-op
	}
	if d.opts.MetricsListen != "" {
		stop, err := d.metrics.Serve(d.opts.MetricsListen, d.log)
		if err != nil {
			return err
		}
		defer stop()
	}

	srcCtx, stopSources := context.WithCancel(ctx)
	defer stopSources()
	var srcs tracked
	var bgWG sync.WaitGroup
	srcErr := make(chan error, 64)
	for _, js := range d.jails {
		for i, sp := range js.spec.Sources {
			st := js.srcs[i]
			srcs.Go("source "+js.spec.Name+":"+sp.Name, func() {
				if err := d.superviseSource(srcCtx, js, sp, st); err != nil {
					srcErr <- err
				}
			})
		}
	}
	for _, w := range d.opts.Workers {
		srcs.Go("worker "+w.Name, func() {
			if err := w.Run(srcCtx, d); err != nil && srcCtx.Err() == nil {
				d.log.Error("worker stopped", "worker", w.Name, "err", err)
				d.SetWorkerUp(w.Name, false, err) // down in status and /metrics, not only in the log
			}
		})
	}
	d.bannerStop = make(chan struct{})
	bannerDone := make(chan struct{})
	go func() { defer close(bannerDone); d.banner(d.bannerStop) }()
	var shutdownBy time.Time // set when the shutdown starts
	storeStop, storeDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(storeDone); d.storeWriter(storeStop, func() time.Time { return shutdownBy }) }()

	bgCtx, stopBG := context.WithCancel(context.Background())
	bgWG.Add(1)
	go func() { defer bgWG.Done(); d.loop(bgCtx) }()
	bgWG.Add(1)
	go func() { defer bgWG.Done(); d.healLoop(bgCtx) }()

	d.running.Store(true)
	d.log.Info("pbxguard running", "jails", len(d.jails), "backend", d.opts.Backend.Name(),
		"control", d.opts.ControlSocket, "metrics", d.opts.MetricsListen)
	if d.opts.Ready != nil {
		d.opts.Ready()
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-srcErr:
	}
	// Shutdown, bounded: a source or worker stuck in a call that ignores
	// its context is left behind (logged), the rest goes on in order:
	// queued decisions reach the kernel and the store, positions are saved
	// (never past a decision that is not stored).
	t0 := time.Now()
	deadline := t0.Add(shutdownBudget)
	shutdownBy = deadline.Add(-time.Second) // the store's last attempt leaves a second for the positions
	left := func(limit time.Duration) time.Duration { return min(limit, time.Until(deadline)) }
	d.log.Info("shutting down")
	if ctl != nil {
		ctl.Close() // idle and slow clients are cut: they never hold the shutdown
	}
	stopSources()
	if stuck := srcs.Wait(left(sourceStopWait)); len(stuck) > 0 {
		d.log.Error("shutdown: left behind what did not stop in time (their lines are read again at the next start)",
			"waited", sourceStopWait, "stuck", stuck)
	}
	stopBG()
	if stuck := waitBounded(bgWG.Wait, left(time.Second), func() []string { return []string{"expiry loop"} }); len(stuck) > 0 {
		d.log.Error("shutdown: the expiry loop did not stop in time", "stuck", stuck)
	}
	close(d.bannerStop)
	if !waitChan(bannerDone, left(time.Until(shutdownBy))) {
		d.log.Error("shutdown: decisions still being applied were left behind (the kernel did not answer in time)")
	}
	close(storeStop)
	if !waitChan(storeDone, left(time.Until(shutdownBy)+500*time.Millisecond)) {
		d.log.Error("shutdown: the store did not finish in time; unsaved bans are decided again from their lines at the next start")
	}
	evDone := make(chan struct{})
	go func() { d.waitEvidence(); close(evDone) }()
	if !waitChan(evDone, left(time.Until(shutdownBy)+500*time.Millisecond)) {
		d.log.Error("shutdown: ban evidence still being written was left behind")
	}
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := d.savePositions(sctx, false); err != nil {
		d.log.Error("saving positions at shutdown", "err", err)
		if runErr == nil {
			runErr = err
		}
	}
	d.log.Info("stopped", "shutdown_took", time.Since(t0).Round(time.Millisecond))
	return runErr
}

// superviseSource runs a source; when it fails and can be reopened, it is
// reopened at its last position after a pause (d.sup: 1 s, doubling to
// 30 s, back to 1 s after a healthy run). st (nil in tests) is the
// source's health as status and /metrics show it.
func (d *Daemon) superviseSource(ctx context.Context, js *jailState, sp SourceSpec, st *sourceState) error {
	first := true
	err := d.sup.run(ctx, func(ctx context.Context) error {
		if !first {
			d.posMu.Lock()
			pos, ok := d.positions[sp.Key]
			d.posMu.Unlock()
			if !ok {
				pos = sp.start
			}
			sp.Source = sp.Reopen(pos)
		}
		first = false
		if st != nil {
			st.running(sp.Source)
		}
		return d.runSource(ctx, js, sp)
	}, func(err error, pause time.Duration) bool {
		if st != nil {
			st.failed(err)
		}
		d.metrics.sourceErrors.WithLabelValues(js.spec.Name, sp.Name).Inc()
		if sp.Reopen == nil {
			d.log.Error("source stopped", "jail", js.spec.Name, "source", sp.Name, "err", err)
			return false
		}
		d.log.Error("source stopped; reopening it", "jail", js.spec.Name, "source", sp.Name, "in", pause, "err", err)
		return true
	})
	if err != nil {
		return fmt.Errorf("jail %s: source %s: %w", js.spec.Name, sp.Name, err)
	}
	return nil
}

func (d *Daemon) runSource(ctx context.Context, js *jailState, sp SourceSpec) error {
	lines := d.metrics.lines.WithLabelValues(js.spec.Name, sp.Name)
	detName := sp.Detector.Name()
	var byKind [event.NumKinds]interface{ Inc() }
	for k := range byKind {
		byKind[k] = d.metrics.events.WithLabelValues(detName, event.Kind(k).String())
	}
	d.posMu.Lock()
	last, haveLast := d.positions[sp.Key]
	d.posMu.Unlock()
	cps := newCheckpoints(js.spec.FindTime)
	if ps, ok := sp.Source.(positionSource); ok {
		// No saved position: the starting point is stored at once, so
		// that what is written while pbxguard is down (restart, reload)
		// is read after it.
		ps.OnStart(func(p store.Position) {
			p.Source = sp.Key
			last, haveLast = p, true
			d.posMu.Lock()
			d.positions[sp.Key] = p
			d.posDirty = true
			d.posMu.Unlock()
		})
	}
	var ev event.Event
	return sp.Source.Run(ctx, func(l Line) error {
		cps.note(l.Received, last, haveLast)
		lines.Inc()
		js.lines.Add(1)
		ev.Reset()
		if sp.Detector.Detect(l.Data, &ev) {
			byKind[ev.Kind].Inc()
			js.events.Add(1)
			if ev.Kind == event.AuthSuccess || ev.Kind == event.CallRejected || ev.Kind == event.AuthFailure {
				// auth_failure: the fraud monitor's second signal against an
				// established address (a failed login from it).
				if tap := d.tap.Load(); tap != nil {
					(*tap)(ev)
				}
			}
			if ev.Addr.IsValid() {
				if ev.Time.IsZero() {
					ev.Time = l.Received
				}
				dec, ok := d.observe(js, &ev, sp.Name, l.Data, &l.Pos)
				if ok {
					if dec.Jail == "" {
						dec.Jail = js.spec.Name
					}
					pre, hasPre := cps.since(l.Received.Add(-js.spec.FindTime))
					t := d.issueTicket(sp.Key, pre, hasPre)
					select {
					case d.decisions <- pending{d: dec, received: l.Received, ticket: t}:
					case <-ctx.Done():
						// Shutting down: the position below is not saved for
						// this line, so it is read again at the next start.
						return nil
					}
				}
			}
		}
		l.Pos.Source = sp.Key
		last, haveLast = l.Pos, true
		d.posMu.Lock()
		d.positions[sp.Key] = l.Pos
		d.posDirty = true
		d.posMu.Unlock()
		return nil
	})
}

// SetEventTap makes fn see the auth_success, auth_failure and
// call_rejected events of every log source (nil stops it). fn runs on the source's goroutine: it
// must be quick and safe for concurrent use.
func (d *Daemon) SetEventTap(fn func(event.Event)) {
	if fn == nil {
		d.tap.Store(nil)
		return
	}
	d.tap.Store(&fn)
}

// Inject hands an event from outside the log pipeline (the AMI security
// events of a `source: ami` jail) to a jail.
func (d *Daemon) Inject(ctx context.Context, jail string, ev *event.Event) error {
	js, ok := d.byName[jail]
	if !ok {
		return fmt.Errorf("daemon: no jail %q", jail)
	}
	if !ev.Addr.IsValid() {
		return nil
	}
	received := d.now()
	if ev.Time.IsZero() {
		ev.Time = received
	}
	d.metrics.events.WithLabelValues(ev.Detector, ev.Kind.String()).Inc()
	js.events.Add(1)
	dec, ok := d.observe(js, ev, "AMI", nil, nil)
	if ok {
		if dec.Jail == "" {
			dec.Jail = jail
		}
		select {
		case d.decisions <- pending{d: dec, received: received}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// banner applies decisions with one backend Add and one store transaction
// per batch. A lone decision goes at once; when more are already queued (a
// burst), it collects for at most batchWait or batchMax items.
func (d *Daemon) banner(stop <-chan struct{}) {
	batch := make([]pending, 0, batchMax)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	stopping := false
	for {
		var p pending
		ok := true
		if stopping {
			// Shutting down: what is queued is applied, then we stop.
			select {
			case p = <-d.decisions:
			default:
				return
			}
		} else {
			select {
			case p, ok = <-d.decisions:
			case <-stop:
				stopping = true
				continue
			}
		}
		if !ok {
			return
		}
		batch = append(batch[:0], p)
	drain:
		for len(batch) < batchMax {
			select {
			case p, ok := <-d.decisions:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		if len(batch) > 1 && len(batch) < batchMax {
			timer.Reset(batchWait)
		collect:
			for len(batch) < batchMax {
				select {
				case p, ok := <-d.decisions:
					if !ok {
						break collect
					}
					batch = append(batch, p)
				case <-timer.C:
					break collect
				}
			}
			timer.Stop()
		}
		d.apply(batch)
		// The decisions' tickets are done once the bans apply queued are
		// stored (allowlisted or expired ones were no ban at all).
		var ts []*ticket
		for _, p := range batch {
			if p.ticket != nil {
				ts = append(ts, p.ticket)
			}
		}
		if len(ts) > 0 {
			d.storeQ <- storeReq{tickets: ts}
		}
	}
}

func (d *Daemon) apply(batch []pending) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	now := d.now()
	rows := make([]store.Ban, 0, len(batch))
	var decided []store.Ban // every decision, for the store's history
	received := make([]time.Time, 0, len(batch))
	seen := map[netip.Prefix]int{}
	for _, p := range batch {
		dec := p.d
		pfx := dec.Prefix
		if !pfx.IsValid() {
			pfx = netip.PrefixFrom(dec.Addr, dec.Addr.BitLen())
		}
		pfx = pfx.Masked()
		if entry, hit := d.opts.Allowed(pfx); hit {
			d.log.Warn("decision refused: allowlisted", "jail", dec.Jail, "prefix", pfx, "allowlist", entry)
			continue
		}
		until := decisionUntil(dec, now)
		if !until.After(now) {
			continue
		}
		since := dec.At
		if since.IsZero() {
			since = now
		}
		row := store.Ban{Prefix: pfx, Addr: dec.Addr, Jail: dec.Jail, Reason: dec.Reason, Since: since, Until: until, Count: dec.BanCount}
		if i, dup := seen[pfx]; dup {
			// Both decisions go to the history; the longer one is the ban.
			decided = append(decided, row)
			if row.Until.After(rows[i].Until) {
				rows[i], received[i] = row, p.received
			}
			continue
		}
		seen[pfx] = len(rows)
		rows = append(rows, row)
		received = append(received, p.received)
	}
	if len(rows) == 0 {
		return
	}
	decided = append(decided, rows...)
	t0 := time.Now()
	d.fwMu.Lock()
	// A later, shorter decision never shortens a ban in force: the kernel
	// gets the longer of the two (extend), under fwMu so that the kernel
	// sees the bans in the order they were merged.
	kept := make([]bool, len(rows))
	asked := slices.Clone(rows) // the decisions, for the log
	fw := make([]firewall.Ban, len(rows))
	for i, r := range rows {
		rows[i], kept[i] = d.extend(r)
		fw[i] = firewall.Ban{Prefix: rows[i].Prefix, Timeout: rows[i].Remaining(now)}
	}
	err := d.opts.Backend.Add(ctx, fw)
	d.fwMu.Unlock()
	done := time.Now()
	if refused, rest := d.splitRefused(err); len(refused) > 0 {
		// Kept out of the kernel by the allowlist gate: not a ban.
		err = rest
		keep, keepRecv, keepKept, keepAsked := rows[:0], received[:0], kept[:0], asked[:0]
		for i, r := range rows {
			if !refused[r.Prefix] {
				keep, keepRecv, keepKept, keepAsked = append(keep, r), append(keepRecv, received[i]), append(keepKept, kept[i]), append(keepAsked, asked[i])
			}
		}
		rows, received, kept, asked = keep, keepRecv, keepKept, keepAsked
		decided = slices.DeleteFunc(decided, func(b store.Ban) bool { return refused[b.Prefix] })
		d.forgetHeld(refused)
		if len(rows) == 0 {
			return
		}
	}
	defer func() {
		if took := time.Since(t0); took > 20*time.Millisecond {
			d.log.Debug("slow ban batch", "bans", len(fw), "kernel", done.Sub(t0), "total", took)
		}
	}()
	if err != nil {
		d.metrics.backendErrors.WithLabelValues("add").Inc()
		d.log.Error("firewall refused bans; will retry", "count", len(fw), "err", err)
		d.activeMu.Lock()
		d.retry = append(d.retry, rows...)
		d.activeMu.Unlock()
	} else {
		for _, r := range received {
			if !r.IsZero() {
				d.metrics.banLatency.Observe(done.Sub(r).Seconds())
			}
		}
	}
	// The store keeps the longer ban of a prefix too (AddBans) and
	// records every decision in the history.
	d.storeQ <- storeReq{rows: decided}
	d.keepEvidence(decided)
	d.noteActive(rows)
	if d.cluster.Load() != nil { // only bans not merely "a longer one is in force"
		var shared []store.Ban
		for i, r := range rows {
			if !kept[i] {
				shared = append(shared, r)
			}
		}
		d.shareBans(ctx, shared)
	}
	for i, r := range rows {
		if kept[i] {
			a := asked[i]
			d.log.Info("jail "+a.Jail+" decided a ban; a longer ban is in force and stays", "jail", a.Jail, "prefix", r.Prefix,
				"asked_until", untilText(a), "reason", a.Reason, "in_force_until", untilText(r), "in_force_jail", r.Jail, "in_force_reason", r.Reason)
			continue
		}
		d.log.Info("banned by jail "+r.Jail, "jail", r.Jail, "prefix", r.Prefix, "addr", r.Addr, "until", untilText(r),
			"count", r.Count, "reason", r.Reason)
	}
}

// decisionUntil is when a decision's ban ends: store.Forever for a
// permanent one (Duration store.Permanent, i.e. bantime: permanent).
func decisionUntil(dec Decision, now time.Time) time.Time {
	if dec.Duration >= store.Permanent || !dec.Until.Before(store.Forever) {
		return store.Forever
	}
	if dec.Until.IsZero() {
		return now.Add(dec.Duration)
	}
	return dec.Until
}

// untilText is a ban's end for logs and messages.
func untilText(b store.Ban) string {
	if b.Permanent() {
		return "permanent"
	}
	return b.Until.Format(time.RFC3339)
}

// extend merges a new ban of a prefix with the one in force and records
// the result: the ban that ends later wins whole (jail, reason, since, end;
// on a tie, the one in force), the count is the higher. kept is true when
// the ban in force stays as it was (the new one was not longer). Only an
// unban (or expiry) shortens a ban. Call with fwMu held.
func (d *Daemon) extend(b store.Ban) (eff store.Ban, kept bool) {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	old, ok := d.held[b.Prefix]
	if ok && !old.Until.Before(b.Until) {
		old.Count = max(old.Count, b.Count)
		d.held[b.Prefix] = old
		return old, true
	}
	if ok {
		b.Count = max(old.Count, b.Count)
	}
	d.held[b.Prefix] = b
	return b, false
}

// unhold undoes extend for a ban that did not make it (the kernel or the
// store refused it): the ban in force goes back to what the store says.
func (d *Daemon) unhold(ctx context.Context, p netip.Prefix, now time.Time) {
	d.activeMu.Lock()
	delete(d.held, p)
	d.activeMu.Unlock()
	if old, ok, _ := d.opts.Store.Ban(ctx, p); ok && old.Until.After(now) {
		d.extend(old)
	}
}

// inForce is the ban in force for a prefix (see extend); false when there
// is none (never banned, unbanned, expired).
func (d *Daemon) inForce(p netip.Prefix) (store.Ban, bool) {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	b, ok := d.held[p]
	return b, ok
}

// forgetHeld drops prefixes the kernel refused (allowlisted) from held.
func (d *Daemon) forgetHeld(refused map[netip.Prefix]bool) {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	for p := range refused {
		if _, active := d.active[p]; !active {
			delete(d.held, p)
		}
	}
}

// splitRefused separates the allowlist gate's refusals
// (firewall.WithAllowlist's *firewall.AllowlistError) from the rest of a
// backend error, logging each refused prefix with the allowlist entry it
// touches. The daemon checks the allowlist before the backend, so a
// refusal here means some path skipped that check: the entry is not a ban.
func (d *Daemon) splitRefused(err error) (map[netip.Prefix]bool, error) {
	if err == nil || !errors.Is(err, firewall.ErrAllowlisted) {
		return nil, err
	}
	refused := map[netip.Prefix]bool{}
	var rest []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var ae *firewall.AllowlistError
		if errors.As(e, &ae) {
			for _, p := range ae.Refused {
				refused[p] = true
				entry, _ := d.opts.Allowed(p)
				d.log.Warn("allowlisted prefix kept out of the kernel", "prefix", p, "allowlist", entry)
			}
			return
		}
		rest = append(rest, e)
	}
	walk(err)
	return refused, errors.Join(rest...)
}

func (d *Daemon) noteActive(rows []store.Ban) {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	for _, r := range rows {
		if old, ok := d.active[r.Prefix]; ok {
			d.metrics.activeBans.WithLabelValues(old).Dec()
		}
		d.active[r.Prefix] = r.Jail
		d.metrics.activeBans.WithLabelValues(r.Jail).Inc()
		if h, ok := d.held[r.Prefix]; !ok || h.Until.Before(r.Until) {
			d.held[r.Prefix] = r
		}
	}
}

func (d *Daemon) noteGone(prefixes []netip.Prefix) {
	d.activeMu.Lock()
	defer d.activeMu.Unlock()
	for _, p := range prefixes {
		if j, ok := d.active[p]; ok {
			d.metrics.activeBans.WithLabelValues(j).Dec()
			delete(d.active, p)
		}
		delete(d.held, p)
	}
}

// loop runs the periodic work: jail ticks (challenge timeouts), expiry,
// retries, position saves.
func (d *Daemon) loop(ctx context.Context) {
	tick := time.NewTicker(d.opts.TickEvery)
	defer tick.Stop()
	save := time.NewTicker(d.opts.SaveEvery)
	defer save.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			d.tick(ctx)
			d.maybePrune(ctx)
		case <-save.C:
			if err := d.savePositions(ctx, true); err != nil && ctx.Err() == nil {
				d.log.Error("saving positions", "err", err)
			}
		}
	}
}

func (d *Daemon) tick(ctx context.Context) {
	now := d.now()
	for _, js := range d.jails {
		js.mu.Lock()
		decs := js.spec.Judge.Tick(now)
		js.mu.Unlock()
		for _, dec := range decs {
			if dec.Jail == "" {
				dec.Jail = js.spec.Name
			}
			select {
			case d.decisions <- pending{d: dec}:
			case <-ctx.Done():
				return
			}
		}
	}
	expired, err := d.opts.Store.ExpireBans(ctx, now)
	if err != nil {
		d.storeFailed("expiring bans", err)
		d.log.Error("expiring bans", "err", err)
	}
	if len(expired) > 0 {
		prefixes := make([]netip.Prefix, len(expired))
		for i, b := range expired {
			prefixes[i] = b.Prefix
		}
		// The kernel entries time out by themselves; Delete covers backends
		// and clocks that disagree by a little.
		d.fwMu.Lock()
		err := d.opts.Backend.Delete(ctx, prefixes)
		d.fwMu.Unlock()
		if err != nil {
			d.metrics.backendErrors.WithLabelValues("delete").Inc()
			d.log.Error("firewall: removing expired bans", "err", err)
		}
		d.noteGone(prefixes)
		d.log.Info("bans expired", "count", len(expired))
	}
	d.retryRefused(ctx, now)
}

func (d *Daemon) savePositions(ctx context.Context, _ bool) error {
	d.posMu.Lock()
	if !d.posDirty {
		d.posMu.Unlock()
		return nil
	}
	ps, blocked := d.safePositions()
	// Held back by a decision on its way to the store: look again later.
	d.posDirty = blocked
	d.posMu.Unlock()
	if len(ps) == 0 {
		return nil
	}
	if err := d.opts.Store.SavePositions(ctx, ps); err != nil {
		d.storeFailed("saving positions", err)
		d.posMu.Lock()
		d.posDirty = true
		d.posMu.Unlock()
		return err
	}
	if d.storeH.pending.Load() == 0 {
		d.storeWorked()
	}
	return nil
}

// reconcile makes the kernel match the store: every active ban is put back
// with its remaining time, kernel entries the store does not know go.
func (d *Daemon) reconcile(ctx context.Context) error {
	start := time.Now()
	d.fwMu.Lock()
	defer d.fwMu.Unlock()
	b := d.opts.Backend
	if err := b.Init(ctx); err != nil {
		d.metrics.backendErrors.WithLabelValues("init").Inc()
		return fmt.Errorf("firewall %s: %w", b.Name(), err)
	}
	now := d.now()
	active, err := d.opts.Store.ActiveBans(ctx, now)
	if err != nil {
		return err
	}
	var restore []firewall.Ban
	var refused []netip.Prefix
	want := map[netip.Prefix]bool{}
	var rows []store.Ban
	for _, ban := range active {
		if entry, hit := d.opts.Allowed(ban.Prefix); hit {
			d.log.Warn("stored ban dropped: now allowlisted", "prefix", ban.Prefix, "allowlist", entry)
			refused = append(refused, ban.Prefix)
			continue
		}
		want[ban.Prefix] = true
		restore = append(restore, firewall.Ban{Prefix: ban.Prefix, Timeout: ban.Remaining(now)})
		rows = append(rows, ban)
	}
	if len(refused) > 0 {
		if err := d.opts.Store.RemoveBans(ctx, refused); err != nil {
			return err
		}
	}
	kernel, err := b.List(ctx)
	if err != nil {
		d.metrics.backendErrors.WithLabelValues("list").Inc()
		return fmt.Errorf("firewall %s: listing bans: %w", b.Name(), err)
	}
	var stale []netip.Prefix
	var adopted []store.Ban
	recovered := d.opts.Store.RecoveredFrom()
	for _, k := range kernel {
		if want[k.Prefix.Masked()] {
			continue
		}
		if recovered != "" && k.Timeout > 0 {
			if _, hit := d.opts.Allowed(k.Prefix.Masked()); !hit {
				// The store was lost: the kernel's entries are the
				// bans there are. Adopted with their remaining time.
				pfx := k.Prefix.Masked()
				adopted = append(adopted, store.Ban{Prefix: pfx, Addr: pfx.Addr(), Jail: "recovered",
					Reason: "adopted from the kernel: the store was corrupt", Since: now, Until: now.Add(k.Timeout), Count: 1})
				want[pfx] = true
				continue
			}
		}
		stale = append(stale, k.Prefix)
	}
	if recovered != "" {
		d.log.Error("STORE WAS CORRUPT: moved aside, started with a fresh one; active bans rebuilt from the kernel (ban history and log positions are lost)",
			"moved_to", recovered, "corruption", d.opts.Store.CorruptError(), "adopted_from_kernel", len(adopted))
		if len(adopted) > 0 {
			if err := d.opts.Store.AddBans(ctx, adopted); err != nil {
				return fmt.Errorf("storing the %d bans adopted from the kernel: %w", len(adopted), err)
			}
		}
	}
	if len(stale) > 0 {
		if err := b.Delete(ctx, stale); err != nil {
			d.metrics.backendErrors.WithLabelValues("delete").Inc()
			return fmt.Errorf("firewall %s: removing unknown entries: %w", b.Name(), err)
		}
	}
	addStart := time.Now()
	if len(restore) > 0 {
		err := b.Add(ctx, restore)
		if refused, rest := d.splitRefused(err); len(refused) > 0 {
			err = rest
			rows = slices.DeleteFunc(rows, func(b store.Ban) bool { return refused[b.Prefix] })
		}
		if err != nil {
			d.metrics.backendErrors.WithLabelValues("add").Inc()
			return fmt.Errorf("firewall %s: restoring %d bans: %w", b.Name(), len(restore), err)
		}
	}
	rows = append(rows, adopted...)
	d.activeMu.Lock()
	for _, r := range rows {
		d.active[r.Prefix] = r.Jail
		d.held[r.Prefix] = r
		d.metrics.activeBans.WithLabelValues(r.Jail).Inc()
	}
	d.activeMu.Unlock()
	d.markBanned(rows)
	d.reconciled()
	d.log.Info("kernel reconciled with the store", "restored", len(restore), "removed_unknown", len(stale),
		"dropped_allowlisted", len(refused), "kernel_add", time.Since(addStart).Round(time.Microsecond),
		"took", time.Since(start).Round(time.Microsecond))
	return nil
}

// banMarker is a Judge that can be told of a ban made elsewhere (restored
// from the store, by hand), so that it does not decide the address again
// while the ban lasts (which would renew it and raise its count).
type banMarker interface {
	MarkBanned(addr netip.Addr, until time.Time, banCount int)
}

// markBanned tells every jail of bans it did not decide itself.
func (d *Daemon) markBanned(rows []store.Ban) {
	for _, js := range d.jails {
		m, ok := js.spec.Judge.(banMarker)
		if !ok {
			continue
		}
		js.mu.Lock()
		for _, r := range rows {
			m.MarkBanned(r.Addr, r.Until, r.Count)
		}
		js.mu.Unlock()
	}
}

// BanInfo is one active ban as the control socket reports it. A permanent
// ban has Permanent set, Until store.Forever (2262-04-11T23:47:16Z) and
// Remaining -1.
type BanInfo struct {
	Addr      string    `json:"addr"`
	Prefix    string    `json:"prefix"`
	Jail      string    `json:"jail"`
	Reason    string    `json:"reason"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	Remaining float64   `json:"remaining_seconds"`
	Permanent bool      `json:"permanent"`
	Count     int       `json:"count"`
	// Kept (answer to a ban) is set when a ban already in force ends
	// later than the one asked for: it stays, and this is it.
	Kept bool `json:"kept,omitempty"`
}

func banInfo(b store.Ban, now time.Time) BanInfo {
	addr := b.Addr
	if !addr.IsValid() {
		addr = b.Prefix.Addr()
	}
	bi := BanInfo{Addr: addr.String(), Prefix: b.Prefix.String(), Jail: b.Jail, Reason: b.Reason,
		Since: b.Since.UTC(), Until: b.Until.UTC(), Remaining: b.Remaining(now).Seconds(), Count: b.Count}
	if b.Permanent() {
		bi.Permanent, bi.Remaining = true, -1
	}
	return bi
}

// Bans lists the active bans.
func (d *Daemon) Bans(ctx context.Context) ([]BanInfo, error) {
	now := d.now()
	bans, err := d.opts.Store.ActiveBans(ctx, now)
	if err != nil {
		return nil, err
	}
	out := make([]BanInfo, len(bans))
	for i, b := range bans {
		out[i] = banInfo(b, now)
	}
	return out, nil
}

// ErrAllowlisted is returned (wrapped) for a manual ban of an allowlisted
// (or special) address: the firewall gate's own sentinel, so one errors.Is
// serves whichever of the daemon and the gate refused it.
var ErrAllowlisted = firewall.ErrAllowlisted

type allowlistedError struct{ pfx, entry netip.Prefix }

func (e allowlistedError) Error() string {
	return fmt.Sprintf("refused: %s is in the allowlist (entry %s), which pbxguard never bans; to ban it, take it out of allowlist: in the config and restart", e.pfx, e.entry)
}

func (e allowlistedError) Is(target error) bool { return target == ErrAllowlisted }

// ErrUnknownJail is returned (wrapped) by Ban for a jail name that is
// neither a configured jail, "manual" nor "fraud": a usage error.
var ErrUnknownJail = errors.New("unknown jail")

// FraudJail is the jail name of fraud containment's bans; ManualJail the
// default of bans by hand.
const (
	FraudJail  = "fraud"
	ManualJail = "manual"
)

// JailNames are the names a ban can be filed under: the configured jails,
// then manual and fraud.
func (d *Daemon) JailNames() []string {
	names := make([]string, 0, len(d.jails)+2)
	for _, js := range d.jails {
		names = append(names, js.spec.Name)
	}
	sort.Strings(names)
	return append(names, ManualJail, FraudJail)
}

func (d *Daemon) checkJail(jail string) error {
	if _, ok := d.byName[jail]; ok || jail == ManualJail || jail == FraudJail {
		return nil
	}
	return fmt.Errorf("%w %q: a ban is filed under a configured jail or manual (valid: %s)",
		ErrUnknownJail, jail, strings.Join(d.JailNames(), ", "))
}

// Ban bans a prefix by hand (or for another part of pbxguard, e.g. fraud
// containment, jail "fraud"). dur 0 is the jail's bantime (1h for manual),
// store.Permanent a ban that never ends. An allowlisted prefix is refused
// with the reason, an unknown jail with the valid names (ErrUnknownJail).
// A ban in force that ends later than this one stays as it is (the
// answer shows it, with Kept set): only Unban shortens a ban.
func (d *Daemon) Ban(ctx context.Context, pfx netip.Prefix, dur time.Duration, jail, reason string) (BanInfo, error) {
	if !pfx.IsValid() {
		return BanInfo{}, errors.New("invalid address or prefix")
	}
	pfx = normPrefix(pfx)
	if jail == "" {
		jail = ManualJail
	}
	if err := d.checkJail(jail); err != nil {
		return BanInfo{}, err
	}
	if entry, hit := d.opts.Allowed(pfx); hit {
		return BanInfo{}, allowlistedError{pfx: pfx, entry: entry}
	}
	if firewall.Special(pfx) { // refused on purpose, like the allowlist (exit 1)
		return BanInfo{}, fmt.Errorf("refused: %s covers an unspecified, broadcast or multicast address, never the source of an attack: %w", pfx, ErrAllowlisted)
	}
	if dur <= 0 {
		dur = d.opts.ManualBanTime
		if js, ok := d.byName[jail]; ok && js.spec.BanTime > 0 {
			dur = js.spec.BanTime
		}
	}
	if reason == "" {
		reason = "manual ban"
	}
	now := d.now()
	row := store.Ban{Prefix: pfx, Addr: pfx.Addr(), Jail: jail, Reason: reason, Since: now,
		Until: decisionUntil(Decision{Duration: dur}, now), Count: d.opts.Store.PriorBans(pfx.Addr()) + 1}
	d.fwMu.Lock()
	eff, kept := d.extend(row)
	err := d.addOrHealLocked(ctx, []firewall.Ban{{Prefix: pfx, Timeout: eff.Remaining(now)}})
	d.fwMu.Unlock()
	if refused, rest := d.splitRefused(err); refused[pfx] {
		d.forgetHeld(refused)
		entry, _ := d.opts.Allowed(pfx)
		if !entry.IsValid() {
			entry = pfx
		}
		return BanInfo{}, allowlistedError{pfx: pfx, entry: entry}
	} else if len(refused) > 0 {
		err = rest
	}
	if errors.Is(err, firewall.ErrUnsupportedPrefix) {
		d.forgetHeld(map[netip.Prefix]bool{pfx: true})
		return BanInfo{}, fmt.Errorf("firewall %s holds single addresses only: ban %s, or give a jail ipv6_prefix: 64 (or any value below 128) to enable prefix bans", d.opts.Backend.Name(), pfx.Addr())
	}
	if err != nil {
		d.metrics.backendErrors.WithLabelValues("add").Inc()
		if !kept {
			d.unhold(ctx, pfx, now)
		}
		return BanInfo{}, fmt.Errorf("firewall %s: %w", d.opts.Backend.Name(), err)
	}
	// The store keeps the longer ban too, and records this one in the
	// history.
	if err := d.opts.Store.AddBans(ctx, []store.Ban{row}); err != nil {
		return BanInfo{}, err
	}
	d.noteActive([]store.Ban{eff})
	d.markBanned([]store.Ban{eff})
	if !kept {
		d.shareBans(ctx, []store.Ban{eff})
	}
	what := "banned by hand"
	switch {
	case jail == FraudJail:
		what = "banned for toll fraud"
	case jail != ManualJail:
		what = "banned by hand into jail " + jail
	}
	if kept {
		d.log.Info(what+": a longer ban is in force and stays", "jail", jail, "prefix", pfx, "asked_until", untilText(row),
			"reason", reason, "in_force_until", untilText(eff), "in_force_jail", eff.Jail, "in_force_reason", eff.Reason)
	} else {
		d.log.Info(what, "jail", jail, "prefix", pfx, "until", untilText(eff), "reason", reason)
	}
	bi := banInfo(eff, now)
	bi.Kept = kept
	return bi, nil
}

// Unban removes every active ban that covers pfx (an address unbans the
// /64 that holds it too) and makes the jails forget the address.
func (d *Daemon) Unban(ctx context.Context, pfx netip.Prefix) ([]BanInfo, error) {
	now := d.now()
	bans, err := d.activeBans(ctx, now)
	if err != nil {
		return nil, err
	}
	var gone []netip.Prefix
	var out []BanInfo
	for _, b := range bans {
		if b.Prefix.Overlaps(pfx) {
			gone = append(gone, b.Prefix)
			out = append(out, banInfo(b, now))
		}
	}
	// The prefix itself goes too, in case the kernel holds an entry the
	// store does not know (added by hand): an absent entry is not an error
	// for Backend.Delete.
	del := gone
	if self := normPrefix(pfx); !slices.Contains(gone, self) {
		del = append(slices.Clone(gone), self)
	}
	d.fwMu.Lock()
	err = d.opts.Backend.Delete(ctx, del)
	if errors.Is(err, firewall.ErrUnsupportedPrefix) && len(del) > len(gone) && pfx.Bits() < pfx.Addr().BitLen() {
		// A backend of single addresses cannot hold that prefix: nothing
		// to remove but the stored bans.
		err = nil
		if len(gone) > 0 {
			err = d.opts.Backend.Delete(ctx, gone)
		}
	}
	if err != nil {
		d.fwMu.Unlock()
		d.metrics.backendErrors.WithLabelValues("delete").Inc()
		return nil, fmt.Errorf("firewall %s: %w", d.opts.Backend.Name(), err)
	}
	// The store too before fwMu goes: a heal (heal.go) between the two
	// would put the unbanned prefix back from the store.
	err = d.opts.Store.RemoveBans(ctx, gone)
	d.fwMu.Unlock()
	if err != nil {
		return nil, err
	}
	d.noteGone(gone)
	d.shareUnbans(ctx, out)
	for _, js := range d.jails {
		js.mu.Lock()
		js.spec.Judge.Forget(pfx.Addr())
		for _, b := range out {
			if a, err := netip.ParseAddr(b.Addr); err == nil {
				js.spec.Judge.Forget(a)
			}
		}
		js.mu.Unlock()
	}
	d.log.Info("unbanned", "prefix", pfx, "removed", len(gone))
	return out, nil
}

// activeBans is what an unban lifts: the store's active bans, once the
// bans queued for it are written (so that a queued write cannot bring an
// unbanned prefix back), and the bans in force not stored yet (a store
// that fails).
func (d *Daemon) activeBans(ctx context.Context, now time.Time) ([]store.Ban, error) {
	if d.running.Load() {
		func() {
			// At shutdown the store queue closes while the control socket
			// may still answer: then there is nothing left to wait for.
			defer func() { _ = recover() }()
			d.flushStore(ctx)
		}()
	}
	bans, err := d.opts.Store.ActiveBans(ctx, now)
	if err != nil {
		return nil, err
	}
	have := make(map[netip.Prefix]bool, len(bans))
	for _, b := range bans {
		have[b.Prefix] = true
	}
	d.activeMu.Lock()
	for p, b := range d.held {
		if !have[p] && b.Until.After(now) {
			bans = append(bans, b)
		}
	}
	d.activeMu.Unlock()
	return bans, nil
}

// UnbanAll removes every active ban, or (jail != "") every active ban of
// that jail, from the kernel and the store, and makes the jails forget the
// addresses. It returns the bans removed.
func (d *Daemon) UnbanAll(ctx context.Context, jail string) ([]BanInfo, error) {
	if jail != "" {
		if err := d.checkJail(jail); err != nil {
			return nil, err
		}
	}
	now := d.now()
	bans, err := d.activeBans(ctx, now)
	if err != nil {
		return nil, err
	}
	var gone []netip.Prefix
	out := []BanInfo{}
	for _, b := range bans {
		if jail == "" || b.Jail == jail {
			gone = append(gone, b.Prefix)
			out = append(out, banInfo(b, now))
		}
	}
	if len(gone) == 0 {
		return out, nil
	}
	d.fwMu.Lock()
	err = d.opts.Backend.Delete(ctx, gone)
	if err != nil {
		d.fwMu.Unlock()
		d.metrics.backendErrors.WithLabelValues("delete").Inc()
		return nil, fmt.Errorf("firewall %s: %w", d.opts.Backend.Name(), err)
	}
	err = d.opts.Store.RemoveBans(ctx, gone)
	d.fwMu.Unlock()
	if err != nil {
		return nil, err
	}
	d.noteGone(gone)
	for _, js := range d.jails {
		js.mu.Lock()
		for _, b := range bans {
			if jail == "" || b.Jail == jail {
				js.spec.Judge.Forget(b.Addr)
			}
		}
		js.mu.Unlock()
	}
	scope := "every jail"
	if jail != "" {
		scope = "jail " + jail
	}
	d.log.Info("unbanned all", "scope", scope, "removed", len(gone))
	return out, nil
}

// Status is what `pbxguard status` shows.
type Status struct {
	Version    string         `json:"version,omitempty"`
	Started    time.Time      `json:"started"`
	Uptime     float64        `json:"uptime_seconds"`
	Backend    string         `json:"backend"`
	ActiveBans int            `json:"active_bans"`
	Jails      []JailStatus   `json:"jails"`
	Latency    LatencySummary `json:"ban_latency"`
	Audit      *AuditStatus   `json:"audit,omitempty"`
	Kernel     KernelStatus   `json:"kernel"`
	Store      StoreStatus    `json:"store"`
	Workers    []WorkerStatus `json:"workers,omitempty"` // the AMI connection: up or down, since when, why
}

// JailStatus is one jail in Status.
type JailStatus struct {
	Name    string   `json:"name"`
	Sources []string `json:"sources"`
	// SourceStates says, per source, whether it reads (ok), waits for
	// its file (waiting) or fails (failing: a FIFO at the path, no
	// permission, journalctl gone), since when, and why.
	SourceStates []SourceStatus `json:"source_states"`
	Lines        uint64         `json:"lines"`
	Events       uint64         `json:"events"`
	ActiveBans   int            `json:"active_bans"`
}

// Status reports the daemon's state.
func (d *Daemon) Status() Status {
	now := d.now()
	st := Status{Version: d.opts.Version, Started: d.started.UTC(), Uptime: now.Sub(d.started).Seconds(),
		Backend: d.opts.Backend.Name(), Latency: d.metrics.LatencySummary(), Audit: d.opts.Audit, Kernel: d.kernel.get(),
		Store: d.storeStatus()}
	perJail := map[string]int{}
	d.activeMu.Lock()
	st.ActiveBans = len(d.active)
	for _, j := range d.active {
		perJail[j]++
	}
	d.activeMu.Unlock()
	for _, js := range d.jails {
		js2 := JailStatus{Name: js.spec.Name, ActiveBans: perJail[js.spec.Name], Lines: js.lines.Load(), Events: js.events.Load()}
		for i, sp := range js.spec.Sources {
			js2.Sources = append(js2.Sources, sp.Name)
			js2.SourceStates = append(js2.SourceStates, js.srcs[i].status())
		}
		st.Jails = append(st.Jails, js2)
	}
	sort.Slice(st.Jails, func(a, b int) bool { return st.Jails[a].Name < st.Jails[b].Name })
	st.Workers = d.workerStatuses()
	return st
}
