// Package nfttest is a fake nftables kernel for tests without root: a
// netlink test dialer (nftables.WithTestDial, firewall.Options.NetlinkDial)
// that decodes what the nftables backend sends — tables, sets, set
// elements with their timeouts, chains, rules — keeps it, and answers the
// dumps the backend reads back. Batches are transactions: one refused
// message refuses the whole batch, as in the kernel.
//
// What it models: tables (per family), sets (hash or interval, with
// timeouts and a size), elements (a present element added again gets the
// new timeout, as on kernels >= 6.10; an interval that overlaps another
// is refused with EEXIST; deleting an absent element is ENOENT; a set
// past its size is ENFILE), base chains and their rules (echoed back as
// sent, with handles). What it does not: expressions are not evaluated,
// elements never expire by themselves (Advance moves the clock for
// remaining times).
package nfttest

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/netip"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"golang.org/x/sys/unix"
)

// Elem is one set element as the fake kernel holds it.
type Elem struct {
	Key     netip.Addr
	End     netip.Addr // interval sets: first address after the interval
	Timeout time.Duration
	Expires time.Time
}

type set struct {
	attrs    []netlink.Attribute
	flags    uint32
	size     uint32
	elems    map[netip.Addr]*Elem // by key (start)
	interval bool
}

type chain struct {
	attrs []netlink.Attribute
	rules [][]netlink.Attribute
}

type table struct {
	family byte
	attrs  []netlink.Attribute
	sets   map[string]*set
	chains map[string]*chain
	order  []string // chain names in creation order
}

// Kernel is the fake. The zero value is not usable: call New.
type Kernel struct {
	mu     sync.Mutex
	now    time.Time
	tables map[string]*table // family/name
	handle uint64

	// Refuse, when set, sees every message of a batch (its nftables
	// message type, e.g. unix.NFT_MSG_NEWSETELEM, and the set or object
	// name) and returns an errno to refuse it, or 0.
	Refuse func(msgType uint16, name string) syscall.Errno

	// Batches counts the transactions received; Messages the messages in
	// them; MaxElemList the largest encoded element list seen (bytes).
	Batches, Messages, MaxElemList int
}

// New makes an empty fake kernel whose clock starts now.
func New() *Kernel {
	return &Kernel{now: time.Now(), tables: map[string]*table{}}
}

// Advance moves the fake clock (remaining timeouts shrink; elements whose
// time is up are dropped, as the kernel's garbage collector does).
func (k *Kernel) Advance(d time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.now = k.now.Add(d)
	for _, t := range k.tables {
		for _, s := range t.sets {
			for a, e := range s.elems {
				if !e.Expires.IsZero() && !e.Expires.After(k.now) {
					delete(s.elems, a)
				}
			}
		}
	}
}

// FlushRuleset deletes every table, as `nft flush ruleset` does.
func (k *Kernel) FlushRuleset() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.tables = map[string]*table{}
}

// Tables lists "family/name" of the tables present.
func (k *Kernel) Tables() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for n := range k.tables {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Elements returns the elements of a set of table inet name (nil when the
// set does not exist), sorted by key.
func (k *Kernel) Elements(tableName, setName string) []Elem {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.tables[key(unix.NFPROTO_INET, tableName)]
	if t == nil || t.sets[setName] == nil {
		return nil
	}
	var out []Elem
	for _, e := range t.sets[setName].elems {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.Less(out[j].Key) })
	return out
}

// Rules returns how many rules chain holds in table inet name (-1: no chain).
func (k *Kernel) Rules(tableName, chainName string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.tables[key(unix.NFPROTO_INET, tableName)]
	if t == nil || t.chains[chainName] == nil {
		return -1
	}
	return len(t.chains[chainName].rules)
}

// DeleteChain removes a chain by hand (a test's "somebody else").
func (k *Kernel) DeleteChain(tableName, chainName string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if t := k.tables[key(unix.NFPROTO_INET, tableName)]; t != nil {
		delete(t.chains, chainName)
	}
}

func key(family byte, name string) string { return string(rune('0'+family)) + "/" + name }

// Dial is the netlink test function (nltest.Func) to give
// nftables.WithTestDial or firewall.Options.NetlinkDial.
func (k *Kernel) Dial(req []netlink.Message) ([]netlink.Message, error) {
	if len(req) == 0 {
		return nil, io.EOF // nothing more to read
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if req[0].Header.Type == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
		return k.batch(req)
	}
	return k.get(req[0])
}

func attrs(m netlink.Message) []netlink.Attribute {
	if len(m.Data) < 4 {
		return nil
	}
	as, _ := netlink.UnmarshalAttributes(m.Data[4:])
	return as
}

func str(as []netlink.Attribute, typ uint16) string {
	for _, a := range as {
		if a.Type&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER) == typ {
			return string(bytes.TrimRight(a.Data, "\x00"))
		}
	}
	return ""
}

