package firewall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// IPTables keeps one DROP rule per banned address or prefix in chain
// PBXGUARD (iptables and ip6tables), jumped to from INPUT. Changes go in
// batches through one `iptables-restore --noflush` per family and call.
//
// Timeouts: iptables rules have none, so they are emulated. Each rule
// carries its absolute expiry in a comment ("pbxguard until=UNIX"), so the
// kernel itself stores it and it survives a daemon restart: Init reads the
// rules back with iptables-save, drops those already expired, and List
// returns the stored remaining time. While the backend is open, an expiry
// loop (started by Init, stopped by Close) deletes rules whose time has
// come, once a second. If the daemon is dead, rules stay until it runs
// again: the one backend where a crashed daemon can leave a ban past its
// time (bounded by the next start).
type IPTables struct {
	opts Options
	log  *slog.Logger
	r    runner
	now  func() time.Time

	mu      sync.Mutex
	entries map[netip.Prefix]int64 // expiry, unix seconds, as written in the rule
	warned  bool                   // the many-rules warning was logged
	stop    chan struct{}
	done    chan struct{}
}

// NewIPTables checks that the tools exist; it changes nothing until Init.
func NewIPTables(opts Options) (*IPTables, error) {
	for _, f := range ipFamilies {
		for _, t := range []string{f.tables, f.restore, f.save} {
			if _, err := lookTool(opts, t, "iptables"); err != nil {
				return nil, err
			}
		}
	}
	return &IPTables{opts: opts, log: opts.logger().With("backend", "iptables"), r: newRunner(opts),
		now: time.Now, entries: map[netip.Prefix]int64{}}, nil
}

// Name implements Backend.
func (t *IPTables) Name() string { return "iptables" }

var iptRuleRE = regexp.MustCompile(`^-A ` + IPTChain + ` -s (\S+) -m comment --comment "?pbxguard until=(\d+)"? -j DROP$`)

func iptRule(p netip.Prefix, until int64) string {
	return fmt.Sprintf("-s %s -m comment --comment \"pbxguard until=%d\" -j DROP", p, until)
}

// Init implements Backend: chain and jumps, then the existing rules are
// read back (expired ones deleted) and the expiry loop starts.
func (t *IPTables) Init(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range ipFamilies {
		if err := ensureChain(ctx, t.r, f, nil, hooks(t.opts)); err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
	}
	if err := t.loadLocked(ctx); err != nil {
		return err
	}
	if err := t.expireLocked(ctx); err != nil {
		return err
	}
	if t.stop == nil {
		t.stop, t.done = make(chan struct{}), make(chan struct{})
		go t.expiryLoop(t.stop, t.done)
	}
	t.log.Info("iptables: ready", "chain", IPTChain, "rules", len(t.entries))
	return nil
}

// loadLocked rebuilds the map from iptables-save.
func (t *IPTables) loadLocked(ctx context.Context) error {
	t.entries = map[netip.Prefix]int64{}
	for _, f := range ipFamilies {
		out, err := t.r.run(ctx, nil, f.save, "-t", "filter")
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			m := iptRuleRE.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			p, err := parsePrefixOrAddr(m[1])
			if err != nil {
				continue
			}
			until, _ := strconv.ParseInt(m[2], 10, 64)
			t.entries[p] = until
		}
	}
	return nil
}

func (t *IPTables) expiryLoop(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			t.mu.Lock()
			if err := t.expireLocked(ctx); err != nil {
				t.log.Error("iptables: removing expired bans", "err", err)
			}
			t.mu.Unlock()
			cancel()
		}
	}
}

func (t *IPTables) expireLocked(ctx context.Context) error {
	now := t.now().Unix()
	var del []netip.Prefix
	for p, until := range t.entries {
		if until <= now {
			del = append(del, p)
		}
	}
	if len(del) == 0 {
		return nil
	}
	return t.applyLocked(ctx, nil, del)
}

