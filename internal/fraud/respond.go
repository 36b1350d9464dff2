package fraud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
)

// Hanger hangs up a channel (AMI Hangup, or PJSIPHangup where present)
// and verifies that it is gone: nil only when it is. It returns each
// attempt it made, for the record.
type Hanger interface {
	Hangup(ctx context.Context, channel string) ([]Attempt, error)
}

// Attempt is one try within an action (a hang-up is tried with
// PJSIPHangup, then Hangup), with what was seen after it.
type Attempt struct {
	Method string  `json:"method"` // "PJSIPHangup 403", "Hangup 21"
	Result string  `json:"result"` // "gone", "still up after 2s", an error
	TookMS float64 `json:"took_ms"`
}

// Locker locks and unlocks an extension: AMI DBPut/DBDel of
// pbxguard/locked/<ext> (the dialplan checks it before any outbound Dial,
// see docs/fraud.md), plus PJSIPSetMaintenance where the Asterisk has it.
type Locker interface {
	Lock(ctx context.Context, ext, reason string) error
	Unlock(ctx context.Context, ext string) error
}

// Banner bans an address through the daemon (whose allowlist wins).
type Banner interface {
	Ban(ctx context.Context, addr netip.Addr, d time.Duration, reason string) error
}

// Alerter tells a human.
type Alerter interface {
	Alert(ctx context.Context, inc *Incident) error
}

// IncidentRecorder stores every incident with its actions.
type IncidentRecorder interface {
	RecordIncident(ctx context.Context, inc *Incident) error
}

