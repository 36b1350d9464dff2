package firewall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Names of what the nftables backend owns in the kernel. Everything lives
// in one table so that Remove is a single "delete table" that cannot touch
// anybody else's rules.
const (
	NftTable   = "pbxguard"
	NftSet4    = "banned4"    // single IPv4 addresses (hash, timeout)
	NftSet6    = "banned6"    // single IPv6 addresses (hash, timeout)
	NftSet4Net = "banned4net" // IPv4 prefixes (interval, timeout), with Options.Prefixes
	NftSet6Net = "banned6net" // IPv6 prefixes such as /64 (interval, timeout), with Options.Prefixes
	NftInput   = "input"
	NftForward = "forward"
)

// nftPriority is the priority of our base chains. The usual filter chains
// (nft's "filter" priority, iptables-nft's INPUT, firewalld, ufw) sit at 0;
// at -10 our drop runs before them, so a ban holds even when the host's own
// policy would accept the packet (an "accept" in one base chain does not stop
// the packet from traversing a later one, but a "drop" anywhere is final).
// It stays after conntrack (-200) and NAT destination (-100), so the source
// we match is the real one.
const nftPriority = -10

// Chunking. A set-element message carries its elements in one nested
// netlink attribute whose length is a 16-bit field: a list past 65,535 bytes
// wraps, and the kernel then parses only part of it. Measured on 6.18 with
// google/nftables v0.3.0, timed elements, one message each: IPv4 2,339
// elements (65,492 bytes) arrive whole, 2,341 (65,548) are refused; IPv6
// 1,637 (65,480) arrive whole, 1,639 return NO error and 0 arrive, 2,000
// return no error and 361 arrive. So "2,000 per message" is not safe for
// IPv6 (DESIGN.md's 4,000-element loss is the same wrap). Every
// message holds at most nftMaxElems elements and at most nftMaxListBytes of
// encoded elements; many such messages travel in one batch (one Flush =
// one transaction), bounded by nftMaxBatchBytes, for which the socket's send
// buffer is raised.
const (
	nftMaxElems      = 2000
	nftMaxListBytes  = 60000
	nftMaxBatchBytes = 4 << 20
	nftSockBuf       = 16 << 20
)

// nftSet is one of our sets and the rule that drops its members.
type nftSet struct {
	set   *nftables.Set
	proto byte   // NFPROTO_IPV4 / NFPROTO_IPV6
	off   uint32 // source address offset in the network header
	tag   []byte // userdata on the rule, so Init can recognise it
}

// Nftables is the netlink nftables backend: table inet pbxguard with sets
// banned4 and banned6 (flags timeout, and interval when Options.Prefixes)
// and base chains that drop their members.
type Nftables struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	conn   *nftables.Conn
	nsFile *os.File
	table  *nftables.Table
	sets   []nftSet // banned4, banned6 [, banned4net, banned6net]

	// covered: prefixes not in the kernel because a wider one covers
	// them but ends first, with their end: added when the wider goes.
	covered map[netip.Prefix]time.Time

	// legacyRefresh: re-adding a present element does not update its
	// timeout on this kernel (before 6.10), so Add re-creates elements.
	legacyRefresh bool
}

// NewNftables opens a netlink connection (in Options.NetNS / NetNSFd when
// given). It changes nothing in the kernel until Init.
func NewNftables(opts Options) (*Nftables, error) {
	n := &Nftables{opts: opts, log: opts.logger().With("backend", "nftables"), covered: map[netip.Prefix]time.Time{}}
	fd := opts.NetNSFd
	if fd <= 0 && opts.NetNS != "" {
		f, err := os.Open(filepath.Join("/run/netns", opts.NetNS))
		if err != nil {
			return nil, fmt.Errorf("nftables: network namespace %q: %w (create it with 'ip netns add %s')", opts.NetNS, err, opts.NetNS)
		}
		n.nsFile = f
		fd = int(f.Fd())
	}
	connOpts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(raiseBuffers)}
	if fd > 0 {
		connOpts = append(connOpts, nftables.WithNetNSFd(fd))
	}
	if opts.NetlinkDial != nil {
		connOpts = append(connOpts, nftables.WithTestDial(opts.NetlinkDial))
	}
	c, err := nftables.New(connOpts...)
	if err != nil {
		n.closeNS()
		return nil, fmt.Errorf("nftables: opening netlink: %w", err)
	}
	n.conn = c
	n.defineSets()
	n.legacyRefresh = opts.LegacyRefresh || !kernelAtLeast(6, 10)
	if n.legacyRefresh {
		n.log.Debug("nftables: kernel before 6.10, refreshing timeouts by delete and add")
	}
	return n, nil
}

