package daemon

import (
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WorkerStatus is the health of a worker (the AMI connection) in Status:
// a worker that cannot start or has lost its peer shows as down, with
// since when and why, instead of vanishing into one log line.
type WorkerStatus struct {
	Name      string    `json:"name"`
	Up        bool      `json:"up"`
	Since     time.Time `json:"since"` // when Up last changed (or the start)
	LastError string    `json:"last_error,omitempty"`
}

type workerHealth struct {
	mu sync.Mutex
	m  map[string]*WorkerStatus
}

// registerWorkers starts every worker as down (not connected yet) and
// exposes pbxguard_worker_up{worker} and, for the AMI worker,
// pbxguard_ami_up.
func (d *Daemon) registerWorkers(now time.Time) {
	d.health.m = map[string]*WorkerStatus{}
	for _, w := range d.opts.Workers {
		name := w.Name
		d.health.m[name] = &WorkerStatus{Name: name, Since: now.UTC()}
		up := func() float64 {
			d.health.mu.Lock()
			defer d.health.mu.Unlock()
			if s := d.health.m[name]; s != nil && s.Up {
				return 1
			}
			return 0
		}
		d.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pbxguard_worker_up",
			Help: "1 when the worker runs and reaches its peer (AMI: logged in), 0 when it is down.", ConstLabels: prometheus.Labels{"worker": name}}, up))
		if name == "ami" {
			d.metrics.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pbxguard_ami_up",
				Help: "1 when pbxguard is logged in to the Asterisk Manager Interface, 0 when not (fraud monitoring and source: ami jails are blind)."}, up))
		}
	}
}

// SetWorkerUp records a worker's state; Since moves only when Up changes.
// err (may be nil) is kept as the last error.
func (d *Daemon) SetWorkerUp(name string, up bool, err error) {
	d.health.mu.Lock()
	defer d.health.mu.Unlock()
	if d.health.m == nil {
		d.health.m = map[string]*WorkerStatus{}
	}
	s := d.health.m[name]
	if s == nil {
		s = &WorkerStatus{Name: name, Since: d.now().UTC()}
		d.health.m[name] = s
	}
	if s.Up != up {
		s.Up, s.Since = up, d.now().UTC()
	}
	if err != nil {
		s.LastError = err.Error()
	}
}

func (d *Daemon) workerStatuses() []WorkerStatus {
	d.health.mu.Lock()
	defer d.health.mu.Unlock()
	out := make([]WorkerStatus, 0, len(d.health.m))
	for _, s := range d.health.m {
		out = append(out, *s)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// errString turns a non-empty message into an error (nil for "").
func errString(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}