func attr(as []netlink.Attribute, typ uint16) ([]byte, bool) {
	for _, a := range as {
		if a.Type&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER) == typ {
			return a.Data, true
		}
	}
	return nil, false
}

func msgType(m netlink.Message) uint16 { return uint16(m.Header.Type) & 0xff }

func reply(req netlink.Message, typ uint16, family byte, as []netlink.Attribute) netlink.Message {
	data := []byte{family, unix.NFNETLINK_V0, 0, 0}
	b, _ := netlink.MarshalAttributes(as)
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Sequence: req.Header.Sequence, PID: req.Header.PID},
		Data:   append(data, b...),
	}
}

func errMsg(req netlink.Message, errno syscall.Errno) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.Error, Sequence: req.Header.Sequence, PID: req.Header.PID},
		Data:   append(nlenc.Int32Bytes(-int32(errno)), make([]byte, 16)...),
	}
}

// batch applies a transaction to a copy and keeps it only when every
// message succeeds.
func (k *Kernel) batch(req []netlink.Message) ([]netlink.Message, error) {
	k.Batches++
	saved := k.clone()
	var out []netlink.Message
	var failed bool
	for _, m := range req {
		t := m.Header.Type
		if t == netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) || t == netlink.HeaderType(unix.NFNL_MSG_BATCH_END) {
			continue
		}
		k.Messages++
		errno := k.apply(m)
		if errno != 0 {
			failed = true
			out = append(out, errMsg(m, errno))
			continue
		}
		if m.Header.Flags&netlink.Acknowledge != 0 {
			out = append(out, errMsg(m, 0))
		}
	}
	if failed {
		k.tables = saved
	}
	return out, nil
}

func (k *Kernel) clone() map[string]*table {
	out := make(map[string]*table, len(k.tables))
	for n, t := range k.tables {
		c := &table{family: t.family, attrs: t.attrs, sets: map[string]*set{}, chains: map[string]*chain{}, order: append([]string(nil), t.order...)}
		for sn, s := range t.sets {
			cs := *s
			cs.elems = make(map[netip.Addr]*Elem, len(s.elems))
			for a, e := range s.elems {
				ce := *e
				cs.elems[a] = &ce
			}
			c.sets[sn] = &cs
		}
		for cn, ch := range t.chains {
			cc := *ch
			cc.rules = append([][]netlink.Attribute(nil), ch.rules...)
			c.chains[cn] = &cc
		}
		out[n] = c
	}
	return out
}

