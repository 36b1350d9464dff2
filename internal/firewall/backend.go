// Package firewall puts bans into the kernel behind one small interface.
package firewall

import (
	"context"
	"math"
	"net/netip"
	"time"
)

// Permanent as a Ban's Timeout asks for an entry with no timeout: it never
// expires (nftables: an element without timeout in a set with the timeout
// flag; ipset: timeout 0; iptables: a rule whose stored end is year 9999).
// It is the largest duration, so that "the longer ban wins" needs no
// special case, and List reports such entries with Timeout Permanent.
const Permanent time.Duration = math.MaxInt64

// Ban is one entry in the kernel: an address (a /32 or /128 prefix) or a
// prefix (e.g. an IPv6 /64), dropped until Timeout elapses. The kernel
// entry carries its own timeout so that a dead daemon never leaves a ban
// forever.
type Ban struct {
	Prefix  netip.Prefix
	Timeout time.Duration // remaining time; 0 is not allowed for Add; Permanent = no timeout
}

// Backend is a kernel firewall. Implementations batch: Add and Delete take
// many entries and apply them in as few transactions as the kernel allows.
type Backend interface {
	// Name is the backend's config name: nftables, ipset, iptables, dry-run.
	Name() string
	// Init creates the backend's own tables, sets and chains if missing.
	// It never touches anything that is not pbxguard's.
	Init(ctx context.Context) error
	// Add inserts or refreshes bans (a present entry gets the new timeout).
	Add(ctx context.Context, bans []Ban) error
	// Delete removes entries; absent ones are not an error.
	Delete(ctx context.Context, prefixes []netip.Prefix) error
	// List returns what is in the kernel now, with remaining timeouts.
	List(ctx context.Context) ([]Ban, error)
	// Remove deletes everything pbxguard created in the kernel (its table,
	// sets, chains, rules) and nothing else.
	Remove(ctx context.Context) error
	Close() error
}
