package daemon

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/dashboard"
	"github.com/pbxguard/pbxguard/internal/store"
)

// dashboardWorker runs the dashboard when dashboard.listen is set. Its
// unban goes through Daemon.Unban (kernel, store, jails).
func dashboardWorker(cfg *config.Config, st *store.Store, log *slog.Logger) (*Worker, error) {
	dc, err := config.ParseDashboard(cfg.Dashboard)
	if err != nil || dc.Listen == "" {
		return nil, err
	}
	token, err := dc.Token()
	if err != nil {
		return nil, err
	}
	opts := dashboard.Options{Listen: dc.Listen, Store: st, Token: token, CertFile: dc.CertFile, KeyFile: dc.KeyFile,
		Logger: log.With("component", "dashboard")}
	if _, err := dashboard.New(opts); err != nil { // refuse a bad listen at start, not later
		return nil, err
	}
	return &Worker{Name: "dashboard", Run: func(ctx context.Context, d *Daemon) error {
		o := opts
		o.Unban = func(ctx context.Context, p netip.Prefix) error { _, err := d.Unban(ctx, p); return err }
		o.Health = d.dashboardHealth
		s, err := dashboard.New(o)
		if err != nil {
			return err
		}
		return s.Serve(ctx)
	}}, nil
}

// dashboardHealth is the daemon's protection state for the overview:
// the same kernel, store and worker state as `pbxguard status`.
func (d *Daemon) dashboardHealth() dashboard.Health {
	st := d.Status()
	h := dashboard.Health{KernelChecked: st.Kernel.Checked, KernelInSync: st.Kernel.InSync, OutOfSyncSince: st.Kernel.OutOfSyncSince,
		Missing: st.Kernel.Missing, KernelError: st.Kernel.LastError, StoreOK: st.Store.OK, StoreSince: st.Store.Since, StoreError: st.Store.LastError}
	for _, w := range st.Workers {
		h.Workers = append(h.Workers, dashboard.WorkerHealth{Name: w.Name, Up: w.Up, Since: w.Since, Error: w.LastError})
	}
	return h
}
