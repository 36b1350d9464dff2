// Package detect turns log lines into events. One file per service
// (asterisk.go, sshd.go); the registry below is the one place that names
// them all.
package detect

import (
	"fmt"
	"sort"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// Detector reads one line and reports at most one event.
//
// Detect fills *ev (which the caller may reuse between lines) and returns
// true when the line is an event. It must not retain line, must not
// allocate in steady state, and must be safe for a single goroutine (one
// Detector per source; create several for parallel use).
type Detector interface {
	Name() string
	Detect(line []byte, ev *event.Event) bool
}

// Options tune a detector.
type Options struct {
	// Location is the zone of timestamps that carry none. Nil means time.Local.
	Location *time.Location
	// Now returns the current time; year-less stamps get the year that does
	// not put them in the future relative to Now. Nil means time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// constructors is the explicit registry of detectors.
var constructors = map[string]func(Options) Detector{
	"asterisk": newAsterisk,
	"sshd":     newSSHD,
	"auto":     newAuto,
}

// Names lists the registered detectors, sorted.
func Names() []string {
	names := make([]string, 0, len(constructors))
	for n := range constructors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New returns the detector called name.
func New(name string, opts Options) (Detector, error) {
	c, ok := constructors[name]
	if !ok {
		return nil, fmt.Errorf("detect: unknown detector %q (known: %v)", name, Names())
	}
	return c(opts.withDefaults()), nil
}