// iptRewriteMin: from this many deletions in one family on, the chain is
// flushed and written anew inside the same restore transaction. iptables
// (nft backend) finds a rule to delete by comparing it with every rule of
// the chain, so thousands of -D lines cost O(n²); a rewrite costs O(n).
const iptRewriteMin = 64

// applyLocked writes one restore script (one transaction) per family:
// deletions of the rules as they are now, then additions, and updates the
// map on success.
func (t *IPTables) applyLocked(ctx context.Context, add map[netip.Prefix]int64, del []netip.Prefix) error {
	var errs error
	for _, f := range ipFamilies {
		var famDel, famAdd []netip.Prefix
		// Only rules that are there, each once: iptables-restore fails the
		// whole transaction on a -D that matches nothing, and an absent
		// entry is not an error (Backend.Delete).
		seen := make(map[netip.Prefix]bool, len(del))
		for _, p := range del {
			if _, ok := t.entries[p]; ok && p.Addr().Is6() == f.v6 && !seen[p] {
				seen[p] = true
				famDel = append(famDel, p)
			}
		}
		for p, until := range add {
			if old, ok := t.entries[p]; p.Addr().Is6() == f.v6 && (!ok || old != until) {
				famAdd = append(famAdd, p)
			}
		}
		if len(famDel)+len(famAdd) == 0 {
			continue
		}
		var buf bytes.Buffer
		buf.WriteString("*filter\n")
		if len(famDel) >= iptRewriteMin {
			skip := make(map[netip.Prefix]bool, len(famDel)+len(famAdd))
			for _, p := range famDel {
				skip[p] = true
			}
			for _, p := range famAdd {
				skip[p] = true
			}
			fmt.Fprintf(&buf, "-F %s\n", IPTChain)
			for p, until := range t.entries {
				if p.Addr().Is6() == f.v6 && !skip[p] {
					fmt.Fprintf(&buf, "-A %s %s\n", IPTChain, iptRule(p, until))
				}
			}
		} else {
			for _, p := range famDel {
				fmt.Fprintf(&buf, "-D %s %s\n", IPTChain, iptRule(p, t.entries[p]))
			}
			for _, p := range famAdd {
				if old, ok := t.entries[p]; ok {
					fmt.Fprintf(&buf, "-D %s %s\n", IPTChain, iptRule(p, old))
				}
			}
		}
		for _, p := range famAdd {
			fmt.Fprintf(&buf, "-A %s %s\n", IPTChain, iptRule(p, add[p]))
		}
		buf.WriteString("COMMIT\n")
		if _, err := t.r.run(ctx, &buf, f.restore, "-w", "5", "--noflush"); err != nil {
			errs = errors.Join(errs, fmt.Errorf("iptables: %d deletions, %d additions: %w", len(famDel), len(famAdd), err))
			continue
		}
		for _, p := range famDel {
			delete(t.entries, p)
		}
		for _, p := range famAdd {
			t.entries[p] = add[p]
		}
	}
	return errs
}

// iptForever is the stored end of a permanent rule (9999-12-31T23:59:59Z):
// the expiry loop never reaches it, and List reports Permanent for it.
const iptForever int64 = 253402300799

