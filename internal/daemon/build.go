package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/jail"
	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

// BuildOptions tune Build.
type BuildOptions struct {
	Logger  *slog.Logger
	Version string
	// NetNS runs the firewall backend in a named network namespace (demo, tests).
	NetNS string
	// Backend, when set, replaces the configured one (tests, demo).
	Backend firewall.Backend
	// StartAtBeginning reads files without a saved position from their start
	// (replays); by default a file already present is followed from its end.
	StartAtBeginning bool
	// Ready is called each time the daemon (or a rebuild after SIGHUP) has
	// every restored ban in the kernel and runs (Options.Ready).
	Ready func()
}

// Built is a daemon with the parts Build opened; Close releases them.
type Built struct {
	*Daemon
	Store   *store.Store
	Backend firewall.Backend // the configured backend behind the allowlist gate

	raw       firewall.Backend // the configured backend itself, kept across reloads
	cfg       *config.Config
	opts      BuildOptions
	log       *slog.Logger
	allowList []netip.Prefix
	judges    map[string]keptJudge
	agi       *agiKept              // the AGI decider, kept by a reload that leaves fraud: unchanged
	current   atomic.Pointer[Built] // set by Serve after a reload
}

// keptJudge is a jail with the settings it was made from: a reload keeps it
// (and so its failure counters) when they did not change.
type keptJudge struct {
	cfg config.Jail
	j   *jail.Jail
}

// Close closes the backend (kernel entries stay) and the store.
func (b *Built) Close() error {
	return errors.Join(b.Backend.Close(), b.Store.Close())
}

// Build makes a daemon from a checked configuration: the store, the
// firewall backend (wrapped by firewall.WithAllowlist so that the allowlist
// is enforced at the kernel's door too), and per enabled jail its judge,
// sources and detectors.
func Build(cfg *config.Config, opts BuildOptions) (*Built, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	log := opts.Logger
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	backend := opts.Backend
	if backend == nil {
		prefixes, maxElem := backendNeeds(cfg)
		backend, err = firewall.New(cfg.Firewall.Backend, firewall.Options{
			Logger: log.With("component", "firewall"), NetNS: opts.NetNS, Forward: cfg.Firewall.Forward,
			Prefixes: prefixes, MaxElem: maxElem,
		})
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("firewall.backend %s: %w", cfg.Firewall.Backend, err)
		}
	}
	b, err := assemble(cfg, opts, st, backend, nil)
	if err != nil {
		backend.Close()
		st.Close()
		return nil, err
	}
	return b, nil
}

// backendNeeds derives the kernel backend's options from the jails.
func backendNeeds(cfg *config.Config) (prefixes bool, maxElem int) {
	sumTracked := 0
	for _, j := range cfg.Enabled() {
		if j.IPv6Prefix < 128 {
			prefixes = true
		}
		sumTracked += j.MaxTracked
	}
	maxElem = cfg.Firewall.MaxElem
	if maxElem == 0 {
		maxElem = max(sumTracked, 65536)
	}
	return prefixes, maxElem
}

// Rebuild makes a daemon from a new configuration (SIGHUP) that shares b's
// store and kernel backend: bans and positions are kept. Jails whose
// settings (and the allowlist) did not change keep their judge, so their
// failure counters too; the others start afresh. state_dir and firewall
// settings need a restart (logged). b must have stopped running; it is
// not changed, so on error it can be run again.
func (b *Built) Rebuild(cfg *config.Config) (*Built, error) {
	if b.opts.Backend == nil {
		p1, m1 := backendNeeds(b.cfg)
		p2, m2 := backendNeeds(cfg)
		if cfg.Firewall.Backend != b.cfg.Firewall.Backend || cfg.Firewall.Forward != b.cfg.Firewall.Forward || p1 != p2 || m1 != m2 {
			b.log.Warn("reload: firewall settings (backend, forward, max_elem, prefix bans) are kept until pbxguard restarts",
				"backend", b.cfg.Firewall.Backend)
		}
	}
	if cfg.StateDir != b.cfg.StateDir {
		b.log.Warn("reload: state_dir is kept until pbxguard restarts", "state_dir", b.cfg.StateDir)
	}
	return assemble(cfg, b.opts, b.Store, b.raw, b)
}

