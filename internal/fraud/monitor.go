package fraud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/event"
)

// Monitor glues the call tracker, the engine and the responder. Its
// methods are safe for concurrent use.
//
// Findings are computed under the monitor's lock, which is held for
// nothing slower than that: no AMI round trip, no ban, no alert. Once
// Start (or Run) has started the monitor's worker, the responses run on
// it behind a bounded queue (QueueSize; a full queue drops the response,
// counted in Dropped and logged), so that a slow mail server or a dead
// AMI never stalls the caller — the daemon's event tap runs on every log
// source's goroutine and must never block. Before Start the responses run
// inline and the Handle methods return the incidents (tests, one-shot use).
type Monitor struct {
	mu        sync.Mutex
	feed      sync.Mutex // one AMI/CEL message at a time, in order
	Tracker   *calls.Tracker
	Engine    *Engine
	Responder *Responder
	// OnIncident, when set, sees every incident after it was handled (on
	// the worker once started).
	OnIncident func(*Incident)
	// AddrLookup finds a call's source address when the tracker has none
	// (an endpoint identified by IP raises no SuccessfulAuth): e.g. Getvar
	// CHANNEL(pjsip,remote_addr). Nil: none. It runs outside the lock.
	AddrLookup func(ctx context.Context, channel string) netip.Addr
	// Now is the clock of Run (nil: time.Now); EventTime makes Run use the
	// times the messages carry instead (replays).
	Now       func() time.Time
	EventTime bool
	// LockCheck reports whether ext is still locked in the AstDB. When a
	// call of an extension it contained starts, the monitor asks (on the
	// worker): an administrator who ran "pbxguard incident unlock"
	// (another process) deleted the key; the extension is then released
	// and the call judged afresh, as every later one. Nil: never asked.
	LockCheck func(ctx context.Context, ext string) (bool, error)
	// QueueSize bounds the responses waiting for the worker (0: 256).
	QueueSize int
	Log       *slog.Logger

	jobs     chan batch
	started  bool // under mu
	dropped  atomic.Uint64
	inflight sync.WaitGroup // batches queued and not yet processed
	watch    hangupWatch
}

// batch is the findings of one update, with the live calls to hang up
// (snapshot taken with the findings).
type batch struct {
	u     calls.Update
	now   time.Time
	fs    []Finding
	lives [][]calls.Call
}

// View runs fn with the engine under the monitor's lock: a pre-call
// decider reads an extension's state there (Contained, Addrs,
// Established, Hostile, Recent) consistently with the call stream.
func (m *Monitor) View(fn func(e *Engine)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fn(m.Engine)
}

// Dropped returns the number of responses dropped because the queue was full.
func (m *Monitor) Dropped() uint64 { return m.dropped.Load() }

// Start starts the response worker; it stops when ctx ends (responses
// still queued then are dropped and counted). The returned function waits
// for the worker to finish. Starting twice starts one worker.
func (m *Monitor) Start(ctx context.Context) (wait func()) {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return func() {}
	}
	n := m.QueueSize
	if n <= 0 {
		n = 256
	}
	m.jobs = make(chan batch, n)
	m.started = true
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				for {
					select {
					case <-m.jobs:
						m.dropped.Add(1)
						m.inflight.Done()
					default:
						return
					}
				}
			case b := <-m.jobs:
				m.process(ctx, b)
				m.inflight.Done()
			}
		}
	}()
	return func() { <-done }
}

func (m *Monitor) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	if m.Responder != nil {
		return m.Responder.log()
	}
	return slog.New(slog.DiscardHandler)
}

// judge computes the findings of u at now and the live calls each would
// hang up. Called with m.mu held.
func (m *Monitor) judge(u calls.Update, now time.Time) batch {
	b := batch{u: u, now: now, fs: m.Engine.Observe(u, now)}
	b.lives = m.lives(b.fs)
	return b
}

func (m *Monitor) lives(fs []Finding) [][]calls.Call {
	out := make([][]calls.Call, len(fs))
	for i, f := range fs {
		switch {
		case f.Rule == RuleLocked:
			out[i] = []calls.Call{f.Call} // only the new call: the others were hung up already
		case f.Response.Hangup && f.Extension != "":
			out[i] = m.Tracker.Live(f.Extension)
		}
	}
	return out
}

// dispatch hands b to the worker (never waiting) or, before Start,
// responds inline. Called without m.mu.
func (m *Monitor) dispatch(ctx context.Context, b batch) []*Incident {
	if len(b.fs) == 0 {
		return nil
	}
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		return m.process(ctx, b)
	}
	m.inflight.Add(1)
	select {
	case m.jobs <- b:
	default:
		m.inflight.Done()
		for _, f := range b.fs {
			m.lockDone(f)
		}
		n := m.dropped.Add(1)
		m.log().Error("fraud: response queue full, response dropped (the responder is stuck: check AMI, the daemon, the alert targets)",
			"rule", b.fs[0].Rule, "extension", b.fs[0].Extension, "dropped_total", n)
	}
	return nil
}

