package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

// Worker is a long-running part the daemon starts after its sources and
// stops (by cancelling ctx) before it drains: the AMI listener, the fraud
// monitor. An error is logged; it does not stop the daemon.
type Worker struct {
	Name string
	Run  func(ctx context.Context, d *Daemon) error
}

// amiWorker connects to the Asterisk Manager Interface (credentials from
// the fraud: section's ami: keys) and feeds
//   - the jails with `source: ami` from AMI security events, and
//   - the fraud monitor (when `fraud:` is configured) from call events and,
//     when fraud.cdr / fraud.cel are set, from those files.
//
// It is built only when one of the two is configured. The monitor is the
// one fraud.NewMonitor builds (tests use the same); its responses run on
// its own worker, so neither the AMI loop nor the log sources' event tap
// ever wait for a hang-up, a ban or an alert.
func amiWorker(cfg *config.Config, st *store.Store, positions map[string]store.Position, amiJails []string, log *slog.Logger) (*Worker, error) {
	var settings *fraud.Settings
	switch {
	case cfg.Fraud != nil:
		s, err := fraud.ParseSettings(cfg.Fraud)
		if err != nil {
			return nil, err
		}
		settings = s
	case len(amiJails) > 0:
		settings = fraud.DefaultSettings()
	default:
		return nil, nil
	}
	amiCfg, err := settings.AMIConfig(log)
	if err != nil {
		return nil, err
	}
	withFraud := cfg.Fraud != nil
	return &Worker{Name: "ami", Run: func(ctx context.Context, d *Daemon) error {
		client, err := ami.New(amiCfg)
		if err != nil {
			return fmt.Errorf("AMI %s: %w", amiCfg.Addr, err)
		}
		defer client.Close()
		if withFraud {
			callEvents := client.Subscribe(0, nil) // before the login completes: the whole session
			var recorder fraud.IncidentRecorder
			if st != nil {
				recorder = fraud.StoreRecorder{Store: st}
			}
			mon, err := fraud.NewMonitor(settings, fraud.Deps{
				AMI: client,
				Banner: fraud.BanFunc(func(ctx context.Context, a netip.Addr, dur time.Duration, reason string) error {
					_, err := d.Ban(ctx, netip.PrefixFrom(a, a.BitLen()), dur, "fraud", reason)
					return err
				}),
				Recorder: recorder,
				Log:      log.With("component", "fraud"),
			})
			if err != nil {
				return err
			}
			d.fraudMon.set(mon) // the AGI decisions read the same engine
			defer d.fraudMon.set(nil)
			d.registerFraudMetrics(mon)
			runDone := make(chan struct{})
			defer func() { <-runDone }() // the monitor's worker has finished its last response
			go func() {
				defer close(runDone)
				_ = mon.Run(ctx, callEvents.C())
			}()
			// The log detectors' auth_success and call_rejected events
			// teach the monitor where extensions register from and show
			// unauthenticated calls to international numbers. The tap
			// never waits: findings are queued for the monitor's worker.
			d.SetEventTap(func(ev event.Event) { mon.HandleEvent(ctx, ev, time.Now()); d.fraudMon.observeEvent(ev) })
			defer d.SetEventTap(nil)
			// CDR and CEL files, followed like logs (positions saved): the
			// fallback when AMI call events are missing, and for forensics.
			var filesWG sync.WaitGroup
			defer filesWG.Wait() // their last positions are recorded before the daemon saves them
			follow := func(kind, path string, handle func(line string) error) {
				key := callFileKey(kind, path)
				start := positions[key]
				if start.Path != path {
					start = store.Position{}
				}
				open := callFileOpener(path, log.With("component", "fraud", "file", path))
				filesWG.Add(1)
				go func() {
					defer filesWG.Done()
					d.followCDR(ctx, kind, key, start, open, func(rec []byte) error { return handle(string(rec)) })
				}()
			}
			if settings.CDR != "" {
				follow("cdr", settings.CDR, func(line string) error {
					_, err := mon.HandleCDRLine(ctx, line, cfg.Location, time.Now())
					return err
				})
			}
			if settings.CEL != "" {
				follow("cel", settings.CEL, func(line string) error {
					_, err := mon.HandleCELLine(ctx, line)
					return err
				})
			}
		}
		log.Info("AMI listener started", "addr", amiCfg.Addr, "jails", amiJails, "fraud", withFraud)
		// Connected or not, since when, why: status and pbxguard_ami_up.
		health := time.NewTicker(time.Second)
		defer health.Stop()
		var ev event.Event
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-health.C:
				s := client.Stats()
				d.SetWorkerUp("ami", s.Connected, errString(s.LastError))
			case msg, ok := <-client.Events():
				if !ok {
					return errors.New("AMI event channel closed")
				}
				if len(amiJails) > 0 && ami.SecurityEvent(msg, &ev) {
					ev.Detector = "ami"
					for _, j := range amiJails {
						e := ev
						if err := d.Inject(ctx, j, &e); err != nil && ctx.Err() == nil {
							log.Error("AMI security event", "jail", j, "err", err)
						}
					}
				}
				d.fraudMon.observeMessage(msg) // the AGI decisions learn addresses from SuccessfulAuth
			}
		}
	}}, nil
}