func (k *Kernel) apply(m netlink.Message) syscall.Errno {
	as := attrs(m)
	family := m.Data[0]
	typ := msgType(m)
	if k.Refuse != nil {
		name := str(as, unix.NFTA_SET_NAME)
		if typ == unix.NFT_MSG_NEWSETELEM || typ == unix.NFT_MSG_DELSETELEM {
			name = str(as, unix.NFTA_SET_ELEM_LIST_SET)
		}
		if e := k.Refuse(typ, name); e != 0 {
			return e
		}
	}
	switch typ {
	case unix.NFT_MSG_NEWTABLE:
		n := key(family, str(as, unix.NFTA_TABLE_NAME))
		if k.tables[n] == nil {
			k.tables[n] = &table{family: family, attrs: as, sets: map[string]*set{}, chains: map[string]*chain{}}
		}
		return 0
	case unix.NFT_MSG_DELTABLE:
		name := str(as, unix.NFTA_TABLE_NAME)
		if name == "" { // flush ruleset
			k.tables = map[string]*table{}
			return 0
		}
		if k.tables[key(family, name)] == nil {
			return syscall.ENOENT
		}
		delete(k.tables, key(family, name))
		return 0
	}
	// Everything else lives in a table; the table attribute is 1 for
	// sets, set elements, chains and rules alike.
	t := k.tables[key(family, str(as, 1))]
	if t == nil {
		return syscall.ENOENT
	}
	switch typ {
	case unix.NFT_MSG_NEWSET:
		name := str(as, unix.NFTA_SET_NAME)
		s := &set{attrs: as, elems: map[netip.Addr]*Elem{}}
		if b, ok := attr(as, unix.NFTA_SET_FLAGS); ok && len(b) == 4 {
			s.flags = binary.BigEndian.Uint32(b)
		}
		if b, ok := attr(as, unix.NFTA_SET_DESC); ok {
			if d, err := netlink.UnmarshalAttributes(b); err == nil {
				if v, ok := attr(d, unix.NFTA_SET_DESC_SIZE); ok && len(v) == 4 {
					s.size = binary.BigEndian.Uint32(v)
				}
			}
		}
		s.interval = s.flags&unix.NFT_SET_INTERVAL != 0
		if old := t.sets[name]; old != nil {
			if old.flags != s.flags {
				return syscall.EEXIST
			}
			old.size = s.size
			return 0
		}
		t.sets[name] = s
	case unix.NFT_MSG_DELSET:
		name := str(as, unix.NFTA_SET_NAME)
		if t.sets[name] == nil {
			return syscall.ENOENT
		}
		delete(t.sets, name)
	case unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_DELSETELEM:
		s := t.sets[str(as, unix.NFTA_SET_ELEM_LIST_SET)]
		if s == nil {
			return syscall.ENOENT
		}
		list, _ := attr(as, unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		k.MaxElemList = max(k.MaxElemList, len(list))
		els := decodeElems(list)
		if typ == unix.NFT_MSG_NEWSETELEM {
			return k.addElems(s, els)
		}
		return k.delElems(s, els)
	case unix.NFT_MSG_NEWCHAIN:
		name := str(as, unix.NFTA_CHAIN_NAME)
		if t.chains[name] == nil {
			t.chains[name] = &chain{attrs: as}
			t.order = append(t.order, name)
		}
	case unix.NFT_MSG_DELCHAIN:
		name := str(as, unix.NFTA_CHAIN_NAME)
		if t.chains[name] == nil {
			return syscall.ENOENT
		}
		delete(t.chains, name)
	case unix.NFT_MSG_NEWRULE:
		c := t.chains[str(as, unix.NFTA_RULE_CHAIN)]
		if c == nil {
			return syscall.ENOENT
		}
		k.handle++
		h := make([]byte, 8)
		binary.BigEndian.PutUint64(h, k.handle)
		c.rules = append(c.rules, append(as, netlink.Attribute{Type: unix.NFTA_RULE_HANDLE, Data: h}))
	case unix.NFT_MSG_DELRULE: // FlushChain: every rule of the chain
		c := t.chains[str(as, unix.NFTA_RULE_CHAIN)]
		if c == nil {
			return syscall.ENOENT
		}
		c.rules = nil
	default:
		return syscall.EOPNOTSUPP
	}
	return 0
}

type rawElem struct {
	key     []byte
	end     bool
	timeout time.Duration
}

func decodeElems(list []byte) []rawElem {
	items, err := netlink.UnmarshalAttributes(list)
	if err != nil {
		return nil
	}
	var out []rawElem
	for _, it := range items {
		fields, err := netlink.UnmarshalAttributes(it.Data)
		if err != nil {
			continue
		}
		var e rawElem
		for _, f := range fields {
			switch f.Type &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER) {
			case unix.NFTA_SET_ELEM_KEY:
				if v, err := netlink.UnmarshalAttributes(f.Data); err == nil && len(v) > 0 {
					e.key = v[0].Data
				}
			case unix.NFTA_SET_ELEM_FLAGS:
				e.end = len(f.Data) == 4 && binary.BigEndian.Uint32(f.Data)&unix.NFT_SET_ELEM_INTERVAL_END != 0
			case unix.NFTA_SET_ELEM_TIMEOUT:
				if len(f.Data) == 8 {
					e.timeout = time.Duration(binary.BigEndian.Uint64(f.Data)) * time.Millisecond
				}
			}
		}
		out = append(out, e)
	}
	return out
}

