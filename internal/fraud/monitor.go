package fraud

import (
	"context"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/event"
)

// Monitor glues the call tracker, the engine and the responder: the daemon
// feeds it AMI events, CDR rows and log events from one goroutine.
type Monitor struct {
	Tracker   *calls.Tracker
	Engine    *Engine
	Responder *Responder
	// OnIncident, when set, sees every incident after it was handled.
	OnIncident func(*Incident)
}

// HandleMessage feeds one AMI message received at now.
func (m *Monitor) HandleMessage(ctx context.Context, msg *ami.Message, now time.Time) []*Incident {
	u, ok := m.Tracker.Handle(msg, now)
	if !ok {
		return nil
	}
	return m.HandleUpdate(ctx, u, now)
}

// HandleCDR feeds one CDR CSV record (written at hang-up) at now.
func (m *Monitor) HandleCDR(ctx context.Context, rec []string, loc *time.Location, now time.Time) ([]*Incident, error) {
	u, ok, err := m.Tracker.HandleCDR(rec, loc)
	if err != nil || !ok {
		return nil, err
	}
	return m.HandleUpdate(ctx, u, now), nil
}

// HandleEvent feeds one log-detector event (CallRejected to an
// international number, AuthSuccess for an extension's address).
func (m *Monitor) HandleEvent(ctx context.Context, ev event.Event, now time.Time) []*Incident {
	if ev.Kind == event.AuthSuccess && ev.Account != "" && ev.Addr.IsValid() {
		m.Tracker.SetEndpointAddr(ev.Account, ev.Addr, now)
		return m.respond(ctx, m.Engine.Observe(calls.Update{Kind: calls.EndpointAuth,
			Call: calls.Call{Extension: ev.Account, SourceAddr: ev.Addr, Start: now}}, now))
	}
	return m.respond(ctx, m.Engine.ObserveEvent(ev, now))
}

// HandleUpdate feeds one call update.
func (m *Monitor) HandleUpdate(ctx context.Context, u calls.Update, now time.Time) []*Incident {
	return m.respond(ctx, m.Engine.Observe(u, now))
}

func (m *Monitor) respond(ctx context.Context, fs []Finding) []*Incident {
	if len(fs) == 0 {
		return nil
	}
	out := make([]*Incident, 0, len(fs))
	for _, f := range fs {
		if m.Responder == nil {
			out = append(out, &Incident{Time: f.Time, Rule: f.Rule, Severity: f.Severity, Score: f.Score,
				Extension: f.Extension, Addrs: f.Addrs, Reason: f.Reason, Evidence: f.Evidence})
			continue
		}
		var live []calls.Call
		if f.Response.Hangup && f.Extension != "" {
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
