package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/agi"
	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/fraud"
)

// monitorSlot is where the AMI worker publishes its fraud monitor, so that
// the AGI worker decides on the same engine state, and where the AGI worker
// publishes its decider, so that the AMI worker's authentications (AMI
// SuccessfulAuth, the log's auth_success) teach it each extension's
// addresses.
type monitorSlot struct {
	p   atomic.Pointer[fraud.Monitor]
	dec atomic.Pointer[fraud.Decider]
}

func (s *monitorSlot) set(m *fraud.Monitor) { s.p.Store(m) }
func (s *monitorSlot) get() *fraud.Monitor  { return s.p.Load() }

// observeEvent hands a log auth_success of an extension to the decider.
func (s *monitorSlot) observeEvent(ev event.Event) {
	dec := s.dec.Load()
	if dec == nil || ev.Kind != event.AuthSuccess || ev.Account == "" || !ev.Addr.IsValid() {
		return
	}
	switch ev.Service {
	case event.ServicePJSIP, event.ServiceSIP, event.ServiceIAX2, event.ServiceUnknown:
		dec.ObserveAuth(ev.Account, ev.Addr, time.Now())
	}
}

// observeMessage hands an AMI SuccessfulAuth of an extension to the decider.
func (s *monitorSlot) observeMessage(m *ami.Message) {
	dec := s.dec.Load()
	if dec == nil || m.Event() != "SuccessfulAuth" {
		return
	}
	switch strings.ToUpper(m.Get("Service")) {
	case "PJSIP", "SIP", "IAX2":
	default:
		return // an AMI login names no extension
	}
	if a, ok := calls.ParseSecurityAddr(m.Get("RemoteAddress")); ok {
		dec.ObserveAuth(m.Get("AccountID"), a, time.Now())
	}
}

// The contract with the dialplan (docs/fraud.md): these two variables.
const (
	agiDecisionVar = "PBXGUARD_DECISION"
	agiReasonVar   = "PBXGUARD_REASON"
	agiScript      = "outbound"
)

// agiMetrics count the decisions.
type agiMetrics struct {
	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	sessions  *prometheus.CounterVec
}

func newAGIMetrics(reg *prometheus.Registry) *agiMetrics {
	m := &agiMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pbxguard_agi_decisions_total",
			Help: "Decisions before the call (FastAGI), by decision (allow, deny) and rule."}, []string{"decision", "rule"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pbxguard_agi_decision_seconds",
			Help:    "Time from the end of the AGI environment block to the decision (before it is sent).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25}}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pbxguard_agi_sessions_total",
			Help: "FastAGI sessions by result (ok, hungup, malformed, unknown_script, error, refused)."}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.decisions, m.latency, m.sessions} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				panic(err) // a programming error: two different metrics with one name
			}
		}
	}
	return m
}