// assemble builds the daemon on an open store and backend; prev (a reload)
// lends the judges of unchanged jails.
func assemble(cfg *config.Config, opts BuildOptions, st *store.Store, raw firewall.Backend, prev *Built) (*Built, error) {
	log := opts.Logger
	positions, err := st.Positions(context.Background())
	if err != nil {
		return nil, err
	}
	// One allowlist for the jails, the ban gate and (pbxguard firewall
	// plan/apply) the compiled policy: see Allowlist.
	var allowList []netip.Prefix
	for _, e := range Allowlist(cfg, log.With("component", "trunks")) {
		allowList = append(allowList, e.Prefix)
	}
	allow := jail.NewAllowlist(allowList)
	allowed := func(p netip.Prefix) (netip.Prefix, bool) {
		if !allow.Overlaps(p) {
			return netip.Prefix{}, false
		}
		for _, e := range allowList {
			if e.Overlaps(p) {
				return e, true
			}
		}
		return p, true
	}
	// The last gate before the kernel, whatever path a ban took (jail,
	// manual, restore, fraud containment): refusals come back as a
	// *firewall.AllowlistError, which the daemon logs and never stores.
	backend := firewall.WithAllowlist(raw, firewall.PrefixDenier(allowList))

	var jails []JailSpec
	var amiJails []string
	judges := map[string]*jail.Jail{}
	kept := map[string]keptJudge{}
	sameAllow := prev != nil && slices.Equal(prev.allowList, allowList)
	if prev != nil && !sameAllow {
		log.Info("reload: the allowlist changed; every jail starts afresh")
	}
	for _, jc := range cfg.Enabled() {
		var judge *jail.Jail
		if old, ok := prev.judge(jc); ok && sameAllow {
			judge = old
		} else {
			judge, err = jail.New(jail.Config{
				Name: jc.Name, MaxRetry: jc.MaxRetry, FindTime: jc.FindTime, BanTime: jc.BanTime,
				MaxBanTime: jc.MaxBanTime, Increment: jc.Increment, Weights: jc.Weights,
				ChallengeTimeout: jc.ChallengeTimeout, IPv6Prefix: jc.IPv6Prefix, MaxTracked: jc.MaxTracked,
			}, allow, st, jail.SystemClock{})
			if err != nil {
				return nil, fmt.Errorf("jail %s: %w", jc.Name, err)
			}
			if prev != nil {
				log.Info("reload: jail (re)opened with new settings", "jail", jc.Name)
			}
		}
		judges[jc.Name] = judge
		kept[jc.Name] = keptJudge{cfg: jc, j: judge}
		spec := JailSpec{Name: jc.Name, Judge: jailJudge{judge}, BanTime: jc.BanTime, FindTime: jc.FindTime}
		if jc.Source == "ami" {
			amiJails = append(amiJails, jc.Name)
			jails = append(jails, spec)
			continue
		}
		newDetector := func() (Detector, error) {
			d, err := detect.New(jc.Detector, detect.Options{Location: cfg.Location})
			if err != nil {
				return nil, fmt.Errorf("jail %s: %w", jc.Name, err)
			}
			return d, nil
		}
		for _, path := range jc.Files {
			det, err := newDetector()
			if err != nil {
				return nil, err
			}
			key := jc.Name + ":" + path
			start := positions[key]
			if start.Path != path {
				start = store.Position{}
			}
			if _, err := os.Stat(path); err != nil {
				log.Warn("log file not there yet; pbxguard waits for it", "jail", jc.Name, "file", path, "err", err)
			}
			fopts := source.FileOptions{Logger: log.With("jail", jc.Name, "file", path), StartAtEnd: !opts.StartAtBeginning,
				// No saved position: read back the jail's findtime, as
				// fail2ban does at its first start.
				Backlog: source.Backlog{Window: jc.FindTime, Stamp: lineStamp(cfg.Location, time.Now)}}
			open := fileOpener(path, fopts)
			spec.Sources = append(spec.Sources, SourceSpec{Key: key, Name: path, Source: open(start), Detector: det, Reopen: open, start: start})
		}
		if len(jc.Journal) > 0 {
			if _, err := exec.LookPath("journalctl"); err != nil {
				return nil, fmt.Errorf("jail %s: journal needs journalctl, which is not installed (install systemd, or set jails.%s.files: [/var/log/auth.log])", jc.Name, jc.Name)
			}
			det, err := newDetector()
			if err != nil {
				return nil, err
			}
			key := jc.Name + ":journal"
			start := positions[key]
			jopts := source.JournalOptions{Logger: log.With("jail", jc.Name, "source", "journal"), Backlog: jc.FindTime}
			open := func(pos store.Position) Source {
				return sourceAdapter{source.NewJournal(jc.Name, jc.Journal, pos.Cursor, jopts)}
			}
			spec.Sources = append(spec.Sources, SourceSpec{Key: key, Name: "journal", Source: open(start), Detector: det, Reopen: open, start: start})
		}
		jails = append(jails, spec)
	}
	auditStatus := runAudit(cfg.Audit, log.With("component", "audit"))
	var workers []Worker
	w, err := amiWorker(cfg, st, positions, amiJails, log)
	if err != nil {
		return nil, err
	}
	if w != nil {
		workers = append(workers, *w)
	}
	if w := sensorWorker(cfg.Sensor, opts.NetNS, log); w != nil {
		workers = append(workers, *w)
	}
	w, agiDec, err := agiWorker(cfg, log, prev.keptAGI())
	if err != nil {
		return nil, err
	} else if w != nil {
		workers = append(workers, *w)
	}
	if w, err := dashboardWorker(cfg, st, log); err != nil {
		return nil, err
	} else if w != nil {
		workers = append(workers, *w)
	}
	hist, err := config.ParseHistory(cfg.History)
	if err != nil {
		return nil, err
	}
	if w, err := clusterWorker(cfg.Cluster, log); err != nil || w != nil {
		if err != nil {
			return nil, err
		}
		workers = append(workers, *w)
	}
	d, err := New(Options{
		Logger: log, Store: st, Backend: backend, Allowed: allowed, Jails: jails, Retention: hist.Retention,
		ControlSocket: cfg.Control.Socket, MetricsListen: cfg.Metrics.Listen,
		ManualBanTime: config.DefaultBanTime, Version: opts.Version, Workers: workers,
		Audit: &auditStatus, Ready: opts.Ready,
	})
	if err != nil {
		return nil, err
	}
	registerJailMetrics(d.metrics, judges)
	return &Built{Daemon: d, Store: st, Backend: backend, raw: raw, cfg: cfg, opts: opts, log: log,
		allowList: allowList, judges: kept, agi: agiDec}, nil
}

