package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

func gauge(t *testing.T, d *Daemon, name string) (float64, bool) {
	t.Helper()
	mfs, err := d.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// Issue 9 point 5: an AMI worker that cannot start (or loses Asterisk)
// shows as down in status and /metrics (pbxguard_ami_up 0), with since when
// and why; it used to vanish into one log line while status showed nothing.
func TestWorkerDownInStatusAndMetrics(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	connected := make(chan struct{})
	d, err := New(Options{Store: st, Backend: newFakeBackend(), Workers: []Worker{{Name: "ami", Run: func(ctx context.Context, d *Daemon) error {
		select {
		case <-connected:
			d.SetWorkerUp("ami", true, nil)
			<-ctx.Done()
			return nil
		case <-ctx.Done():
			return nil
		case <-time.After(time.Millisecond):
			return errors.New(`AMI 127.0.0.1: address 127.0.0.1: missing port in address`)
		}
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := gauge(t, d, "pbxguard_ami_up"); !ok || v != 0 {
		t.Fatalf("pbxguard_ami_up before start = %v (exported %v), want 0", v, ok)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "the worker to fail", func() bool {
		ws := d.Status().Workers
		return len(ws) == 1 && ws[0].LastError != ""
	})
	ws := d.Status().Workers[0]
	if ws.Name != "ami" || ws.Up || ws.Since.IsZero() || ws.LastError != "AMI 127.0.0.1: address 127.0.0.1: missing port in address" {
		t.Fatalf("status = %+v", ws)
	}
	if v, _ := gauge(t, d, "pbxguard_ami_up"); v != 0 {
		t.Fatalf("pbxguard_ami_up = %v with the worker dead", v)
	}
	cancel()
	<-done

	// Up: 1, and since moves.
	d.SetWorkerUp("ami", true, nil)
	if v, _ := gauge(t, d, "pbxguard_ami_up"); v != 1 || !d.Status().Workers[0].Up || !d.Status().Workers[0].Since.After(ws.Since.Add(-time.Nanosecond)) {
		t.Fatalf("up: gauge %v status %+v", v, d.Status().Workers)
	}
}
