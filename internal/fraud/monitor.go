package fraud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/event"
)

// Monitor glues the call tracker, the engine and the responder. Its
// methods are safe for concurrent use (one lock: AMI events, CDR lines and
// log events are handled one at a time, responses included).
type Monitor struct {
	mu        sync.Mutex
	Tracker   *calls.Tracker
	Engine    *Engine
	Responder *Responder
	// OnIncident, when set, sees every incident after it was handled.
	OnIncident func(*Incident)
	// AddrLookup finds a call's source address when the tracker has none
	// (an endpoint identified by IP raises no SuccessfulAuth): e.g. Getvar
	// CHANNEL(pjsip,remote_addr). Nil: none.
	AddrLookup func(ctx context.Context, channel string) netip.Addr
	// Now is the clock of Run (nil: time.Now); EventTime makes Run use the
	// times the messages carry instead (replays).
	Now       func() time.Time
	EventTime bool
	// LockCheck reports whether ext is still locked in the AstDB. Before
	// hanging up a call of an extension it contained, the monitor asks: an
	// administrator who ran "pbxguard incident unlock" (another process)
	// deleted the key, and the extension is then released. Nil: never asked.
	LockCheck func(ctx context.Context, ext string) (bool, error)
}

// HandleMessage feeds one AMI message received at now.
func (m *Monitor) HandleMessage(ctx context.Context, msg *ami.Message, now time.Time) []*Incident {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.Tracker.Handle(msg, now)
	if !ok {
		return nil
	}
	if u.Kind == calls.CallStarted && !u.Call.SourceAddr.IsValid() && m.AddrLookup != nil {
		if a := m.AddrLookup(ctx, u.Call.Channel); a.IsValid() {
			u.Call.SourceAddr = a
			m.Tracker.SetEndpointAddr(u.Call.Extension, a, now)
		}
	}
	return m.respond(ctx, m.Engine.Observe(u, now))
}

// HandleCDR feeds one CDR CSV record (written at hang-up) at now. Rows of
// calls AMI already reported are skipped, so both sources can run.
func (m *Monitor) HandleCDR(ctx context.Context, rec []string, loc *time.Location, now time.Time) ([]*Incident, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok, err := m.Tracker.HandleCDR(rec, loc)
	if err != nil || !ok {
		return nil, err
	}
	return m.respond(ctx, m.Engine.Observe(u, now)), nil
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
// international number, AuthSuccess for an extension's address).
func (m *Monitor) HandleEvent(ctx context.Context, ev event.Event, now time.Time) []*Incident {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ev.Kind == event.AuthSuccess {
		switch ev.Service {
		case event.ServicePJSIP, event.ServiceSIP, event.ServiceIAX2, event.ServiceUnknown:
		default:
			return nil // an AMI or SSH login names no extension
		}
	}
	if ev.Kind == event.AuthSuccess && ev.Account != "" && ev.Addr.IsValid() {
		m.Tracker.SetEndpointAddr(ev.Account, ev.Addr, now)
		return m.respond(ctx, m.Engine.Observe(calls.Update{Kind: calls.EndpointAuth,
			Call: calls.Call{Extension: ev.Account, SourceAddr: ev.Addr, Start: now}}, now))
	}
	return m.respond(ctx, m.Engine.ObserveEvent(ev, now))
}

// HandleUpdate feeds one call update.
func (m *Monitor) HandleUpdate(ctx context.Context, u calls.Update, now time.Time) []*Incident {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.respond(ctx, m.Engine.Observe(u, now))
}

func (m *Monitor) respond(ctx context.Context, fs []Finding) []*Incident {
	if len(fs) == 0 {
		return nil
	}
	out := make([]*Incident, 0, len(fs))
	for _, f := range fs {
		if f.Rule == RuleLocked && m.LockCheck != nil && (m.Responder == nil || !m.Responder.DryRun) {
			if locked, err := m.LockCheck(ctx, f.Extension); err == nil && !locked {
				m.Engine.Release(f.Extension) // unlocked by hand: judge it afresh from now on
				continue
			}
		}
		if m.Responder == nil {
			out = append(out, &Incident{Time: f.Time, Rule: f.Rule, Severity: f.Severity, Score: f.Score,
				Extension: f.Extension, Addrs: f.Addrs, Reason: f.Reason, Evidence: f.Evidence})
			continue
		}
		var live []calls.Call
		switch {
		case f.Rule == RuleLocked:
			live = []calls.Call{f.Call} // only the new call: the others were hung up already
		case f.Response.Hangup && f.Extension != "":
			live = m.Tracker.Live(f.Extension)
		}
		inc := m.Responder.Respond(ctx, f, live)
		if m.OnIncident != nil {
			m.OnIncident(inc)
		}
		out = append(out, inc)
	}
	return out
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
	m := &Monitor{Tracker: calls.NewTracker(calls.Config{}), Engine: eng, Responder: r, Now: d.Now}
	if g, ok := d.AMI.(interface {
		Getvar(ctx context.Context, channel, variable string) (string, error)
	}); ok && d.AMI != nil {
		trunk := map[string]bool{}
		for _, x := range cfg.IgnoreExtensions {
			trunk[x] = true
		}
		m.AddrLookup = func(ctx context.Context, channel string) netip.Addr {
			if !strings.HasPrefix(channel, "PJSIP/") {
				return netip.Addr{}
			}
			// "PJSIP/carrier-00000060": a trunk's calls are never judged,
			// so its address is not worth an AMI round trip.
			if ep := strings.TrimPrefix(channel, "PJSIP/"); trunk[ep[:max(strings.LastIndexByte(ep, '-'), 0)]] {
				return netip.Addr{}
			}
			v, err := g.Getvar(ctx, channel, "CHANNEL(pjsip,remote_addr)")
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

// Run feeds the monitor from an AMI event channel until ctx ends or the
// channel closes. The time of each event is Now() (or, with EventTime, the
// time the message itself carries when it has one, never going backwards:
// for replays).
func (m *Monitor) Run(ctx context.Context, events <-chan *ami.Message) error {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg, ok := <-events:
			if !ok {
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