// Action is one response step taken (or, dry-run, not taken), with what
// really happened.
type Action struct {
	Kind   string    `json:"kind"`   // "hangup", "lock", "ban", "alert"
	Target string    `json:"target"` // channel, extension, address or alerter
	DryRun bool      `json:"dry_run,omitempty"`
	Time   time.Time `json:"time"` // when it started
	// Result: "ok"; "retried" (done, at a later attempt); "failed";
	// "skipped" (not done on purpose, Note says why); "dry_run".
	Result   string    `json:"result"`
	TookMS   float64   `json:"took_ms"`
	Attempts []Attempt `json:"attempts,omitempty"`
	Note     string    `json:"note,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// Action results.
const (
	ResultOK      = "ok"
	ResultRetried = "retried"
	ResultFailed  = "failed"
	ResultSkipped = "skipped"
	ResultDryRun  = "dry_run"
)

// OK reports whether the action did not fail (done, retried and done,
// skipped on purpose, or dry-run).
func (a Action) OK() bool { return a.Error == "" && a.Result != ResultFailed }

// Incident is a finding with what was done about it.
type Incident struct {
	ID        string       `json:"id"`
	Time      time.Time    `json:"time"`
	Rule      Rule         `json:"rule"`
	Severity  Severity     `json:"severity"`
	Score     int          `json:"score"`
	Extension string       `json:"extension,omitempty"`
	Addrs     []netip.Addr `json:"addrs,omitempty"`
	Channel   string       `json:"channel,omitempty"`
	Dialled   string       `json:"dialled,omitempty"`
	E164      string       `json:"e164,omitempty"`
	Country   string       `json:"country,omitempty"`
	Reason    string       `json:"reason"`
	Evidence  []string     `json:"evidence,omitempty"`
	Spared    []Spared     `json:"spared,omitempty"`
	Actions   []Action     `json:"actions"`
}

// Responder carries out findings' responses. Nil interfaces skip their
// action (recorded with an error saying what is missing).
type Responder struct {
	Hanger   Hanger
	Locker   Locker
	Banner   Banner
	Alerters []Alerter
	Recorder IncidentRecorder
	// DryRun records what would be done and does nothing.
	DryRun bool
	// BanFor is the ban duration (0: 24h).
	BanFor time.Duration
	// NeverBan are prefixes never banned (office LAN, carriers).
	NeverBan []netip.Prefix
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	Log *slog.Logger

	seq atomic.Uint64
}

func (r *Responder) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Responder) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

// ErrNotConfigured says an action's interface is missing.
var ErrNotConfigured = errors.New("not configured")

// Respond carries out f's response and records the incident: it bans
// the finding's addresses first (the daemon's ban is local and fast), then
// hangs up the live calls given (the extension's, from the tracker) and
// locks the extension in parallel — a dead AMI connection never delays
// the ban — then alerts. It returns the incident, each action with what
// really happened.
func (r *Responder) Respond(ctx context.Context, f Finding, live []calls.Call) *Incident {
	inc := &Incident{
		ID:   fmt.Sprintf("%s-%s-%d", f.Time.UTC().Format("20060102T150405.000"), f.Extension, r.seq.Add(1)),
		Time: f.Time, Rule: f.Rule, Severity: f.Severity, Score: f.Score, Extension: f.Extension,
		Addrs: f.Addrs, Channel: f.Channel, Dialled: f.Dialled, E164: f.E164, Country: f.Country,
		Reason: f.Reason, Evidence: f.Evidence, Spared: f.Spared,
	}
	// run carries out one action; fn returns its attempts (if any) and error.
	run := func(kind, target string, fn func() ([]Attempt, error)) Action {
		a := Action{Kind: kind, Target: target, DryRun: r.DryRun, Time: r.now()}
		if r.DryRun {
			a.Result = ResultDryRun
			return a
		}
		start := time.Now()
		atts, err := fn()
		a.TookMS = ms(time.Since(start))
		a.Attempts = atts
		switch {
		case err != nil:
			a.Result, a.Error = ResultFailed, err.Error()
			r.log().Warn("fraud response failed", "kind", kind, "target", target, "incident", inc.ID, "err", err)
		case len(atts) > 1:
			a.Result = ResultRetried
		default:
			a.Result = ResultOK
		}
		return a
	}
	resp := f.Response
	if resp.Ban {
		d := r.BanFor
		if d <= 0 {
			d = 24 * time.Hour
		}
		for _, a := range f.Addrs {
			if !a.IsValid() {
				continue
			}
			if r.neverBan(a) {
				inc.Actions = append(inc.Actions, Action{Kind: "ban", Target: a.String(), DryRun: r.DryRun, Time: r.now(), Result: ResultSkipped, Note: "address is in never_ban"})
				continue
			}
			inc.Actions = append(inc.Actions, run("ban", a.String(), func() ([]Attempt, error) {
				if r.Banner == nil {
					return nil, fmt.Errorf("ban %s: %w (run inside pbxguard run, or give a daemon socket)", a, ErrNotConfigured)
				}
				return nil, r.Banner.Ban(ctx, a, d, "fraud "+string(f.Rule)+" ext "+Escape(f.Extension, 64))
			}))
		}
	}
	if resp.Ban || resp.Hangup || resp.Lock {
		for _, sp := range f.Spared {
			inc.Actions = append(inc.Actions, Action{Kind: "ban", Target: sp.Addr.String(), DryRun: r.DryRun, Time: r.now(), Result: ResultSkipped, Note: sp.Reason})
		}
	}
	// Hang-ups and the lock talk to Asterisk: in parallel with each other.
	var par []func() Action
	if resp.Hangup {
		chans := make([]string, 0, len(live)+1)
		for _, c := range live {
			if c.Live && c.Channel != "" && !slices.Contains(chans, c.Channel) {
				chans = append(chans, c.Channel)
			}
		}
		if len(chans) == 0 && f.Channel != "" && f.Call.Live {
			chans = append(chans, f.Channel)
		}
		for _, ch := range chans {
			par = append(par, func() Action {
				return run("hangup", ch, func() ([]Attempt, error) {
					if r.Hanger == nil {
						return nil, fmt.Errorf("hangup %s: %w (give the responder an AMI connection)", ch, ErrNotConfigured)
					}
					return r.Hanger.Hangup(ctx, ch)
				})
			})
		}
	}
	if resp.Lock && f.Extension != "" {
		par = append(par, func() Action {
			return run("lock", f.Extension, func() ([]Attempt, error) {
				if r.Locker == nil {
					return nil, fmt.Errorf("lock %s: %w (give the responder an AMI connection)", f.Extension, ErrNotConfigured)
				}
				return nil, r.Locker.Lock(ctx, f.Extension, string(f.Rule)+": "+f.Reason)
			})
		})
	}
	done := make([]Action, len(par))
	var wg sync.WaitGroup
	for i, fn := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done[i] = fn()
		}()
	}
	wg.Wait()
	inc.Actions = append(inc.Actions, done...)
	if resp.Alert {
		for i, al := range r.Alerters {
			inc.Actions = append(inc.Actions, run("alert", alerterName(al, i), func() ([]Attempt, error) { return nil, al.Alert(ctx, inc) }))
		}
	}
	if r.Recorder != nil {
		if err := r.Recorder.RecordIncident(ctx, inc); err != nil {
			r.log().Error("fraud incident not recorded", "incident", inc.ID, "err", err)
		}
	}
	r.log().Warn("fraud incident", "id", inc.ID, "rule", inc.Rule, "extension", inc.Extension, "addrs", inc.Addrs, "reason", inc.Reason, "actions", len(inc.Actions), "dry_run", r.DryRun)
	return inc
}

func (r *Responder) neverBan(a netip.Addr) bool {
	for _, p := range r.NeverBan {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

func alerterName(a Alerter, i int) string {
	if n, ok := a.(interface{ Name() string }); ok {
		return n.Name()
	}
	return "alerter" + strconv.Itoa(i)
}
