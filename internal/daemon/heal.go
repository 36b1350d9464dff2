package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// Self-healing of the kernel state. Somebody runs `nft flush ruleset`
// (what `systemctl restart nftables` does), `pbxguard firewall remove`,
// `ipset destroy`, `iptables -F PBXGUARD`: the bans the store lists as
// active are no longer enforced. About once a second (Options.CheckEvery)
// the daemon asks the backend (firewall.Checker) whether its table, sets,
// chains and jumps are there and, where the backend can count them
// cheaply, whether the kernel holds at least the bans the store has; when
// not, it calls Init and adds every active ban with its remaining time.
// A heal that fails is retried with a doubling pause (up to healMaxPause),
// and each change of state is logged once, not every second.
//
// Why poll and not subscribe to nftables' netlink notifications: a
// listener on NFNLGRP_NFTABLES makes the kernel build one notification
// per set element for every ban added or expired (100k for a restore),
// and google/nftables' Monitor only delivers events when it listens to
// everything. The check costs 0.44 ms per second for nftables
// (BenchmarkKernelCheck), and a flushed table is back within a second
// (e2e TestHealAfterFlush: 0.57-0.66 s measured).

const healMaxPause = 30 * time.Second

// recheckAfter: a short entry count is checked again after this pause
// before it counts as a loss.
const recheckAfter = 200 * time.Millisecond

// expirySlack: bans that end within it are not counted as missing (the
// kernel may drop them a moment before the store does).
const expirySlack = 3 * time.Second