// registerFraudMetrics exports the monitor's dropped responses (a full
// queue: the responder is stuck), replacing a previous run's.
func (d *Daemon) registerFraudMetrics(mon *fraud.Monitor) {
	if d.metrics == nil || d.metrics.Registry == nil {
		return
	}
	c := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "pbxguard_fraud_responses_dropped_total",
		Help: "Fraud responses dropped because the response queue was full (the responder is stuck: AMI, the daemon, alert targets)."},
		func() float64 { return float64(mon.Dropped()) })
	if err := d.metrics.Registry.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			d.metrics.Registry.Unregister(are.ExistingCollector)
			_ = d.metrics.Registry.Register(c)
		}
	}
}

// callFileKey is the store key of a followed CDR or CEL file's position.
func callFileKey(kind, path string) string { return "fraud:" + kind + ":" + path }

// callFileOpener makes followers of a CDR or CEL file: in CSV mode (a
// record's quoted fields — a dialled number, a caller name — may hold
// newlines: a line is not a record), from its end at the first start.
func callFileOpener(path string, log *slog.Logger) func(store.Position) Source {
	return fileOpener(path, source.FileOptions{Logger: log, StartAtEnd: true, CSV: true})
}

// followCDR reads the fraud CDR or CEL file (kind "cdr" or "cel") from
// start (its saved position; the zero Position = from its end, as old calls
// are not news) and hands each CSV record to handle (open makes followers in
// CSV mode, see callFileOpener). Records handle rejects are logged and
// counted (pbxguard_fraud_records_total{result="rejected"}). The position
// of each handled record is recorded like a jail source's and saved with
// them (every second and at shutdown), so a restart neither loses nor
// re-reads rows, and never resumes inside a record. A source that fails is
// reopened at its last position by the daemon's supervisor, as jail
// sources are.
func (d *Daemon) followCDR(ctx context.Context, kind, key string, start store.Position, open func(store.Position) Source, handle func([]byte) error) {
	pos := start
	handled := d.metrics.callRecords.WithLabelValues(kind, "handled")
	rejected := d.metrics.callRecords.WithLabelValues(kind, "rejected")
	d.sup.run(ctx, func(ctx context.Context) error {
		return open(pos).Run(ctx, func(l Line) error {
			if err := handle(l.Data); err != nil {
				rejected.Inc()
				d.log.Debug("fraud: "+strings.ToUpper(kind)+" line skipped", "key", key, "offset", l.Pos.Offset, "err", err)
			} else {
				handled.Inc()
			}
			l.Pos.Source = key
			pos = l.Pos
			d.posMu.Lock()
			d.positions[key] = l.Pos
			d.posDirty = true
			d.posMu.Unlock()
			return nil
		})
	}, func(err error, pause time.Duration) bool {
		d.metrics.sourceErrors.WithLabelValues("fraud", key).Inc()
		d.log.Error("fraud: "+strings.ToUpper(kind)+" source stopped; reopening it", "key", key, "in", pause, "err", err)
		return true
	})
}