// judge returns the previous judge of a jail whose settings are unchanged.
func (b *Built) judge(jc config.Jail) (*jail.Jail, bool) {
	if b == nil {
		return nil, false
	}
	old, ok := b.judges[jc.Name]
	if !ok {
		return nil, false
	}
	a, c := old.cfg, jc
	a.Line, c.Line = 0, 0 // moving a jail in the file changes nothing
	if !reflect.DeepEqual(a, c) {
		return nil, false
	}
	return old.j, true
}

// registerJailMetrics exposes each jail's own counters (read at scrape time;
// jail.Stats is safe from any goroutine).
func registerJailMetrics(m *Metrics, judges map[string]*jail.Jail) {
	type stat struct {
		name, help string
		counter    bool
		get        func(jail.Stats) float64
	}
	for _, s := range []stat{
		{"pbxguard_jail_tracked_addresses", "Addresses (or IPv6 prefixes) a jail tracks now.", false, func(s jail.Stats) float64 { return float64(s.Tracked) }},
		{"pbxguard_jail_evicted_total", "Tracked addresses dropped because max_tracked was reached.", true, func(s jail.Stats) float64 { return float64(s.Evicted) }},
		{"pbxguard_jail_allowlisted_total", "Events from allowlisted addresses, ignored.", true, func(s jail.Stats) float64 { return float64(s.AllowlistedSkipped) }},
		{"pbxguard_jail_twins_skipped_total", "Reports of a request already counted in another form (NOTICE, security event, the wire), not counted a second time.", true, func(s jail.Stats) float64 { return float64(s.TwinsSkipped) }},
		{"pbxguard_jail_evicted_near_ban_total", "Evicted addresses that had two failures or more (a flood of spoofed sources pushing out real attackers shows here).", true, func(s jail.Stats) float64 { return float64(s.EvictedNearBan) }},
		{"pbxguard_jail_special_skipped_total", "Events naming an unspecified, broadcast or multicast address, never tracked.", true, func(s jail.Stats) float64 { return float64(s.SpecialSkipped) }},
		{"pbxguard_jail_challenge_failures_total", "Challenges never answered by a successful authentication, counted as failures.", true, func(s jail.Stats) float64 { return float64(s.ChallengeFailures) }},
	} {
		for name, j := range judges {
			labels := prometheus.Labels{"jail": name}
			f := func() float64 { return s.get(j.Stats()) }
			if s.counter {
				m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: s.name, Help: s.help, ConstLabels: labels}, f))
			} else {
				m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: s.name, Help: s.help, ConstLabels: labels}, f))
			}
		}
	}
}

