package sensor

// table is a fixed-capacity hash table with uint64 keys (already hashed),
// open addressing and linear probing, and first-in-first-out eviction when
// full. It never allocates after newTable: the sensor's memory is bounded
// by its configuration whatever a flood of spoofed sources does.
type table[V any] struct {
	keys  []uint64 // 0 = empty slot
	vals  []V
	mask  uint64
	count int
	max   int
	fifo  []uint64 // insertion order, a ring of keys (stale ones skipped)
	head  int
	n     int // entries in fifo
}

func newTable[V any](max int) *table[V] {
	if max < 16 {
		max = 16
	}
	size := 1
	for size < 2*max {
		size <<= 1
	}
	return &table[V]{keys: make([]uint64, size), vals: make([]V, size), mask: uint64(size - 1), max: max, fifo: make([]uint64, max)}
}

func fixKey(k uint64) uint64 {
	if k == 0 {
		return 1
	}
	return k
}

// get returns the value stored under k, or nil.
func (t *table[V]) get(k uint64) *V {
	k = fixKey(k)
	for i := k & t.mask; ; i = (i + 1) & t.mask {
		switch t.keys[i] {
		case k:
			return &t.vals[i]
		case 0:
			return nil
		}
	}
}

// put returns the slot for k, creating it (zeroed) if absent; created says
// which. When the table is full the oldest entry is evicted first (evicted
// reports it).
func (t *table[V]) put(k uint64) (v *V, created, evicted bool) {
	k = fixKey(k)
	if p := t.get(k); p != nil {
		return p, false, false
	}
	for t.count >= t.max {
		old := t.fifo[t.head]
		t.head = (t.head + 1) % len(t.fifo)
		t.n--
		if t.del(old) {
			evicted = true
		}
	}
	i := k & t.mask
	for t.keys[i] != 0 {
		i = (i + 1) & t.mask
	}
	t.keys[i] = k
	var zero V
	t.vals[i] = zero
	t.count++
	if t.n == len(t.fifo) { // ring full of stale keys: drop the oldest
		t.head = (t.head + 1) % len(t.fifo)
		t.n--
	}
	t.fifo[(t.head+t.n)%len(t.fifo)] = k
	t.n++
	return &t.vals[i], true, evicted
}

// oldest returns the key inserted first that is still present (for expiry).
func (t *table[V]) oldest() (uint64, *V, bool) {
	for t.n > 0 {
		k := t.fifo[t.head]
		if v := t.get(k); v != nil {
			return k, v, true
		}
		t.head = (t.head + 1) % len(t.fifo)
		t.n--
	}
	return 0, nil, false
}

// del removes k (backward-shift deletion keeps probe chains intact).
func (t *table[V]) del(k uint64) bool {
	k = fixKey(k)
	i := k & t.mask
	for {
		switch t.keys[i] {
		case 0:
			return false
		case k:
			var zero V
			for {
				t.keys[i], t.vals[i] = 0, zero
				j := i
				for {
					j = (j + 1) & t.mask
					if t.keys[j] == 0 {
						t.count--
						return true
					}
					home := t.keys[j] & t.mask
					// Move j back to i if its home is not in (i, j].
					if (i <= j && (home <= i || home > j)) || (i > j && home <= i && home > j) {
						t.keys[i], t.vals[i] = t.keys[j], t.vals[j]
						i = j
						break
					}
				}
			}
		}
		i = (i + 1) & t.mask
	}
}

// len is the number of entries.
func (t *table[V]) len() int { return t.count }

// fnv is FNV-1a over byte slices, for transaction and address keys.
type fnv uint64

const fnvOffset fnv = 14695981039346656037

func (h fnv) bytes(b []byte) fnv {
	for _, c := range b {
		h ^= fnv(c)
		h *= 1099511628211
	}
	return h
}

func (h fnv) byte(c byte) fnv {
	h ^= fnv(c)
	h *= 1099511628211
	return h
}

func (h fnv) u32(v uint32) fnv {
	return h.byte(byte(v)).byte(byte(v >> 8)).byte(byte(v >> 16)).byte(byte(v >> 24))
}