// defineSets describes our table and sets (nothing is sent).
func (n *Nftables) defineSets() {
	n.table = &nftables.Table{Name: NftTable, Family: nftables.TableFamilyINet}
	// Single addresses live in hash sets (fast: 100k in one batch), prefixes
	// in separate interval sets that exist only with Options.Prefixes:
	// an rbtree interval set with timeouts takes ~10x longer to load, and
	// a hash set cannot hold prefixes.
	size := uint32(n.opts.maxElem())
	mk := func(name string, kt nftables.SetDatatype, interval bool, proto byte, off uint32) nftSet {
		return nftSet{
			set:   &nftables.Set{Table: n.table, Name: name, KeyType: kt, HasTimeout: true, Interval: interval, Size: size},
			proto: proto, off: off, tag: []byte("pbxguard:drop:" + name),
		}
	}
	n.sets = []nftSet{
		mk(NftSet4, nftables.TypeIPAddr, false, unix.NFPROTO_IPV4, 12),
		mk(NftSet6, nftables.TypeIP6Addr, false, unix.NFPROTO_IPV6, 8),
	}
	if n.opts.Prefixes {
		n.sets = append(n.sets,
			mk(NftSet4Net, nftables.TypeIPAddr, true, unix.NFPROTO_IPV4, 12),
			mk(NftSet6Net, nftables.TypeIP6Addr, true, unix.NFPROTO_IPV6, 8))
	}
}

// kernelAtLeast reports whether the running kernel is at least major.minor.
// Unknown versions count as old (the legacy path is correct everywhere).
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || (ma == major && mi >= minor)
}

// raiseBuffers lets one batch carry megabytes (100k elements) and the
// kernel's acks come back without ENOBUFS. The *FORCE variants need
// CAP_NET_ADMIN, which a firewall backend has anyway; plain SO_SNDBUF is
// the fallback (capped by net.core.wmem_max).
func raiseBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil // not a kernel socket (the test dialer): no buffers to raise
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], nftSockBuf); e != nil {
				if e2 := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], nftSockBuf); e2 != nil {
					serr = e2
				}
			}
		}
	}); err != nil {
		return fmt.Errorf("nftables: netlink socket: %w", err)
	}
	if serr != nil {
		// A small buffer only means that a large batch fails loudly (and
		// is retried in smaller chunks), never silently: say it once.
		slog.Default().Warn("nftables: could not raise the netlink socket buffers; large batches will be split", "err", serr)
	}
	return nil
}

// Name implements Backend.
func (n *Nftables) Name() string { return "nftables" }

// Probe reports whether the kernel accepts a netlink nftables table: it
// creates and deletes a scratch table in one aborted-safe sequence.
func (n *Nftables) Probe() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := &nftables.Table{Name: "pbxguard_probe", Family: nftables.TableFamilyINet}
	n.conn.AddTable(t)
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: kernel refused a table: %w", err)
	}
	n.conn.DelTable(t)
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: deleting probe table: %w", err)
	}
	return nil
}

