package jail

import "hash/maphash"

// index maps a 16-byte key to its slab entry: open addressing with linear
// probing. A slot holds the top 32 bits of the key's hash (the tag) above
// the entry index + 1 (0 = empty slot); the probe starts at the tag's low
// bits, and an entry is read (a cache miss) only when the tag matches. The
// keys live in the entries. 8 bytes per slot at a load of at most 3/4:
// 11 to 21 bytes per tracked address, against ~45 for a Go map of [16]byte
// to int32. The hash is seeded per jail, so addresses an attacker picks
// cannot be made to collide.
type index struct {
	slots []uint64
	n     int
	seed  maphash.Seed
}

func (x *index) tag(k *[16]byte) uint64 { return maphash.Bytes(x.seed, k[:]) >> 32 }

func slotEntry(s uint64) int32 { return int32(uint32(s)) - 1 }

// lookup returns the slot position holding k.
func (x *index) lookup(j *Jail, k *[16]byte) (uint64, bool) {
	if len(x.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(x.slots) - 1)
	t := x.tag(k)
	for p := t & mask; ; p = (p + 1) & mask {
		s := x.slots[p]
		if s == 0 {
			return 0, false
		}
		if s>>32 == t && j.at(slotEntry(s)).key == *k {
			return p, true
		}
	}
}

// find returns the entry holding k.
func (x *index) find(j *Jail, k *[16]byte) (int32, bool) {
	p, ok := x.lookup(j, k)
	if !ok {
		return 0, false
	}
	return slotEntry(x.slots[p]), true
}

// insert adds entry i under key k (absent).
func (x *index) insert(k *[16]byte, i int32) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.grow()
	}
	x.place(x.tag(k)<<32 | uint64(uint32(i+1)))
	x.n++
}

func (x *index) place(s uint64) {
	mask := uint64(len(x.slots) - 1)
	for p := s >> 32 & mask; ; p = (p + 1) & mask {
		if x.slots[p] == 0 {
			x.slots[p] = s
			return
		}
	}
}

func (x *index) grow() {
	old := x.slots
	x.slots = make([]uint64, max(16, 2*len(old)))
	for _, s := range old {
		if s != 0 {
			x.place(s)
		}
	}
}

// remove deletes key k (backward-shift deletion: no tombstones).
func (x *index) remove(j *Jail, k *[16]byte) {
	p, ok := x.lookup(j, k)
	if !ok {
		return
	}
	mask := uint64(len(x.slots) - 1)
	x.slots[p] = 0
	x.n--
	for q := (p + 1) & mask; x.slots[q] != 0; q = (q + 1) & mask {
		s := x.slots[q]
		h := s >> 32 & mask
		// The slot at q may move to the hole at p unless its home h lies
		// cyclically in (p, q].
		if (q > p && (h <= p || h > q)) || (q < p && h <= p && h > q) {
			x.slots[p], x.slots[q] = s, 0
			p = q
		}
	}
}
