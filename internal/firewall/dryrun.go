package firewall

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// DryRun records bans in memory and logs them; nothing reaches the kernel.
// It is what `auto` falls back to when no firewall works, and what
// `pbxguard demo` uses without root. Entries expire by their timeouts.
type DryRun struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]time.Time // expiry
}

// NewDryRun makes a dry-run backend.
func NewDryRun(opts Options) *DryRun {
	return &DryRun{opts: opts, log: opts.logger().With("backend", "dry-run"), now: time.Now, entries: map[netip.Prefix]time.Time{}}
}

// Name implements Backend.
func (d *DryRun) Name() string { return "dry-run" }

// Init implements Backend.
func (d *DryRun) Init(ctx context.Context) error {
	d.log.Warn("dry-run firewall: bans are recorded and logged, NOTHING is blocked in the kernel")
	return ctx.Err()
}

// Add implements Backend.
func (d *DryRun) Add(ctx context.Context, bans []Ban) error {
	bans, errs := validBans(bans, d.opts.Prefixes)
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range bans {
		if b.Timeout == Permanent {
			// Far enough that List's Sub saturates to Permanent.
			d.entries[b.Prefix] = time.Unix(1<<40, 0)
		} else {
			d.entries[b.Prefix] = now.Add(b.Timeout)
		}
		d.log.Info("dry-run: would ban", "prefix", b.Prefix, "for", b.Timeout)
	}
	return errors.Join(errs, ctx.Err())
}

// Delete implements Backend.
func (d *DryRun) Delete(ctx context.Context, prefixes []netip.Prefix) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range prefixes {
		q, err := normalize(p, true)
		if err != nil {
			continue
		}
		if _, ok := d.entries[q]; ok {
			delete(d.entries, q)
			d.log.Info("dry-run: would unban", "prefix", q)
		}
	}
	return ctx.Err()
}

// List implements Backend; expired entries are dropped.
func (d *DryRun) List(ctx context.Context) ([]Ban, error) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Ban, 0, len(d.entries))
	for p, exp := range d.entries {
		if !exp.After(now) {
			delete(d.entries, p)
			continue
		}
		out = append(out, Ban{Prefix: p, Timeout: exp.Sub(now)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out, ctx.Err()
}

// Remove implements Backend.
func (d *DryRun) Remove(ctx context.Context) error {
	d.mu.Lock()
	d.entries = map[netip.Prefix]time.Time{}
	d.mu.Unlock()
	return ctx.Err()
}

// Close implements Backend.
func (d *DryRun) Close() error { return nil }
