package daemon

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

// BenchmarkApplyBatch256: one banner batch of 256 jail decisions (fake
// kernel, store queue drained), the path a later, shorter decision goes
// through.
func BenchmarkApplyBatch256(b *testing.B) {
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d, err := New(Options{Store: st, Backend: newFakeBackend()})
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]pending, 256)
	now := time.Now()
	for i := range batch {
		a := netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})
		batch[i] = pending{d: Decision{Jail: "sip", Addr: a, At: now, Duration: time.Hour}}
	}
	b.ReportAllocs()
	for b.Loop() {
		d.apply(batch)
		<-d.storeQ
	}
}