// agiWorker serves the decision before the call (fraud.agi.listen): the
// dialplan runs AGI(agi://127.0.0.1:4573/outbound,${EXTEN}) before Dial
// and branches on PBXGUARD_DECISION. Decisions read the fraud monitor's
// engine (the AMI worker's) when it is up; denials that are evidence of
// fraud are contained through that monitor, off the answer's path.
//
// prev is the decider of the configuration before a reload: when the
// fraud: section and the trusted endpoints did not change it is kept, and
// with it the holds, attempts and addresses it learnt.
func agiWorker(cfg *config.Config, log *slog.Logger, prev *agiKept) (*Worker, *agiKept, error) {
	if cfg.Fraud == nil {
		return nil, nil, nil
	}
	settings, err := fraud.ParseSettings(cfg.Fraud)
	if err != nil {
		return nil, nil, err
	}
	if settings.AGI == nil {
		return nil, nil, nil
	}
	raw, err := yaml.Marshal(cfg.Fraud)
	if err != nil {
		return nil, nil, err
	}
	key := string(raw) + "\x00" + strings.Join(cfg.Audit.TrustedEndpoints, "\x00")
	var dec *fraud.Decider
	if prev != nil && prev.key == key {
		dec = prev.dec
		log.Info("reload: the AGI decisions keep what they learnt (fraud: unchanged)")
	} else if dec, err = settings.Decider(cfg.Audit.TrustedEndpoints); err != nil {
		return nil, nil, err
	}
	kept := &agiKept{key: key, dec: dec}
	alog := log.With("component", "agi")
	dc := dec.Config()
	if !dc.TrustAll && len(dc.Trusted) == 0 {
		alog.Warn("no endpoint is trusted for international calls: every international, premium and satellite call is denied before Dial " +
			"(list them in audit.trusted_endpoints or fraud.agi.trusted_endpoints, or set fraud.agi.international: all)")
	}
	listen, timeout, allowed := settings.AGI.Listen, settings.AGI.Timeout, settings.AGI.Allowed
	return &Worker{Name: "agi", Run: func(ctx context.Context, d *Daemon) error {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("fraud.agi.listen %s: %w (is another pbxguard or AGI server on it? change fraud.agi.listen and the dialplan's agi:// address)", listen, err)
		}
		h := &agiHandler{dec: dec, slot: &d.fraudMon, log: alog, m: newAGIMetrics(d.metrics.Registry),
			contain: make(chan fraud.Finding, 64)}
		dec.SetState(nil) // a kept decider no longer reads the monitor before the reload
		d.fraudMon.dec.Store(dec)
		defer d.fraudMon.dec.Store(nil)
		go h.containLoop(ctx)
		srv := &agi.Server{Handler: h.serve, Timeout: timeout, Log: alog, Allow: allowed,
			Refused: func(peer netip.Addr) {
				h.m.sessions.WithLabelValues("refused").Inc()
				alog.Warn("agi: connection refused: the peer is not in fraud.agi.allow_from", "peer", peer)
			}}
		alog.Info("AGI decision server started", "listen", ln.Addr().String(), "trusted", dc.Trusted, "trust_all", dc.TrustAll,
			"new_address", dc.NewAddress, "intl_per_window", dc.IntlPerWindow, "calls_per_window", dc.CallsPerWindow, "spend_per_window", dc.SpendPerWindow)
		return srv.Serve(ctx, ln)
	}}, kept, nil
}

// agiKept is a decider with the configuration it was made from.
type agiKept struct {
	key string
	dec *fraud.Decider
}

// keptAGI returns the decider a rebuild may keep (nil b: none).
func (b *Built) keptAGI() *agiKept {
	if b == nil {
		return nil
	}
	return b.agi
}

type agiHandler struct {
	dec     *fraud.Decider
	slot    *monitorSlot
	log     *slog.Logger
	m       *agiMetrics
	contain chan fraud.Finding
	mon     atomic.Pointer[fraud.Monitor] // the monitor the decider reads now

	// onDecided, when set (benchmarks), sees each decision's time.
	onDecided func(time.Duration)

	lockMu      sync.Mutex
	lockChecked map[string]time.Time // ext → last AstDB check of its lock
}

// lockCheckEvery: a locked extension's AstDB key is asked for at most
// this often (an attacker's burst costs one AMI round trip per interval,
// not one per call); an unlock is noticed within it.
const lockCheckEvery = time.Second

// lockCheckDue reports whether ext's lock should be asked for now.
func (h *agiHandler) lockCheckDue(ext string, now time.Time) bool {
	h.lockMu.Lock()
	defer h.lockMu.Unlock()
	if last, ok := h.lockChecked[ext]; ok && now.Sub(last) < lockCheckEvery {
		return false
	}
	if h.lockChecked == nil || len(h.lockChecked) >= 4096 {
		h.lockChecked = map[string]time.Time{}
	}
	h.lockChecked[ext] = now
	return true
}

// dialplanSafe keeps PBXGUARD_REASON harmless wherever a dialplan puts it
// (Log(), an expression, a CDR field): letters, digits, blanks and
// + - . : / _ @ = stay, every other byte (quotes, commas, $, brackets,
// braces, parentheses, semicolons, backslashes, non-ASCII) becomes '?'.
// The reason in full is in the daemon's log.
func dialplanSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == ' ':
		case strings.IndexByte("+-.:/_@=", c) >= 0:
		default:
			b[i] = '?'
		}
	}
	return string(b)
}

// attach points the decider at the current monitor.
func (h *agiHandler) attach() *fraud.Monitor {
	m := h.slot.get()
	if h.mon.Swap(m) != m {
		if m == nil {
			h.dec.SetState(nil)
		} else {
			h.dec.SetState(m)
		}
	}
	return m
}

// requestAddr reads the optional second argument: the caller's transport
// address as ${CHANNEL(pjsip,remote_addr)} gives it ("198.51.100.21:5060",
// "[2001:db8::1]:5060"), or a bare address.
func requestAddr(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	a, _ := netip.ParseAddr(strings.Trim(s, "[]"))
	return a.Unmap()
}