func (k *Kernel) addElems(s *set, els []rawElem) syscall.Errno {
	for i := 0; i < len(els); i++ {
		a, ok := netip.AddrFromSlice(els[i].key)
		if !ok {
			return syscall.EINVAL
		}
		e := &Elem{Key: a, Timeout: els[i].timeout}
		if e.Timeout > 0 {
			e.Expires = k.now.Add(e.Timeout)
		}
		if s.interval {
			if els[i].end {
				return syscall.EINVAL // an end without a start
			}
			if i+1 < len(els) && els[i+1].end {
				if els[i+1].timeout > 0 {
					return syscall.EINVAL // the kernel refuses a timeout on an end element
				}
				e.End, _ = netip.AddrFromSlice(els[i+1].key)
				i++
			}
			for _, o := range s.elems {
				if o.Key == e.Key && o.End == e.End {
					continue // same interval: refreshed below
				}
				if overlaps(o, e) {
					return syscall.EEXIST
				}
			}
		}
		if old := s.elems[a]; old != nil {
			old.Timeout, old.Expires = e.Timeout, e.Expires
			continue
		}
		if s.size > 0 && uint32(len(s.elems)) >= s.size {
			return syscall.ENFILE
		}
		s.elems[a] = e
	}
	return 0
}

// overlaps: [a.Key, a.End) and [b.Key, b.End) meet (an invalid End runs
// to the top of the address space).
func overlaps(a, b *Elem) bool {
	before := func(x, end netip.Addr) bool { return !end.IsValid() || x.Less(end) }
	return before(b.Key, a.End) && before(a.Key, b.End)
}

func (k *Kernel) delElems(s *set, els []rawElem) syscall.Errno {
	for _, e := range els {
		if e.end {
			continue
		}
		a, ok := netip.AddrFromSlice(e.key)
		if !ok {
			return syscall.EINVAL
		}
		if s.elems[a] == nil {
			return syscall.ENOENT
		}
		delete(s.elems, a)
	}
	return 0
}