// KernelStatus tells whether the kernel holds what the store says.
type KernelStatus struct {
	// Checked is false for a backend that cannot be checked (dry-run).
	Checked bool `json:"checked"`
	InSync  bool `json:"in_sync"`
	// OutOfSyncSince is when the kernel was last seen to disagree (zero
	// when in sync).
	OutOfSyncSince time.Time `json:"out_of_sync_since,omitzero"`
	// Missing is what the last check found gone or short.
	Missing   []string  `json:"missing,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	LastErrAt time.Time `json:"last_error_at,omitzero"`
	Heals     uint64    `json:"heals"`
	LastHeal  time.Time `json:"last_heal,omitzero"`
	// LastLoss and LastMissing keep the last time the kernel was found
	// out of sync and what was missing then, after it is in sync again.
	LastLoss    time.Time `json:"last_loss,omitzero"`
	LastMissing []string  `json:"last_missing,omitempty"`
	LastCheck   time.Time `json:"last_check,omitzero"`
}

// kernelSync is the daemon's view of KernelStatus.
type kernelSync struct {
	mu sync.Mutex
	st KernelStatus
	// retryAt, retryPause: when the bans the kernel refused are tried
	// again (retryRefused).
	retryAt    time.Time
	retryPause time.Duration
}

// retryMaxPause bounds the pause between retries of refused bans.
const retryMaxPause = time.Minute

func (k *kernelSync) get() KernelStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.st
	st.Missing = append([]string(nil), st.Missing...)
	st.LastMissing = append([]string(nil), st.LastMissing...)
	return st
}

// setInSync records an agreeing kernel; it reports whether that is news.
func (d *Daemon) setInSync(now time.Time) bool {
	k := &d.kernel
	k.mu.Lock()
	defer k.mu.Unlock()
	changed := !k.st.InSync
	k.st.InSync, k.st.OutOfSyncSince, k.st.Missing, k.st.LastCheck = true, time.Time{}, nil, now
	if changed {
		k.st.LastError = ""
	}
	d.metrics.kernelInSync.Set(1)
	d.metrics.kernelOutOfSyncSince.Set(0)
	return changed
}

// setOutOfSync records a disagreeing kernel; it reports whether that is news.
func (d *Daemon) setOutOfSync(now time.Time, missing []string) bool {
	k := &d.kernel
	k.mu.Lock()
	defer k.mu.Unlock()
	changed := k.st.InSync || k.st.OutOfSyncSince.IsZero()
	if changed {
		k.st.OutOfSyncSince = now
	}
	k.st.LastLoss, k.st.LastMissing = now, missing
	k.st.InSync, k.st.Missing, k.st.LastCheck = false, missing, now
	d.metrics.kernelInSync.Set(0)
	d.metrics.kernelOutOfSyncSince.Set(float64(k.st.OutOfSyncSince.UnixMilli()) / 1000)
	return changed
}

// noteBackendError records the last backend error for status; it reports
// whether its text differs from the previous one (to log once).
func (d *Daemon) noteBackendError(now time.Time, err error) bool {
	k := &d.kernel
	k.mu.Lock()
	defer k.mu.Unlock()
	msg := err.Error()
	changed := msg != k.st.LastError
	k.st.LastError, k.st.LastErrAt = msg, now
	return changed
}

// reconciled records the state after the start's reconcile: in sync.
func (d *Daemon) reconciled() {
	_, checked := firewall.AsChecker(d.opts.Backend)
	d.kernel.mu.Lock()
	d.kernel.st.Checked = checked
	d.kernel.mu.Unlock()
	d.setInSync(d.now())
}

// healLoop checks the kernel and heals it until ctx is done.
func (d *Daemon) healLoop(ctx context.Context) {
	chk, ok := firewall.AsChecker(d.opts.Backend)
	if !ok {
		return
	}
	pause := d.opts.CheckEvery
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		if d.checkAndHeal(ctx, chk) {
			pause = d.opts.CheckEvery
		} else {
			pause = min(2*pause, healMaxPause)
		}
	}
}

// checkAndHeal runs one check and, when the kernel lost something, one
// heal. It returns false when the check or the heal failed.
func (d *Daemon) checkAndHeal(ctx context.Context, chk firewall.Checker) bool {
	d.fwMu.Lock()
	h, err := chk.Check(ctx)
	d.fwMu.Unlock()
	now := d.now()
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		d.metrics.backendErrors.WithLabelValues("check").Inc()
		d.setOutOfSync(now, []string{"unknown: the check failed"})
		if d.noteBackendError(now, err) {
			d.log.Error("firewall: cannot check the kernel state; retrying", "backend", d.opts.Backend.Name(), "err", err)
		}
		return false
	}
	missing := h.Missing
	if h.Intact() && h.Entries >= 0 {
		if short := d.shortBy(ctx, now, h.Entries); short != "" {
			// A count can be caught between two steps of a change (a
			// ban in the kernel but not yet in the store): believe it
			// when a second look, a moment later, agrees.
			select {
			case <-ctx.Done():
				return true
			case <-time.After(recheckAfter):
			}
			d.fwMu.Lock()
			h2, err := chk.Check(ctx)
			d.fwMu.Unlock()
			if err == nil && h2.Intact() && h2.Entries >= 0 {
				short = d.shortBy(ctx, d.now(), h2.Entries)
			}
			if short != "" {
				missing = []string{short}
			}
		}
	}
	if len(missing) == 0 {
		d.activeMu.Lock()
		refused := len(d.retry)
		d.activeMu.Unlock()
		if refused > 0 {
			// The objects are there but some bans were refused: not in
			// sync, and retryRefused (not a heal) tries them again.
			d.setOutOfSync(now, []string{fmt.Sprintf("%d ban(s) refused by the kernel, retried with a growing pause", refused)})
			return true
		}
		if d.setInSync(now) {
			d.log.Info("firewall: kernel agrees with the store", "backend", d.opts.Backend.Name())
		}
		return true
	}
	if d.setOutOfSync(now, missing) {
		d.log.Warn("firewall: kernel lost pbxguard's state; restoring it", "backend", d.opts.Backend.Name(),
			"missing", strings.Join(missing, "; "))
	}
	start := time.Now()
	n, err := d.heal(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return true
		}
		d.metrics.kernelHealFailures.Inc()
		if d.noteBackendError(d.now(), err) {
			d.log.Error("firewall: restoring the kernel state failed; retrying with a growing pause", "backend", d.opts.Backend.Name(), "err", err)
		}
		return false
	}
	d.metrics.kernelHeals.Inc()
	d.kernel.mu.Lock()
	d.kernel.st.Heals++
	d.kernel.st.LastHeal = d.now()
	d.kernel.retryAt = time.Time{} // refused bans: try again now
	d.kernel.mu.Unlock()
	d.setInSync(d.now())
	d.log.Warn("firewall: kernel state restored", "backend", d.opts.Backend.Name(), "bans", n,
		"took", time.Since(start).Round(time.Microsecond))
	return true
}

// shortBy compares the kernel's entry count with the store's active bans
// (those not about to end): "" when the kernel holds at least as many.
func (d *Daemon) shortBy(ctx context.Context, now time.Time, entries int) string {
	d.activeMu.Lock()
	approx := len(d.active)
	d.activeMu.Unlock()
	if entries >= approx {
		return ""
	}
	bans, err := d.opts.Store.ActiveBans(ctx, now.Add(expirySlack))
	if err != nil || entries >= len(bans) {
		return ""
	}
	return fmt.Sprintf("kernel holds %d entries, the store %d active bans", entries, len(bans))
}

// heal calls Init and adds every active ban of the store with its
// remaining time (bans queued for the store are written first). It
// returns how many bans it put back.
func (d *Daemon) heal(ctx context.Context) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	d.flushStore(fctx)
	cancel()
	d.fwMu.Lock()
	defer d.fwMu.Unlock()
	return d.healLocked(ctx)
}

func (d *Daemon) healLocked(ctx context.Context) (int, error) {
	b := d.opts.Backend
	if err := b.Init(ctx); err != nil {
		d.metrics.backendErrors.WithLabelValues("init").Inc()
		return 0, fmt.Errorf("firewall %s: init: %w", b.Name(), err)
	}
	now := d.now()
	active, err := d.opts.Store.ActiveBans(ctx, now)
	if err != nil {
		return 0, fmt.Errorf("reading active bans: %w", err)
	}
	fw := make([]firewall.Ban, 0, len(active))
	for _, ban := range active {
		if _, hit := d.opts.Allowed(ban.Prefix); hit {
			continue
		}
		if r := ban.Remaining(now); r > 0 {
			fw = append(fw, firewall.Ban{Prefix: ban.Prefix, Timeout: r})
		}
	}
	if len(fw) == 0 {
		return 0, nil
	}
	_, rest := d.splitRefused(b.Add(ctx, fw))
	if rest != nil {
		d.metrics.backendErrors.WithLabelValues("add").Inc()
		return 0, fmt.Errorf("firewall %s: restoring %d bans: %w", b.Name(), len(fw), rest)
	}
	return len(fw), nil
}

// addOrHealLocked adds bans (a manual ban); when the kernel refuses because
// pbxguard's table, set or chain is gone, it heals first and adds again,
// so that `pbxguard ban` works, or says clearly why not, instead of
// returning a raw netlink error.
func (d *Daemon) addOrHealLocked(ctx context.Context, bans []firewall.Ban) error {
	err := d.opts.Backend.Add(ctx, bans)
	if err == nil || errors.Is(err, firewall.ErrAllowlisted) || errors.Is(err, firewall.ErrUnsupportedPrefix) {
		return err
	}
	chk, ok := firewall.AsChecker(d.opts.Backend)
	if !ok {
		return err
	}
	h, cerr := chk.Check(ctx)
	if cerr != nil || h.Intact() {
		return err
	}
	now := d.now()
	if d.setOutOfSync(now, h.Missing) {
		d.log.Warn("firewall: kernel lost pbxguard's state; restoring it before the ban", "missing", strings.Join(h.Missing, "; "))
	}
	if _, herr := d.healLocked(ctx); herr != nil {
		d.noteBackendError(now, herr)
		return fmt.Errorf("the kernel lost pbxguard's %s and restoring it failed: %w (the daemon keeps retrying; see pbxguard status)",
			strings.Join(h.Missing, ", "), herr)
	}
	d.metrics.kernelHeals.Inc()
	d.kernel.mu.Lock()
	d.kernel.st.Heals++
	d.kernel.st.LastHeal = d.now()
	d.kernel.mu.Unlock()
	d.setInSync(d.now())
	return d.opts.Backend.Add(ctx, bans)
}

// retryRefused adds again the bans the kernel refused when they were
// decided, with a doubling pause (1 s to retryMaxPause) instead of every
// tick, logging once per distinct error. Until they are in, status says
// the kernel is out of sync (checkAndHeal).
func (d *Daemon) retryRefused(ctx context.Context, now time.Time) {
	k := &d.kernel
	k.mu.Lock()
	due := !now.Before(k.retryAt)
	k.mu.Unlock()
	if !due {
		return
	}
	d.activeMu.Lock()
	retry := d.retry
	d.retry = nil
	d.activeMu.Unlock()
	if len(retry) == 0 {
		return
	}
	var fw []firewall.Ban
	var keep []store.Ban
	for _, b := range retry {
		// The ban as it stands now: extended meanwhile, or lifted (unban,
		// expiry), in which case it is not put back.
		b, ok := d.inForce(b.Prefix)
		if !ok {
			continue
		}
		if r := b.Remaining(now); r > 0 {
			fw = append(fw, firewall.Ban{Prefix: b.Prefix, Timeout: r})
			keep = append(keep, b)
		}
	}
	d.fwMu.Lock()
	err := d.opts.Backend.Add(ctx, fw)
	d.fwMu.Unlock()
	if refused, rest := d.splitRefused(err); len(refused) > 0 {
		err = rest
		keep = slices.DeleteFunc(keep, func(b store.Ban) bool { return refused[b.Prefix] })
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		k.retryPause, k.retryAt = 0, time.Time{}
		return
	}
	d.metrics.backendErrors.WithLabelValues("add").Inc()
	d.activeMu.Lock()
	d.retry = append(d.retry, keep...)
	d.activeMu.Unlock()
	k.retryPause = min(max(2*k.retryPause, time.Second), retryMaxPause)
	k.retryAt = now.Add(k.retryPause)
	msg := err.Error()
	if msg != k.st.LastError {
		d.log.Error("firewall: bans refused by the kernel; retrying with a growing pause", "count", len(keep), "next_in", k.retryPause, "err", err)
	}
	k.st.LastError, k.st.LastErrAt = msg, now
}
