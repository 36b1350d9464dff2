package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

// fakeClock drives a supervisor: runs advance it, pauses are recorded and
// return at once.
type fakeClock struct {
	now    time.Time
	pauses []time.Duration
}

func (c *fakeClock) supervisor() supervisor {
	s := defaultSupervisor()
	s.now = func() time.Time { return c.now }
	s.after = func(d time.Duration) <-chan time.Time {
		c.pauses = append(c.pauses, d)
		ch := make(chan time.Time, 1)
		ch <- c.now
		return ch
	}
	return s
}

// runLengths is how long each run lasts before it fails; the run after the
// last one stops the test.
var runLengths = []time.Duration{0, 0, 0, 0, 0, 0, 0, 2 * time.Minute, 0, 0}

// wantPauses: doubling from 1 s, capped at 30 s, back to 1 s after the
// two-minute (healthy) run.
var wantPauses = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
	30 * time.Second, 30 * time.Second, time.Second, 2 * time.Second, 4 * time.Second}

func TestSupervisorBackoff(t *testing.T) {
	c := &fakeClock{now: time.Unix(1e9, 0)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := 0
	var told []time.Duration
	err := c.supervisor().run(ctx, func(context.Context) error {
		if runs == len(runLengths) {
			cancel()
			return nil
		}
		c.now = c.now.Add(runLengths[runs])
		runs++
		return errors.New("boom")
	}, func(err error, pause time.Duration) bool {
		told = append(told, pause)
		return true
	})
	if err != nil || !slices.Equal(c.pauses, wantPauses) || !slices.Equal(told, wantPauses) {
		t.Fatalf("err %v, pauses %v (told %v), want %v", err, c.pauses, told, wantPauses)
	}
	// Giving up returns the run's error.
	err = c.supervisor().run(context.Background(), func(context.Context) error { return errors.New("fatal") },
		func(error, time.Duration) bool { return false })
	if err == nil || err.Error() != "fatal" {
		t.Fatalf("give up: %v", err)
	}
}

// clockedFailingSource fails after advancing the clock by the next run length.
type clockedFailingSource struct {
	c      *fakeClock
	runs   *int
	cancel func()
}

func (s clockedFailingSource) Run(ctx context.Context, handle func(Line) error) error {
	if *s.runs == len(runLengths) {
		s.cancel()
		return nil
	}
	s.c.now = s.c.now.Add(runLengths[*s.runs])
	*s.runs++
	return errors.New("read: input/output error")
}

// The fraud CDR/CEL follower and the jail sources share the supervisor:
// its backoff resets after a healthy run (it never did for followCDR).
func TestFollowersShareSupervisor(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, which := range []string{"followCDR", "superviseSource"} {
		t.Run(which, func(t *testing.T) {
			c := &fakeClock{now: time.Unix(1e9, 0)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			runs := 0
			src := clockedFailingSource{c: c, runs: &runs, cancel: cancel}
			opens := 0
			open := func(store.Position) Source { opens++; return src }
			js := &jailState{spec: JailSpec{Name: "asterisk"}}
			sp := SourceSpec{Key: "asterisk:/var/log/asterisk/messages", Name: "/var/log/asterisk/messages", Source: src, Reopen: open, Detector: wordDetector{}}
			d, err := New(Options{Store: st, Backend: newFakeBackend(), Jails: []JailSpec{js.spec}})
			if err != nil {
				t.Fatal(err)
			}
			d.sup = c.supervisor()
			if which == "followCDR" {
				d.followCDR(ctx, "cdr", callFileKey("cdr", "/var/log/asterisk/cdr-csv/Master.csv"), store.Position{}, open, func([]byte) error { return nil })
			} else if err := d.superviseSource(ctx, js, sp, nil); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.pauses, wantPauses) {
				t.Fatalf("pauses %v, want %v", c.pauses, wantPauses)
			}
		})
	}
}