// Init creates table, sets and chains if missing and repairs them when they
// differ (a set of the wrong kind is recreated: the daemon reloads its bans
// from the store afterwards). Other tables are never looked at.
func (n *Nftables) Init(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	// A set that exists with other flags cannot be altered in place (rules
	// reference it): drop the whole table and build it fresh. A set we no
	// longer want (prefixes turned off) is deleted once no rule uses it. The
	// size follows the configured cap: NEWSET on an existing set updates it.
	want := map[string]*nftables.Set{}
	for _, s := range n.sets {
		want[s.set.Name] = s.set
	}
	var unwanted []*nftables.Set
	if sets, err := n.conn.GetSets(n.table); err == nil {
		for _, s := range sets {
			w, ok := want[s.Name]
			if !ok {
				unwanted = append(unwanted, s)
				continue
			}
			if s.Interval != w.Interval || !s.HasTimeout || s.KeyType.Name != w.KeyType.Name {
				n.log.Warn("nftables: set differs from the configuration; recreating table inet pbxguard (bans are reloaded by the daemon)",
					"set", s.Name, "interval", s.Interval, "prefixes", n.opts.Prefixes)
				n.conn.DelTable(n.table)
				if err := n.conn.Flush(); err != nil {
					return fmt.Errorf("nftables: deleting mismatched table inet %s: %w", NftTable, err)
				}
				unwanted = nil
				break
			}
		}
	}
	// Create-if-missing: NEWTABLE/NEWSET/NEWCHAIN without NLM_F_EXCL are
	// no-ops for what exists.
	n.conn.AddTable(n.table)
	for _, s := range n.sets {
		if err := n.conn.AddSet(s.set, nil); err != nil {
			return fmt.Errorf("nftables: set %s: %w", s.set.Name, err)
		}
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: creating table inet %s and its sets: %w", NftTable, err)
	}
	// AddSet assigns batch-local IDs; later lookups go by name.
	for _, c := range []struct {
		name string
		hook *nftables.ChainHook
		want bool
	}{{NftInput, nftables.ChainHookInput, true}, {NftForward, nftables.ChainHookForward, n.opts.Forward}} {
		if err := n.reconcileChain(c.name, c.hook, c.want); err != nil {
			return err
		}
	}
	for _, s := range unwanted {
		n.conn.DelSet(&nftables.Set{Table: n.table, Name: s.Name})
		if err := n.conn.Flush(); err != nil {
			return fmt.Errorf("nftables: deleting set %s (prefixes off): %w", s.Name, err)
		}
	}
	n.log.Info("nftables: ready", "table", "inet "+NftTable, "prefixes", n.opts.Prefixes, "forward", n.opts.Forward)
	return nil
}

func (n *Nftables) reconcileChain(name string, hook *nftables.ChainHook, want bool) error {
	existing, err := n.conn.ListChain(n.table, name)
	exists := err == nil && existing != nil
	if !want {
		if exists {
			n.conn.DelChain(&nftables.Chain{Name: name, Table: n.table})
			if err := n.conn.Flush(); err != nil {
				return fmt.Errorf("nftables: deleting chain %s (forward disabled): %w", name, err)
			}
		}
		return nil
	}
	policy := nftables.ChainPolicyAccept
	ch := &nftables.Chain{
		Name: name, Table: n.table, Type: nftables.ChainTypeFilter,
		Hooknum: hook, Priority: nftables.ChainPriorityRef(nftPriority), Policy: &policy,
	}
	if exists && (existing.Priority == nil || *existing.Priority != nftPriority || existing.Hooknum == nil || *existing.Hooknum != *hook) {
		// Wrong hook or priority: a base chain cannot be re-hooked.
		n.conn.DelChain(ch)
		if err := n.conn.Flush(); err != nil {
			return fmt.Errorf("nftables: replacing chain %s: %w", name, err)
		}
		exists = false
	}
	if exists {
		rules, err := n.conn.GetRules(n.table, ch)
		if err == nil && len(rules) == len(n.sets) {
			intact := true
			for i, r := range rules {
				intact = intact && bytes.Equal(r.UserData, n.sets[i].tag)
			}
			if intact {
				return nil // keep it, and its counters
			}
		}
	}
	// Chain, flush and rules in one transaction: never a moment without the drop rules.
	n.conn.AddChain(ch)
	n.conn.FlushChain(ch)
	for _, s := range n.sets {
		n.conn.AddRule(&nftables.Rule{Table: n.table, Chain: ch, UserData: s.tag, Exprs: dropExprs(s.proto, s.off, s.set.KeyType.Bytes, s.set.Name)})
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: chain %s and its rules: %w", name, err)
	}
	return nil
}