// lockDone ends the wait for f's lock (Engine.LockPending): its response
// ran, or never will.
func (m *Monitor) lockDone(f Finding) {
	if f.Response.Lock {
		m.mu.Lock()
		m.Engine.LockDone(f.Extension)
		m.mu.Unlock()
	}
}

// process carries out a batch's responses.
func (m *Monitor) process(ctx context.Context, b batch) []*Incident {
	for _, f := range b.fs {
		if f.Rule != RuleLocked || m.LockCheck == nil || (m.Responder != nil && m.Responder.DryRun) {
			continue
		}
		m.mu.Lock()
		pending := m.Engine.LockPending(f.Extension)
		m.mu.Unlock()
		if pending {
			break // our own lock is still on its way: no unlock by hand
		}
		if locked, err := m.LockCheck(ctx, f.Extension); err == nil && !locked {
			// Unlocked by hand: forget the containment and judge this
			// call afresh (a new incident locks the extension again).
			m.mu.Lock()
			m.Engine.Release(f.Extension)
			b = m.judge(b.u, b.now)
			m.mu.Unlock()
			m.log().Info("fraud: extension unlocked by hand; judged afresh", "extension", f.Extension)
		}
		break
	}
	out := make([]*Incident, 0, len(b.fs))
	for i, f := range b.fs {
		if m.Responder == nil {
			m.lockDone(f)
			out = append(out, &Incident{Time: f.Time, Rule: f.Rule, Severity: f.Severity, Score: f.Score,
				Extension: f.Extension, Addrs: f.Addrs, Reason: f.Reason, Evidence: f.Evidence, Spared: f.Spared})
			continue
		}
		inc := m.Responder.Respond(ctx, f, b.lives[i])
		m.lockDone(f)
		if m.OnIncident != nil {
			m.OnIncident(inc)
		}
		out = append(out, inc)
	}
	return out
}

// HandleMessage feeds one AMI message received at now. A Hangup event also
// tells a hang-up waiting for that channel that it is gone.
func (m *Monitor) HandleMessage(ctx context.Context, msg *ami.Message, now time.Time) []*Incident {
	m.feed.Lock()
	defer m.feed.Unlock()
	switch msg.Event() {
	case "Hangup":
		m.watch.gone(msg.Get("Channel"))
	case "InvalidPassword", "ChallengeResponseFailed", "InvalidAccountID", "FailedACL":
		// A hostile signal from the address (docs/fraud.md: the second
		// signal that lets a response ban an established address).
		var ev event.Event
		if ami.SecurityEvent(msg, &ev) && ev.Addr.IsValid() {
			m.mu.Lock()
			m.Engine.NoteHostile(ev.Addr, now)
			m.mu.Unlock()
		}
	}
	m.mu.Lock()
	u, ok := m.Tracker.Handle(msg, now)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	if u.Kind == calls.CallStarted && !u.Call.SourceAddr.IsValid() && m.AddrLookup != nil {
		if a := m.AddrLookup(ctx, u.Call.Channel); a.IsValid() {
			u.Call.SourceAddr = a
			m.mu.Lock()
			m.Tracker.SetEndpointAddr(u.Call.Extension, a, now)
			m.mu.Unlock()
		}
	}
	m.mu.Lock()
	b := m.judge(u, now)
	m.mu.Unlock()
	return m.dispatch(ctx, b)
}

// HandleCDR feeds one CDR CSV record (written at hang-up) at now. Rows of
// calls AMI already reported are skipped, so both sources can run.
func (m *Monitor) HandleCDR(ctx context.Context, rec []string, loc *time.Location, now time.Time) ([]*Incident, error) {
	m.mu.Lock()
	u, ok, err := m.Tracker.HandleCDR(rec, loc)
	if err != nil || !ok {
		m.mu.Unlock()
		return nil, err
	}
	b := m.judge(u, now)
	m.mu.Unlock()
	return m.dispatch(ctx, b), nil
}

// HandleCDRLine feeds one Master.csv line, as a file follower hands it on.
func (m *Monitor) HandleCDRLine(ctx context.Context, line string, loc *time.Location, now time.Time) ([]*Incident, error) {
	rec, err := calls.SplitCDRLine(line)
	if err != nil {
		return nil, err
	}
	return m.HandleCDR(ctx, rec, loc, now)
}

