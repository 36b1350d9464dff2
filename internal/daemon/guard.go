package daemon

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/pbxguard/pbxguard/internal/firewall"
)

// allowGuard is the last door before the kernel: whatever path a ban took
// (jail, manual, restore, another package holding the backend), an entry
// that touches the allowlist is dropped here and logged.
type allowGuard struct {
	firewall.Backend
	allowed func(netip.Prefix) (netip.Prefix, bool)
	log     *slog.Logger
}

// GuardBackend wraps b so that Add never passes an allowlisted prefix.
func GuardBackend(b firewall.Backend, allowed func(netip.Prefix) (netip.Prefix, bool), log *slog.Logger) firewall.Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &allowGuard{Backend: b, allowed: allowed, log: log}
}

func (g *allowGuard) Add(ctx context.Context, bans []firewall.Ban) error {
	keep := bans[:0:0]
	for _, b := range bans {
		if entry, hit := g.allowed(b.Prefix); hit {
			g.log.Warn("allowlisted prefix kept out of the kernel", "prefix", b.Prefix, "allowlist", entry)
			continue
		}
		keep = append(keep, b)
	}
	if len(keep) == 0 {
		return nil
	}
	return g.Backend.Add(ctx, keep)
}