// dropExprs is `meta nfproto X <l3> saddr @set counter drop`.
func dropExprs(proto byte, off, length uint32, set string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: length},
		&expr.Lookup{SourceRegister: 1, SetName: set},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// elemOp is one element list for one set: what goes into one netlink message.
type elemOp struct {
	set   *nftables.Set
	elems []nftables.SetElement
	bytes int
	bans  []netip.Prefix  // the bans behind elems, for retries and errors
	tos   []time.Duration // their timeouts
}

// elemSize is the encoded size of one element (see makeElemList in
// google/nftables): item header, nested key with its value, optional flags
// and timeout.
func elemSize(keyLen int, intervalEnd, timeout bool) int {
	s := 4 + 4 + 4 + (keyLen+3)&^3
	if intervalEnd {
		s += 8
	}
	if timeout {
		s += 12
	}
	return s
}

// toElems turns a prefix into set elements: one key for a hash set, a
// [start, end) pair for an interval set.
func (n *Nftables) toElems(p netip.Prefix, timeout time.Duration) (els [2]nftables.SetElement, count int, set *nftables.Set, size int) {
	set = n.setFor(p)
	start := p.Addr().AsSlice()
	keyLen := len(start)
	els[0] = nftables.SetElement{Key: start, Timeout: timeout}
	size = elemSize(keyLen, false, timeout > 0)
	if !set.Interval {
		return els, 1, set, size
	}
	end, ok := prefixEnd(p)
	if !ok {
		return els, 1, set, size
	}
	// The kernel refuses (EINVAL) a timeout on an interval's end element:
	// the start element's timeout governs the interval.
	els[1] = nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true}
	return els, 2, set, size + elemSize(keyLen, true, false)
}

// setFor picks the set for a normalized prefix: the hash set of its family
// for a single address, else the family's interval set (present when
// Options.Prefixes; normalize refuses prefixes otherwise).
func (n *Nftables) setFor(p netip.Prefix) *nftables.Set {
	i := 0
	if p.Addr().Is6() {
		i = 1
	}
	if !p.IsSingleIP() && len(n.sets) == 4 {
		i += 2
	}
	return n.sets[i].set
}

// prefixEnd is the first address after p; false when p reaches the top of
// the address space.
func prefixEnd(p netip.Prefix) (netip.Addr, bool) {
	last := lastAddr(p)
	next := last.Next()
	return next, next.IsValid()
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

// plan groups elements into messages of bounded size.
func (n *Nftables) plan(prefixes []netip.Prefix, timeouts []time.Duration) []elemOp {
	cur := map[*nftables.Set]*elemOp{}
	var ops []elemOp
	for i, p := range prefixes {
		var to time.Duration
		if timeouts != nil {
			to = timeouts[i]
		}
		els, k, set, size := n.toElems(p, to)
		op := cur[set]
		if op == nil || len(op.elems)+k > nftMaxElems || op.bytes+size > nftMaxListBytes {
			if op != nil {
				ops = append(ops, *op)
			}
			c := min(len(prefixes)-i, nftMaxElems/2)
			op = &elemOp{set: set, elems: make([]nftables.SetElement, 0, 2*c), bans: make([]netip.Prefix, 0, c), tos: make([]time.Duration, 0, c)}
			cur[set] = op
		}
		op.elems = append(op.elems, els[:k]...)
		op.bytes += size
		op.bans = append(op.bans, p)
		op.tos = append(op.tos, to)
	}
	for _, s := range n.sets {
		if op := cur[s.set]; op != nil {
			ops = append(ops, *op)
		}
	}
	return ops
}

// send queues ops into batches of bounded size and flushes each batch as one
// transaction. del selects delete instead of add. On a failed batch, the
// failed batch's ops are returned for the caller to retry smaller.
func (n *Nftables) send(ops []elemOp, del, forceReadd bool) (failed []elemOp, err error) {
	readd := !del && (n.legacyRefresh || forceReadd)
	var batch []elemOp
	size := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if e := n.conn.Flush(); e != nil {
			failed = append(failed, batch...)
			err = errors.Join(err, e)
		}
		batch, size = batch[:0], 0
	}
	for _, op := range ops {
		cost := op.bytes
		if readd {
			cost *= 3
		}
		if size+cost > nftMaxBatchBytes {
			flush()
		}
		var e error
		switch {
		case del:
			e = n.conn.SetDeleteElements(op.set, op.elems)
		case readd:
			// Kernels before 6.10 keep the old timeout when a present
			// element is added again. Add (creates what is missing),
			// delete, add again, all in one transaction: every element
			// ends up fresh with the new timeout, with no gap.
			keys := make([]nftables.SetElement, len(op.elems))
			for i, el := range op.elems {
				keys[i] = nftables.SetElement{Key: el.Key, IntervalEnd: el.IntervalEnd}
			}
			e = errors.Join(n.conn.SetAddElements(op.set, op.elems),
				n.conn.SetDeleteElements(op.set, keys),
				n.conn.SetAddElements(op.set, op.elems))
		default:
			e = n.conn.SetAddElements(op.set, op.elems)
		}
		if e != nil {
			return nil, fmt.Errorf("nftables: encoding elements: %w", e)
		}
		batch = append(batch, op)
		size += cost
	}
	flush()
	return failed, err
}