// HandleEvent feeds one log-detector event (CallRejected to an
// international number, AuthSuccess for an extension's address, and
// AuthFailure/ACLViolation/UnknownAccount as hostile signals). It never
// waits for a response: the daemon calls it from every log source's
// goroutine.
func (m *Monitor) HandleEvent(ctx context.Context, ev event.Event, now time.Time) []*Incident {
	switch ev.Kind {
	case event.AuthSuccess:
		switch ev.Service {
		case event.ServicePJSIP, event.ServiceSIP, event.ServiceIAX2, event.ServiceUnknown:
		default:
			return nil // an AMI or SSH login names no extension
		}
		if ev.Account == "" || !ev.Addr.IsValid() {
			return nil
		}
		m.mu.Lock()
		m.Tracker.SetEndpointAddr(ev.Account, ev.Addr, now)
		b := m.judge(calls.Update{Kind: calls.EndpointAuth, Call: calls.Call{Extension: ev.Account, SourceAddr: ev.Addr, Start: now}}, now)
		m.mu.Unlock()
		return m.dispatch(ctx, b)
	case event.AuthFailure, event.ACLViolation, event.UnknownAccount:
		if ev.Addr.IsValid() {
			m.mu.Lock()
			m.Engine.NoteHostile(ev.Addr, now)
			m.mu.Unlock()
		}
		return nil
	}
	m.mu.Lock()
	b := batch{now: now, fs: m.Engine.ObserveEvent(ev, now)}
	b.lives = m.lives(b.fs)
	m.mu.Unlock()
	return m.dispatch(ctx, b)
}

// HandleUpdate feeds one call update.
func (m *Monitor) HandleUpdate(ctx context.Context, u calls.Update, now time.Time) []*Incident {
	m.mu.Lock()
	b := m.judge(u, now)
	m.mu.Unlock()
	return m.dispatch(ctx, b)
}

// hangupWatch tells hang-ups waiting for a channel that its Hangup event
// arrived.
type hangupWatch struct {
	mu sync.Mutex
	w  map[string][]chan struct{}
}