// fileOpener makes followers of path that resume at a stored position.
func fileOpener(path string, fopts source.FileOptions) func(store.Position) Source {
	return func(pos store.Position) Source {
		return sourceAdapter{source.NewFile(path, pos.Position, fopts)}
	}
}

// sourceAdapter turns a source.Source into the daemon's Source.
type sourceAdapter struct{ s source.Source }

// Health is the file follower's (a journal reads while it runs).
func (a sourceAdapter) Health() source.Health {
	if h, ok := a.s.(interface{ Health() source.Health }); ok {
		return h.Health()
	}
	return source.Health{}
}

// OnStart passes on the starting position of a file without a saved one.
func (a sourceAdapter) OnStart(fn func(store.Position)) {
	if f, ok := a.s.(*source.File); ok {
		f.OnPosition(func(p source.Position) {
			fn(store.Position{Position: p})
		})
	}
}

func (a sourceAdapter) Run(ctx context.Context, handle func(Line) error) error {
	return a.s.Run(ctx, func(l source.Line) error {
		return handle(Line{Data: l.Data, Received: l.Received, Pos: store.Position{Position: l.Pos}})
	})
}

// jailJudge turns a *jail.Jail into the daemon's Judge.
type jailJudge struct{ j *jail.Jail }

func (a jailJudge) Observe(ev *event.Event) (Decision, bool) {
	d, ok := a.j.Observe(ev)
	return fromJail(d), ok
}

func (a jailJudge) Tick(now time.Time) []Decision {
	ds := a.j.Tick(now)
	if len(ds) == 0 {
		return nil
	}
	out := make([]Decision, len(ds))
	for i, d := range ds {
		out[i] = fromJail(d)
	}
	return out
}

func (a jailJudge) Forget(addr netip.Addr) { a.j.Forget(addr) }

func (a jailJudge) MarkBanned(addr netip.Addr, until time.Time, banCount int) {
	a.j.MarkBanned(addr, until, banCount)
}

func fromJail(d jail.Decision) Decision {
	return Decision{Jail: d.Jail, Addr: d.Addr, Prefix: d.Prefix, At: d.At, Duration: d.Duration, Until: d.Until,
		BanCount: d.BanCount, Reason: d.Reason, Failures: d.Failures}
}
