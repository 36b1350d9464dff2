package daemon

import (
	"context"
	"fmt"

	"github.com/pbxguard/pbxguard/internal/config"
)

// Serve runs the daemon until ctx is done. On each value from reload
// (SIGHUP) it re-reads the configuration with load; when that fails the
// running daemon goes on untouched (the errors are logged). When it works,
// the running daemon stops as at shutdown (queued decisions applied,
// positions saved, kernel entries kept) and one rebuilt from the new
// configuration (Rebuild) starts on the same store and kernel backend:
// bans are kept, every source resumes at its position, unchanged jails
// keep their counters. The control socket and /metrics are away for that
// moment (well under a second, plus the kernel restore of active bans).
//
// The caller closes b (the store and backend are shared by every rebuild).
func (b *Built) Serve(ctx context.Context, reload <-chan struct{}, load func() (*config.Config, error)) error {
	cur := b
	var prev *config.Config // the configuration before the last reload
	for {
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cur.Run(runCtx) }()
	wait:
		for {
			select {
			case err := <-done:
				stop()
				if err != nil && ctx.Err() == nil && cur != b && !cur.running.Load() && prev != nil {
					// The new configuration could not start (its metrics
					// port taken, say): back to the previous one.
					cur.log.Error("reload: the new configuration does not start; going back to the previous one", "err", err)
					next, rerr := cur.Rebuild(prev)
					if rerr != nil {
						return fmt.Errorf("%w; and rebuilding with the previous configuration: %w", err, rerr)
					}
					cur, prev = next, nil
					b.current.Store(cur)
					break wait
				}
				return err
			case <-reload:
				cfg, err := load()
				if err != nil {
					cur.log.Error("reload: the configuration has errors; still running the previous one", "err", err)
					continue
				}
				for _, w := range cfg.Warnings {
					cur.log.Warn(w)
				}
				cur.log.Info("reload: stopping to apply the new configuration")
				stop()
				if err := <-done; err != nil {
					return err
				}
				next, err := cur.Rebuild(cfg)
				if err != nil {
					cur.log.Error("reload: cannot apply the new configuration; going on with the previous one", "err", err)
					if next, err = cur.Rebuild(cur.cfg); err != nil {
						return fmt.Errorf("reload: rebuilding with the previous configuration: %w", err)
					}
				} else {
					cur.log.Info("reload: new configuration applied")
				}
				prev = cur.cfg
				cur = next
				b.current.Store(cur)
				break wait
			}
		}
	}
}

// Current is the daemon running now: b, or the last rebuild Serve started.
func (b *Built) Current() *Built {
	if c := b.current.Load(); c != nil {
		return c
	}
	return b
}