// get answers the reads: tables, sets, set elements, chains, rules.
func (k *Kernel) get(m netlink.Message) ([]netlink.Message, error) {
	as := attrs(m)
	family := m.Data[0]
	typ := msgType(m)
	switch typ {
	case unix.NFT_MSG_GETTABLE:
		name := str(as, unix.NFTA_TABLE_NAME)
		var out []netlink.Message
		for _, t := range k.tables {
			if (name == "" || str(t.attrs, unix.NFTA_TABLE_NAME) == name) && (family == 0 || family == t.family) {
				out = append(out, reply(m, unix.NFT_MSG_NEWTABLE, t.family, t.attrs))
			}
		}
		if len(out) == 0 && name != "" {
			return []netlink.Message{errMsg(m, syscall.ENOENT)}, nil
		}
		return eof(out)
	}
	t := k.tables[key(family, str(as, 1))]
	if t == nil {
		return []netlink.Message{errMsg(m, syscall.ENOENT)}, nil
	}
	switch typ {
	case unix.NFT_MSG_GETSET:
		var out []netlink.Message
		names := make([]string, 0, len(t.sets))
		for n := range t.sets {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, reply(m, unix.NFT_MSG_NEWSET, family, t.sets[n].attrs))
		}
		return eof(out)
	case unix.NFT_MSG_GETSETELEM:
		name := str(as, unix.NFTA_SET_NAME)
		s := t.sets[name]
		if s == nil {
			return []netlink.Message{errMsg(m, syscall.ENOENT)}, nil
		}
		return eof(k.dumpElems(m, family, str(as, 1), name, s))
	case unix.NFT_MSG_GETCHAIN:
		c := t.chains[str(as, unix.NFTA_CHAIN_NAME)]
		if c == nil {
			return []netlink.Message{errMsg(m, syscall.ENOENT)}, nil
		}
		return []netlink.Message{reply(m, unix.NFT_MSG_NEWCHAIN, family, c.attrs)}, nil
	case unix.NFT_MSG_GETRULE:
		c := t.chains[str(as, unix.NFTA_RULE_CHAIN)]
		if c == nil {
			return []netlink.Message{errMsg(m, syscall.ENOENT)}, nil
		}
		var out []netlink.Message
		for _, r := range c.rules {
			out = append(out, reply(m, unix.NFT_MSG_NEWRULE, family, r))
		}
		return eof(out)
	}
	return []netlink.Message{errMsg(m, syscall.EOPNOTSUPP)}, nil
}

// eof: an empty dump is no message at all.
func eof(out []netlink.Message) ([]netlink.Message, error) {
	if len(out) == 0 {
		return nil, io.EOF
	}
	return out, nil
}

func (k *Kernel) dumpElems(m netlink.Message, family byte, tableName, setName string, s *set) []netlink.Message {
	keys := make([]netip.Addr, 0, len(s.elems))
	for a := range s.elems {
		keys = append(keys, a)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].Less(keys[j]) })
	var out []netlink.Message
	for start := 0; start < len(keys) || start == 0; start += 500 {
		var items []netlink.Attribute
		for _, a := range keys[start:min(start+500, len(keys))] {
			e := s.elems[a]
			items = append(items, elemAttr(e.Key, false, e.Timeout, e.Expires.Sub(k.now)))
			if s.interval && e.End.IsValid() {
				items = append(items, elemAttr(e.End, true, 0, 0))
			}
		}
		if len(items) == 0 {
			break
		}
		list, _ := netlink.MarshalAttributes(items)
		out = append(out, reply(m, unix.NFT_MSG_NEWSETELEM, family, []netlink.Attribute{
			{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(tableName + "\x00")},
			{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(setName + "\x00")},
			{Type: unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_LIST_ELEMENTS, Data: list},
		}))
	}
	return out
}

func elemAttr(a netip.Addr, end bool, timeout, remaining time.Duration) netlink.Attribute {
	val, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_DATA_VALUE, Data: a.AsSlice()}})
	fields := []netlink.Attribute{{Type: unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_KEY, Data: val}}
	if end {
		fields = append(fields, netlink.Attribute{Type: unix.NFTA_SET_ELEM_FLAGS, Data: binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END)})
	}
	if timeout > 0 {
		fields = append(fields,
			netlink.Attribute{Type: unix.NFTA_SET_ELEM_TIMEOUT, Data: binary.BigEndian.AppendUint64(nil, uint64(timeout/time.Millisecond))},
			netlink.Attribute{Type: unix.NFTA_SET_ELEM_EXPIRATION, Data: binary.BigEndian.AppendUint64(nil, uint64(max(remaining, 0)/time.Millisecond))})
	}
	b, _ := netlink.MarshalAttributes(fields)
	return netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b}
}
