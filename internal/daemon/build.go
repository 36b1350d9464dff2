package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
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
}

// Built is a daemon with the parts Build opened; Close releases them.
type Built struct {
	*Daemon
	Store   *store.Store
	Backend firewall.Backend
}

// Close closes the backend (kernel entries stay) and the store.
func (b *Built) Close() error {
	return errors.Join(b.Backend.Close(), b.Store.Close())
}

// Build makes a daemon from a checked configuration: the store, the
// firewall backend (wrapped by firewall.WithAllowlist so that the allowlist
// is enforced at the kernel's door too), and per enabled jail its judge, sources and detectors.
func Build(cfg *config.Config, opts BuildOptions) (*Built, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Built, error) {
		st.Close()
		return nil, err
	}
	positions, err := st.Positions(context.Background())
	if err != nil {
		return fail(err)
	}
	allowList := slices.Clone(cfg.Allowlist)
	if cfg.AllowlistAsteriskTrunks {
		allowList = append(allowList, trunkAllowlist(cfg.Audit.AsteriskDir, log.With("component", "trunks"))...)
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

	backend := opts.Backend
	if backend == nil {
		prefixes := false
		maxElem := cfg.Firewall.MaxElem
		sumTracked := 0
		for _, j := range cfg.Enabled() {
			if j.IPv6Prefix < 128 {
				prefixes = true
			}
			sumTracked += j.MaxTracked
		}
		if maxElem == 0 {
			maxElem = max(sumTracked, 65536)
		}
		backend, err = firewall.New(cfg.Firewall.Backend, firewall.Options{
			Logger: log.With("component", "firewall"), NetNS: opts.NetNS, Forward: cfg.Firewall.Forward,
			Prefixes: prefixes, MaxElem: maxElem,
		})
		if err != nil {
			return fail(fmt.Errorf("firewall.backend %s: %w", cfg.Firewall.Backend, err))
		}
	}
	// The last gate before the kernel, whatever path a ban took (jail,
	// manual, restore, fraud containment): refusals come back as a
	// *firewall.AllowlistError, which the daemon logs and never stores.
	backend = firewall.WithAllowlist(backend, firewall.PrefixDenier(allowList))

	var jails []JailSpec
	var amiJails []string
	judges := map[string]*jail.Jail{}
	for _, jc := range cfg.Enabled() {
		judge, err := jail.New(jail.Config{
			Name: jc.Name, MaxRetry: jc.MaxRetry, FindTime: jc.FindTime, BanTime: jc.BanTime,
			MaxBanTime: jc.MaxBanTime, Increment: jc.Increment, Weights: jc.Weights,
			ChallengeTimeout: jc.ChallengeTimeout, IPv6Prefix: jc.IPv6Prefix, MaxTracked: jc.MaxTracked,
		}, allow, st, jail.SystemClock{})
		if err != nil {
			backend.Close()
			return fail(fmt.Errorf("jail %s: %w", jc.Name, err))
		}
		judges[jc.Name] = judge
		spec := JailSpec{Name: jc.Name, Judge: jailJudge{judge}, BanTime: jc.BanTime}
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
				backend.Close()
				return fail(err)
			}
			key := jc.Name + ":" + path
			start := positions[key]
			if start.Path != path {
				start = store.Position{}
			}
			if _, err := os.Stat(path); err != nil {
				log.Warn("log file not there yet; pbxguard waits for it", "jail", jc.Name, "file", path, "err", err)
			}
			fopts := source.FileOptions{Logger: log.With("jail", jc.Name, "file", path), StartAtEnd: !opts.StartAtBeginning}
			open := fileOpener(path, fopts)
			spec.Sources = append(spec.Sources, SourceSpec{Key: key, Name: path, Source: open(start), Detector: det, Reopen: open, start: start})
		}
		if len(jc.Journal) > 0 {
			if _, err := exec.LookPath("journalctl"); err != nil {
				backend.Close()
				return fail(fmt.Errorf("jail %s: journal needs journalctl, which is not installed (install systemd, or set jails.%s.files: [/var/log/auth.log])", jc.Name, jc.Name))
			}
			det, err := newDetector()
			if err != nil {
				backend.Close()
				return fail(err)
			}
			key := jc.Name + ":journal"
			start := positions[key]
			jopts := source.JournalOptions{Logger: log.With("jail", jc.Name, "source", "journal")}
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
		backend.Close()
		return fail(err)
	}
	if w != nil {
		workers = append(workers, *w)
	}
	d, err := New(Options{
		Logger: log, Store: st, Backend: backend, Allowed: allowed, Jails: jails,
		ControlSocket: cfg.Control.Socket, MetricsListen: cfg.Metrics.Listen,
		ManualBanTime: config.DefaultBanTime, Version: opts.Version, Workers: workers,
		Audit: &auditStatus,
	})
	if err != nil {
		backend.Close()
		return fail(err)
	}
	registerJailMetrics(d.metrics, judges)
	return &Built{Daemon: d, Store: st, Backend: backend}, nil
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
		return sourceAdapter{source.NewFile(path, source.Position{Path: pos.Path, Inode: pos.Inode, Size: pos.Size, Offset: pos.Offset, Check: pos.Check}, fopts)}
	}
}

// sourceAdapter turns a source.Source into the daemon's Source.
type sourceAdapter struct{ s source.Source }

func (a sourceAdapter) Run(ctx context.Context, handle func(Line) error) error {
	return a.s.Run(ctx, func(l source.Line) error {
		return handle(Line{Data: l.Data, Received: l.Received, Pos: store.Position{
			Path: l.Pos.Path, Inode: l.Pos.Inode, Size: l.Pos.Size, Offset: l.Pos.Offset, Cursor: l.Pos.Cursor, Check: l.Pos.Check,
		}})
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

func fromJail(d jail.Decision) Decision {
	return Decision{Jail: d.Jail, Addr: d.Addr, Prefix: d.Prefix, At: d.At, Duration: d.Duration, Until: d.Until,
		BanCount: d.BanCount, Reason: d.Reason, Failures: d.Failures}
}
