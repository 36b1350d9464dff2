package store

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// The store's upsert keeps the longer ban whatever the order of writes.
func TestStoreUpsertKeepsLonger(t *testing.T) {
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	p := netip.MustParsePrefix("203.0.113.80/32")
	now := time.Now()
	long := Ban{Prefix: p, Jail: "fraud", Reason: "long", Since: now, Until: now.Add(24 * time.Hour), Count: 1}
	short := Ban{Prefix: p, Jail: "sip", Reason: "short", Since: now.Add(time.Millisecond), Until: now.Add(time.Hour), Count: 2}
	if err := st.AddBans(ctx, []Ban{long}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddBans(ctx, []Ban{short}); err != nil {
		t.Fatal(err)
	}
	b, _, _ := st.Ban(ctx, p)
	if b.Jail != "fraud" || b.Reason != "long" || !b.Until.Equal(long.Until) || b.Count != 2 {
		t.Fatalf("stored = %+v, want the fraud ban (count 2)", b)
	}
	perm := Ban{Prefix: p, Jail: "manual", Reason: "forever", Since: now, Until: Forever, Count: 3}
	if err := st.AddBans(ctx, []Ban{perm, short}); err != nil {
		t.Fatal(err)
	}
	if b, _, _ := st.Ban(ctx, p); !b.Permanent() || b.Reason != "forever" || b.Remaining(now) != Permanent {
		t.Fatalf("stored = %+v, want permanent", b)
	}
}