// Watch returns a channel closed when channel's Hangup event arrives, and
// a function to stop watching (AMIHanger.Watch).
func (h *hangupWatch) Watch(channel string) (<-chan struct{}, func()) {
	c := make(chan struct{})
	h.mu.Lock()
	if h.w == nil {
		h.w = map[string][]chan struct{}{}
	}
	h.w[channel] = append(h.w[channel], c)
	h.mu.Unlock()
	return c, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		ws := h.w[channel]
		for i, x := range ws {
			if x == c {
				h.w[channel] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(h.w[channel]) == 0 {
			delete(h.w, channel)
		}
	}
}

func (h *hangupWatch) gone(channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.w[channel] {
		close(c)
	}
	delete(h.w, channel)
}

// Deps are the edges a Monitor built from Settings acts through.
type Deps struct {
	// AMI is the manager connection (e.g. *ami.Client); nil: no hang-up,
	// no lock (recorded as errors).
	AMI AMIActions
	// Banner bans through the daemon (whose allowlist wins).
	Banner Banner
	// Recorder stores incidents (the daemon's store); nil with
	// Settings.IncidentLog set: a JSON-lines file there.
	Recorder IncidentRecorder
	Log      *slog.Logger
	Now      func() time.Time
}

// NewResponder builds the responder of the settings: the daemon's
// monitor and the CLI's "incident --contain" and "incident unlock" use it,
// so that the hang-up cause, pjsip_hangup, maintenance, ban_for, never_ban,
// dry_run, the alerts and the incident log are the same everywhere.
func NewResponder(s *Settings, d Deps) (*Responder, error) {
	r := &Responder{Banner: d.Banner, Alerters: s.Alerters(), Recorder: d.Recorder, DryRun: s.DryRun, BanFor: s.BanFor,
		NeverBan: s.Engine.NeverBan, Now: d.Now, Log: d.Log}
	if d.AMI != nil {
		r.Hanger = &AMIHanger{AMI: d.AMI, Cause: s.HangupCause, UsePJSIPHangup: s.PJSIPHangup, PJSIPCode: s.PJSIPHangupCode}
		r.Locker = &AMILocker{AMI: d.AMI, Maintenance: s.Maintenance, Now: d.Now}
	}
	var recs []IncidentRecorder
	if d.Recorder != nil {
		recs = append(recs, d.Recorder)
	}
	if s.IncidentLog != "" {
		fr, err := OpenFileRecorder(s.IncidentLog)
		if err != nil {
			return nil, err
		}
		recs = append(recs, fr)
	}
	switch len(recs) {
	case 1:
		r.Recorder = recs[0]
	case 2:
		r.Recorder = multiRecorder(recs)
	}
	return r, nil
}

// multiRecorder records in each recorder (the store and the incident log).
type multiRecorder []IncidentRecorder

func (m multiRecorder) RecordIncident(ctx context.Context, inc *Incident) error {
	var errs []error
	for _, r := range m {
		if err := r.RecordIncident(ctx, inc); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unlock undoes what containment did to ext: deletes the AstDB lock and,
// with maintenance configured, takes the endpoint out of PJSIP
// maintenance. Bans of the attacker's addresses stay (unban them by hand
// if one was wrong).
func (r *Responder) Unlock(ctx context.Context, ext string) error {
	if r.Locker == nil {
		return fmt.Errorf("unlock %s: %w (give the responder an AMI connection)", ext, ErrNotConfigured)
	}
	return r.Locker.Unlock(ctx, ext)
}

// NewMonitor builds tracker, engine and responder from the settings.
func NewMonitor(s *Settings, d Deps) (*Monitor, error) {
	nums, err := s.Normalizer()
	if err != nil {
		return nil, err
	}
	cfg := s.Engine
	eng, err := NewEngine(cfg, nums)
	if err != nil {
		return nil, err
	}
	r, err := NewResponder(s, d)
	if err != nil {
		return nil, err
	}
	m := &Monitor{Tracker: calls.NewTracker(calls.Config{}), Engine: eng, Responder: r, Now: d.Now, Log: d.Log}
	if h, ok := r.Hanger.(*AMIHanger); ok {
		h.Watch = m.watch.Watch // the Hangup events the monitor reads confirm hang-ups
	}
	if g, ok := d.AMI.(interface {
		Getvar(ctx context.Context, channel, variable string) (string, error)
	}); ok && d.AMI != nil {
		trunk := map[string]bool{}
		for _, x := range cfg.IgnoreExtensions {
			trunk[x] = true
		}
		var refused atomic.Bool
		m.AddrLookup = func(ctx context.Context, channel string) netip.Addr {
			if !strings.HasPrefix(channel, "PJSIP/") || refused.Load() {
				return netip.Addr{}
			}
			// "PJSIP/carrier-00000060": a trunk's calls are never judged,
			// so its address is not worth an AMI round trip.
			if ep := strings.TrimPrefix(channel, "PJSIP/"); trunk[ep[:max(strings.LastIndexByte(ep, '-'), 0)]] {
				return netip.Addr{}
			}
			v, err := g.Getvar(ctx, channel, "CHANNEL(pjsip,remote_addr)")
			var ae *ami.ActionError
			if errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "permission denied") && !refused.Swap(true) {
				// Never poll with an action Asterisk refuses: say why once.
				m.log().Error("fraud: Getvar refused: calls' addresses come from SuccessfulAuth events only (give the AMI user write = call, see docs/fraud.md)", "err", err)
			}
			if err != nil {
				return netip.Addr{}
			}
			if ap, err := netip.ParseAddrPort(strings.TrimSpace(v)); err == nil {
				return ap.Addr().Unmap()
			}
			a, _ := netip.ParseAddr(strings.Trim(strings.TrimSpace(v), "[]"))
			return a.Unmap()
		}
	}
	if g, ok := d.AMI.(interface {
		DBGet(ctx context.Context, family, key string) (string, error)
	}); ok {
		m.LockCheck = func(ctx context.Context, ext string) (bool, error) {
			_, err := g.DBGet(ctx, LockFamily, ext)
			if errors.Is(err, ami.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		}
	}
	return m, nil
}

// Run starts the response worker (Start) and feeds the monitor from an
// AMI event channel (the client's Events) until ctx ends or the channel
// closes; then it waits for the worker. When the channel closes, the
// responses already queued are carried out first. The time of each event
// is Now() (or, with EventTime, the time the message itself carries when
// it has one, never going backwards: for replays).
func (m *Monitor) Run(ctx context.Context, events <-chan *ami.Message) error {
	wctx, cancel := context.WithCancel(ctx)
	wait := m.Start(wctx)
	defer func() {
		cancel()
		wait()
	}()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg, ok := <-events:
			if !ok {
				m.inflight.Wait()
				return nil
			}
			now := m.now()
			if m.EventTime {
				if t, ok := calls.MessageTime(msg, time.Local); ok {
					now = t
				} else if !last.IsZero() {
					now = last
				}
				if now.Before(last) {
					now = last
				}
				last = now
			}
			m.HandleMessage(ctx, msg, now)
		}
	}
}

func (m *Monitor) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Stats returns the tracker's counters.
func (m *Monitor) Stats() calls.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Tracker.Stats()
}

// HandleCELLine feeds one line of the CEL custom CSV (the legacy mapping,
// see calls.CELMessage): call starts are seen when they happen, so this
// log source contains as fast as AMI. The time is the event's own.
func (m *Monitor) HandleCELLine(ctx context.Context, line string) ([]*Incident, error) {
	rec, err := calls.SplitCDRLine(line)
	if err != nil {
		return nil, err
	}
	msg, at, ok, err := calls.CELMessage(rec)
	if err != nil || !ok {
		return nil, err
	}
	return m.HandleMessage(ctx, msg, at), nil
}
