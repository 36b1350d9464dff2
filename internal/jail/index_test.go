package jail

import (
	"math/rand/v2"
	"testing"
)

// TestIndexAgainstMap drives the index with random inserts and removals
// (many clusters and wrap-arounds at a load up to 3/4) and compares every
// lookup with a Go map.
func TestIndexAgainstMap(t *testing.T) {
	j, err := New(Config{Name: "idx", MaxTracked: 1 << 20}, nil, nil, &fakeClock{t0})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ref := map[[16]byte]int32{}
	keyOf := func(n int) [16]byte { return [16]byte{0x20, 0x01, 15: byte(n), 14: byte(n >> 8)} }
	for op := range 200_000 {
		k := keyOf(rng.IntN(3000))
		if i, ok := ref[k]; ok && rng.IntN(2) == 0 {
			got, found := j.idx.find(j, &k)
			if !found || got != i {
				t.Fatalf("op %d: find = %d, %v; want %d", op, got, found, i)
			}
			j.idx.remove(j, &k)
			j.release(i)
			delete(ref, k)
		} else if !ok {
			ref[k] = j.insert(k)
		}
		if op%1000 == 0 {
			for n := range 3000 {
				k := keyOf(n)
				want, in := ref[k]
				got, found := j.idx.find(j, &k)
				if in != found || (in && got != want) {
					t.Fatalf("op %d key %d: find = %d, %v; want %d, %v", op, n, got, found, want, in)
				}
			}
			if j.idx.n != len(ref) || int(j.tracked.Load()) != len(ref) {
				t.Fatalf("op %d: index holds %d, tracked %d, want %d", op, j.idx.n, j.tracked.Load(), len(ref))
			}
		}
	}
}
