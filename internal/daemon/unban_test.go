package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// singleBackend holds single addresses only, like a backend without
// Options.Prefixes, and records every Delete batch.
type singleBackend struct {
	*fakeBackend
	deletes [][]netip.Prefix
}

func (s *singleBackend) Delete(ctx context.Context, ps []netip.Prefix) error {
	s.deletes = append(s.deletes, slices.Clone(ps))
	for _, p := range ps {
		if p.Bits() != p.Addr().BitLen() {
			return fmt.Errorf("firewall: %v: %w", p, firewall.ErrUnsupportedPrefix)
		}
	}
	return s.fakeBackend.Delete(ctx, ps)
}

func TestUnbanOneDeleteBatch(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw := &singleBackend{fakeBackend: newFakeBackend()}
	d, err := New(Options{Store: st, Backend: fw})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A kernel entry the store does not know (added by hand).
	fw.Add(ctx, []firewall.Ban{{Prefix: netip.MustParsePrefix("192.0.2.66/32"), Timeout: time.Hour}})
	gone, err := d.Unban(ctx, netip.MustParsePrefix("192.0.2.66/32"))
	if err != nil || len(gone) != 0 {
		t.Fatalf("Unban = %v, %v", gone, err)
	}
	if _, ok := fw.has("192.0.2.66/32"); ok {
		t.Fatal("kernel entry unknown to the store survived unban")
	}
	if len(fw.deletes) != 1 || len(fw.deletes[0]) != 1 {
		t.Fatalf("deletes = %v, want one batch of the address", fw.deletes)
	}

	// Two stored bans in a /24, unbanned by the /24 on a backend that
	// cannot hold prefixes: the /24 is dropped, the two addresses go.
	for _, a := range []string{"198.51.100.7/32", "198.51.100.8/32"} {
		if _, err := d.Ban(ctx, netip.MustParsePrefix(a), time.Hour, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	fw.deletes = nil
	gone, err = d.Unban(ctx, netip.MustParsePrefix("198.51.100.0/24"))
	if err != nil || len(gone) != 2 {
		t.Fatalf("Unban /24 = %v, %v", gone, err)
	}
	if l, _ := fw.List(ctx); len(l) != 0 {
		t.Fatalf("kernel after unban: %v", l)
	}
	if bans, _ := st.ActiveBans(ctx, time.Now()); len(bans) != 0 {
		t.Fatalf("store after unban: %v", bans)
	}
	if len(fw.deletes) != 2 || len(fw.deletes[0]) != 3 || len(fw.deletes[1]) != 2 {
		t.Fatalf("deletes = %v, want [2 bans + /24] then [2 bans]", fw.deletes)
	}
}