// Add implements Backend. The whole call normally goes into the kernel as
// one transaction (up to 4 MiB of elements, ~100k bans); a present element
// gets the new timeout (kernels >= 6.10 update it on re-add). If the kernel
// refuses a batch (e.g. an overlapping interval), its bans are retried one
// per transaction so that one bad entry cannot keep the others out, and the
// refused ones are named in the error.
func (n *Nftables) Add(ctx context.Context, bans []Ban) error {
	if len(bans) == 0 {
		return nil
	}
	bans, errs := validBans(bans, n.opts.Prefixes)
	prefixes := make([]netip.Prefix, 0, len(bans))
	timeouts := make([]time.Duration, 0, len(bans))
	var forever []netip.Prefix
	for _, b := range bans {
		if b.Timeout == Permanent {
			forever = append(forever, b.Prefix)
			continue
		}
		prefixes = append(prefixes, b.Prefix)
		timeouts = append(timeouts, max(b.Timeout, time.Millisecond))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	failed, err := n.send(n.plan(prefixes, timeouts), false, false)
	if len(forever) > 0 {
		// Permanent: elements without a timeout (they never expire in a
		// set with the timeout flag). A re-add without a timeout leaves a
		// present element's timeout as it was on every kernel, so these
		// are added, deleted and added again in one transaction.
		f, e := n.send(n.plan(forever, make([]time.Duration, len(forever))), false, true)
		failed, err = append(failed, f...), errors.Join(err, e)
	}
	if err != nil {
		n.log.Warn("nftables: batch refused, retrying entry by entry", "entries", countBans(failed), "err", err)
		errs = errors.Join(errs, n.retryOneByOne(failed, false))
		if errors.Is(errs, syscall.ENFILE) {
			errs = fmt.Errorf("nftables: a set is full (size %d): raise firewall.max_elem: %w", n.opts.maxElem(), errs)
		}
	}
	if errs == nil {
		n.log.Debug("nftables: added", "entries", len(prefixes))
	}
	return errs
}

func countBans(ops []elemOp) int {
	c := 0
	for _, op := range ops {
		c += len(op.bans)
	}
	return c
}

func (n *Nftables) retryOneByOne(ops []elemOp, del bool) error {
	var errs error
	failedInARow, left := 0, countBans(ops)
	for _, op := range ops {
		for i, p := range op.bans {
			left--
			single := n.plan([]netip.Prefix{p}, []time.Duration{op.tos[i]})
			_, err := n.send(single, del, !del && op.tos[i] == 0)
			if err != nil && !del && op.set.Interval && errors.Is(err, syscall.EEXIST) {
				// Overlaps an interval already there (a /64 inside a /48,
				// or a /48 over a /64): never an error.
				err = n.addOverlapping(op.set, p, op.tos[i])
			}
			switch {
			case err == nil:
				failedInARow = 0
			case del && errors.Is(err, syscall.ENOENT):
				// absent: not an error for Delete
			default:
				errs = errors.Join(errs, fmt.Errorf("nftables: %v: %w", p, err))
				failedInARow++
			}
			if failedInARow == 8 && left > 0 {
				// The kernel refuses everything (permissions, missing set):
				// do not spend a transaction on each of thousands.
				return errors.Join(errs, fmt.Errorf("nftables: %d more entries not tried after 8 failures in a row", left))
			}
		}
	}
	return errs
}

// addOverlapping adds prefix p (timeout to) to interval set set, which
// refused it because it overlaps intervals there. The kernel cannot hold
// overlapping intervals, so:
//   - p inside a wider prefix: p is covered, nothing is added; when p
//     outlasts the wider one it is kept in n.covered and added when the
//     wider one is deleted;
//   - p over narrower prefixes: they are deleted and p added in one
//     transaction; the ones that outlast p go to n.covered.
func (n *Nftables) addOverlapping(set *nftables.Set, p netip.Prefix, to time.Duration) error {
	els, err := n.conn.GetSetElements(set)
	if err != nil {
		return fmt.Errorf("reading set %s for overlaps: %w", set.Name, err)
	}
	now := time.Now()
	var inner []Ban
	for _, b := range intervalsToBans(els) {
		if !b.Prefix.Overlaps(p) {
			continue
		}
		if b.Prefix.Bits() <= p.Bits() {
			n.log.Info("nftables: prefix covered by a wider ban already in the kernel", "prefix", p, "covered_by", b.Prefix)
			if to > b.Timeout {
				n.covered[p] = now.Add(to)
			}
			return nil
		}
		inner = append(inner, b)
	}
	if len(inner) == 0 {
		return fmt.Errorf("%v: kernel says it overlaps, but no overlapping interval is listed", p)
	}
	del := make([]nftables.SetElement, 0, 2*len(inner))
	for _, b := range inner {
		els, k, _, _ := n.toElems(b.Prefix, 0)
		del = append(del, els[:k]...)
	}
	add, k, _, _ := n.toElems(p, to)
	if err := errors.Join(n.conn.SetDeleteElements(set, del), n.conn.SetAddElements(set, add[:k])); err != nil {
		return err
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("replacing %d narrower prefixes by %v: %w", len(inner), p, err)
	}
	for _, b := range inner {
		if b.Timeout > to {
			n.covered[b.Prefix] = now.Add(b.Timeout)
		}
		n.log.Info("nftables: narrower prefix replaced by a wider ban", "prefix", b.Prefix, "covered_by", p)
	}
	return nil
}

// readdCoveredLocked adds again the covered prefixes (see addOverlapping)
// that are still due, after their cover may have gone.
func (n *Nftables) readdCoveredLocked() error {
	if len(n.covered) == 0 {
		return nil
	}
	now := time.Now()
	var ps []netip.Prefix
	var tos []time.Duration
	for p, until := range n.covered {
		delete(n.covered, p)
		if until.After(now) {
			ps = append(ps, p)
			tos = append(tos, until.Sub(now))
		}
	}
	failed, err := n.send(n.plan(ps, tos), false, false)
	if err != nil {
		return n.retryOneByOne(failed, false)
	}
	return nil
}

// Delete implements Backend. Absent entries are skipped: a batch that the
// kernel refuses (ENOENT aborts the whole transaction) is retried entry by
// entry.
func (n *Nftables) Delete(ctx context.Context, prefixes []netip.Prefix) (errs error) {
	if len(prefixes) == 0 {
		return nil
	}
	ps := make([]netip.Prefix, 0, len(prefixes))
	for _, p := range prefixes {
		q, err := normalize(p, n.opts.Prefixes)
		if err != nil {
			errs = errors.Join(errs, err)
			continue
		}
		ps = append(ps, q)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range ps {
		delete(n.covered, p)
	}
	defer func() {
		if err := n.readdCoveredLocked(); err != nil {
			errs = errors.Join(errs, fmt.Errorf("nftables: adding back covered prefixes: %w", err))
		}
	}()
	failed, err := n.send(n.plan(ps, nil), true, false)
	if err != nil {
		// Usually: some entry was absent (expired meanwhile). Delete only
		// what is there, by reading the sets once.
		present, lerr := n.listLocked()
		if lerr != nil {
			return errors.Join(errs, err, lerr)
		}
		have := make(map[netip.Prefix]bool, len(present))
		for _, b := range present {
			have[b.Prefix] = true
		}
		var keep []netip.Prefix
		for _, op := range failed {
			for _, p := range op.bans {
				if have[p] {
					keep = append(keep, p)
				}
			}
		}
		if failed2, err2 := n.send(n.plan(keep, nil), true, false); err2 != nil {
			errs = errors.Join(errs, n.retryOneByOne(failed2, true))
		}
	}
	return errs
}

// List implements Backend: both sets with each entry's remaining time.
func (n *Nftables) List(ctx context.Context) ([]Ban, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.listLocked()
}

func (n *Nftables) listLocked() ([]Ban, error) {
	var out []Ban
	for _, ns := range n.sets {
		s := ns.set
		els, err := n.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("nftables: reading set %s: %w (run 'pbxguard firewall init'?)", s.Name, err)
		}
		if s.Interval {
			out = append(out, intervalsToBans(els)...)
			continue
		}
		for _, e := range els {
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok {
				continue
			}
			out = append(out, Ban{Prefix: netip.PrefixFrom(a, a.BitLen()), Timeout: elemRemaining(e)})
		}
	}
	return out, nil
}

// elemRemaining is an element's time left: Permanent for one without a
// timeout.
func elemRemaining(e nftables.SetElement) time.Duration {
	if e.Timeout == 0 && e.Expires == 0 && !e.IntervalEnd {
		return Permanent
	}
	return e.Expires
}

// intervalsToBans pairs interval starts with their ends. The kernel's
// intervals do not overlap; an end equal to the next start sorts first.
func intervalsToBans(els []nftables.SetElement) []Ban {
	type ev struct {
		a   netip.Addr
		end bool
		exp time.Duration
	}
	evs := make([]ev, 0, len(els))
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			continue
		}
		evs = append(evs, ev{a, e.IntervalEnd, elemRemaining(e)})
	}
	sort.Slice(evs, func(i, j int) bool {
		if c := evs[i].a.Compare(evs[j].a); c != 0 {
			return c < 0
		}
		return evs[i].end && !evs[j].end
	})
	var out []Ban
	var open *ev
	for i := range evs {
		e := &evs[i]
		if !e.end {
			if open != nil { // start without end before it: runs to the next start
				out = append(out, rangeBans(open.a, e.a.Prev(), open.exp)...)
			}
			open = e
			continue
		}
		if open != nil {
			out = append(out, rangeBans(open.a, e.a.Prev(), open.exp)...)
			open = nil
		}
	}
	if open != nil { // up to the top of the address space
		top := netip.PrefixFrom(open.a, 0).Masked()
		out = append(out, rangeBans(open.a, lastAddr(top), open.exp)...)
	}
	return out
}