func (h *agiHandler) serve(ctx context.Context, r *agi.Request, s *agi.Session) {
	start := time.Now()
	mon := h.attach()
	req := fraud.DecideRequest{Channel: r.Channel, Dialled: r.Arg(1), Addr: requestAddr(r.Arg(2)), UniqueID: r.UniqueID}
	if r.Err != nil {
		req.Malformed = r.Err.Error()
	}
	var d fraud.Decision
	if script, _, _ := strings.Cut(r.Script, "?"); script != agiScript {
		d = fraud.Decision{Time: start, Rule: "unknown_script", Channel: r.Channel, Dialled: req.Dialled,
			Reason: fmt.Sprintf("unknown AGI script %q: call agi://host:port/%s", r.Script, agiScript)}
		h.m.sessions.WithLabelValues("unknown_script").Inc()
	} else {
		d = h.dec.Decide(req, start)
		if !d.Allow && d.Rule == fraud.DecideLocked && mon != nil && h.lockCheckDue(d.Extension, start) {
			// Unlocked by hand since (another process deleted the AstDB key)?
			lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			still := mon.StillLocked(lctx, d.Extension)
			cancel()
			if !still {
				h.dec.Release(d.Extension)
				d = h.dec.Decide(req, time.Now())
			}
		}
	}
	decided := time.Since(start)
	err := s.SetVariable(agiDecisionVar, d.Value())
	var re *agi.ReplyError
	if errors.As(err, &re) && d.Allow {
		// A line that is no reply: the environment block went on past its
		// blank line (a newline in a value). Take the allow back.
		d = fraud.Decision{Time: start, Rule: fraud.DecideMalformed, Channel: r.Channel, Dialled: req.Dialled,
			Reason: "the AGI request was not whole (a newline in a value?)", Evidence: []string{re.Error()}}
		err = s.SetVariable(agiDecisionVar, d.Value())
	}
	if err == nil {
		err = s.SetVariable(agiReasonVar, dialplanSafe(d.ReasonValue()))
	}
	took := time.Since(start)
	h.m.latency.Observe(decided.Seconds())
	if h.onDecided != nil {
		h.onDecided(decided)
	}
	h.m.decisions.WithLabelValues(d.Value(), string(d.Rule)).Inc()
	result := "ok"
	switch {
	case s.HungUp():
		result = "hungup"
	case err != nil:
		result = "error"
	case r.Err != nil:
		result = "malformed"
	}
	h.m.sessions.WithLabelValues(result).Inc()
	lvl := slog.LevelInfo
	if !d.Allow {
		lvl = slog.LevelWarn
	}
	// Every value below may be attacker text: slog quotes it.
	h.log.Log(ctx, lvl, "agi decision", "decision", d.Value(), "rule", string(d.Rule), "extension", d.Extension,
		"channel", d.Channel, "uniqueid", d.UniqueID, "dialled", d.Dialled, "e164", d.E164, "country", d.Country,
		"addr", d.Addr, "reason", d.Reason, "evidence", d.Evidence, "decided_us", decided.Microseconds(), "session_us", took.Microseconds(), "sent", err == nil, "err", err)
	if d.Finding != nil {
		select {
		case h.contain <- *d.Finding:
		default:
			h.log.Error("agi: containment queue full; the denial stands but this finding is not contained", "extension", d.Extension, "rule", d.Finding.Rule)
		}
	}
}

// containLoop hands denials' findings to the monitor (hang-up, lock, ban,
// alert, incident), one at a time, never on an AGI answer's path.
func (h *agiHandler) containLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-h.contain:
			mon := h.slot.get()
			if mon == nil {
				h.log.Error("agi: fraud denial not contained: the AMI monitor is not running (check fraud.ami); the extension is held by the decision server for one window",
					"extension", f.Extension, "rule", f.Rule, "reason", f.Reason)
				continue
			}
			for _, inc := range mon.ContainDecision(ctx, f) {
				if slices.ContainsFunc(inc.Actions, func(a fraud.Action) bool { return a.Kind == "lock" }) {
					h.dec.MarkContained(inc.Extension, f.Time)
				}
				h.log.Warn("agi: fraud denial contained", "incident", inc.ID, "rule", inc.Rule, "extension", inc.Extension, "addrs", inc.Addrs, "actions", len(inc.Actions))
			}
		}
	}
}
