package daemon

import (
	"context"
	"errors"
	"time"
)

// supervisor restarts a followed source (a jail's log file or journal, the
// fraud CDR and CEL files) that stops while the daemon runs: after a pause
// of min, doubling up to max, and back to min after a run that lasted
// healthy or longer, so that a source failing once a day is not reopened
// 30 s late for the rest of the daemon's life.
type supervisor struct {
	min, max, healthy time.Duration
	now               func() time.Time
	after             func(time.Duration) <-chan time.Time
}

func defaultSupervisor() supervisor {
	return supervisor{min: time.Second, max: 30 * time.Second, healthy: time.Minute, now: time.Now, after: time.After}
}

// run calls run until ctx is done (then it returns nil). When run returns
// while ctx is live (an error, or nil: "stopped"), stopped is told the
// error and the pause before the next run; it returns false to give up,
// and run then returns that error.
func (s supervisor) run(ctx context.Context, run func(context.Context) error, stopped func(err error, pause time.Duration) bool) error {
	pause := s.min
	for {
		started := s.now()
		err := run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("stopped")
		}
		if s.now().Sub(started) >= s.healthy {
			pause = s.min
		}
		if !stopped(err, pause) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.after(pause):
		}
		pause = min(2*pause, s.max)
	}
}