// Add implements Backend.
func (t *IPTables) Add(ctx context.Context, bans []Ban) error {
	bans, errs := validBans(bans, t.opts.Prefixes)
	now := t.now()
	add := make(map[netip.Prefix]int64, len(bans))
	for _, b := range bans {
		if b.Timeout == Permanent {
			add[b.Prefix] = iptForever
			continue
		}
		add[b.Prefix] = untilSecond(now, b.Timeout)
	}
	if len(add) == 0 {
		return errs
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	errs = errors.Join(errs, t.capLocked(add))
	if len(add) == 0 {
		return errs
	}
	if err := t.applyLocked(ctx, add, nil); err != nil {
		// The map may disagree with the kernel (rules changed by hand):
		// read the truth and try once more.
		if lerr := t.loadLocked(ctx); lerr != nil {
			return errors.Join(errs, err, lerr)
		}
		if err := t.applyLocked(ctx, add, nil); err != nil {
			return errors.Join(errs, err)
		}
	}
	return errs
}

// untilSecond is the end of a ban as the rule stores it: now+timeout
// rounded up to the second. Rounding the end, not the timeout, makes the
// same end give the same rule at every restart (rounding the timeout and
// adding it to the truncated now moved the end up to 1 s later each time).
func untilSecond(now time.Time, timeout time.Duration) int64 {
	end := now.Add(timeout)
	sec := end.Unix()
	if end.Nanosecond() > 0 {
		sec++
	}
	return max(sec, now.Unix()+1)
}

// IPTablesMaxRules is the most ban rules the iptables backend holds.
// Every inbound packet walks the chain rule by rule: measured with 10,000
// rules, ~0.34 ms more per packet (nftables and ipset look the source up
// in a hash, whatever their size). Past IPTablesWarnRules it warns once;
// past the cap (or Options.MaxElem when smaller) new bans are refused
// with ErrTooManyRules.
const (
	IPTablesMaxRules  = 10000
	IPTablesWarnRules = 1000
)

// ErrTooManyRules is wrapped by the iptables backend's Add for bans past
// its cap.
var ErrTooManyRules = errors.New("the iptables backend holds at most IPTablesMaxRules rules (each costs every packet; use firewall.backend: nftables or ipset)")

// capLocked drops from add the new entries past the cap, and says so.
func (t *IPTables) capLocked(add map[netip.Prefix]int64) error {
	limit := min(t.opts.maxElem(), IPTablesMaxRules)
	n := len(t.entries)
	var refused []netip.Prefix
	for p := range add {
		if _, ok := t.entries[p]; ok {
			continue
		}
		if n >= limit {
			refused = append(refused, p)
			delete(add, p)
			continue
		}
		n++
	}
	if n >= IPTablesWarnRules && !t.warned {
		t.warned = true
		t.log.Warn("iptables: many ban rules; every inbound packet walks them all (~0.34 ms per packet at 10,000): use firewall.backend: nftables or ipset",
			"rules", n, "cap", limit)
	}
	if len(refused) > 0 {
		return fmt.Errorf("iptables: %d bans refused, chain %s holds %d rules (cap %d): %w", len(refused), IPTChain, len(t.entries), limit, ErrTooManyRules)
	}
	return nil
}

// Delete implements Backend; absent entries are skipped.
func (t *IPTables) Delete(ctx context.Context, prefixes []netip.Prefix) error {
	var del []netip.Prefix
	for _, p := range prefixes {
		if q, err := normalize(p, true); err == nil {
			del = append(del, q)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.applyLocked(ctx, nil, del); err != nil {
		if lerr := t.loadLocked(ctx); lerr != nil {
			return errors.Join(err, lerr)
		}
		return t.applyLocked(ctx, nil, del)
	}
	return nil
}

// List implements Backend: the rules with their stored remaining time.
func (t *IPTables) List(ctx context.Context) ([]Ban, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	out := make([]Ban, 0, len(t.entries))
	for p, until := range t.entries {
		rem := time.Unix(until, 0).Sub(now)
		if rem <= 0 {
			continue
		}
		if until >= iptForever {
			rem = Permanent
		}
		out = append(out, Ban{Prefix: p, Timeout: rem})
	}
	return out, ctx.Err()
}

// Remove implements Backend: jumps, rules and chain, both families.
func (t *IPTables) Remove(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs error
	for _, f := range ipFamilies {
		errs = errors.Join(errs, removeChain(ctx, t.r, f))
	}
	t.entries = map[netip.Prefix]int64{}
	return errs
}

// Close implements Backend: stops the expiry loop; rules stay.
func (t *IPTables) Close() error {
	t.mu.Lock()
	stop, done := t.stop, t.done
	t.stop, t.done = nil, nil
	t.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return nil
}