// rangeBans covers [first, last] with the fewest prefixes (one, for what we
// write ourselves).
func rangeBans(first, last netip.Addr, exp time.Duration) []Ban {
	var out []Ban
	for i := 0; i < 256 && first.IsValid() && first.Compare(last) <= 0; i++ {
		bits := first.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(first, bits-1)
			if p.Masked().Addr() != first || lastAddr(p).Compare(last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(first, bits)
		out = append(out, Ban{Prefix: p, Timeout: exp})
		first = lastAddr(p).Next()
	}
	return out
}

// Remove implements Backend: deletes table inet pbxguard and nothing else.
func (n *Nftables) Remove(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.conn.ListTableOfFamily(NftTable, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil // not there: nothing to remove
		}
		return fmt.Errorf("nftables: looking for table inet %s: %w", NftTable, err)
	}
	n.conn.DelTable(n.table)
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: deleting table inet %s: %w", NftTable, err)
	}
	n.log.Info("nftables: removed table", "table", "inet "+NftTable)
	return nil
}

// Close implements Backend. Kernel state stays (the sets keep dropping
// until their timeouts run out).
func (n *Nftables) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	err := n.conn.CloseLasting()
	n.closeNS()
	return err
}

func (n *Nftables) closeNS() {
	if n.nsFile != nil {
		n.nsFile.Close()
		n.nsFile = nil
	}
}
