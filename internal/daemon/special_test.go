package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// Issue 9 point 4: unspecified, broadcast and multicast addresses are never
// banned, on any path: a decision (jail, fraud containment), a manual ban,
// a retried or restored ban. The gate (firewall.Special in WithAllowlist)
// refuses them; the daemon neither stores nor retries them.
func TestSpecialAddressesNeverBanned(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw := newFakeBackend()
	gate := firewall.WithAllowlist(fw, firewall.PrefixDenier(nil))
	d, err := New(Options{Store: st, Backend: gate, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	specials := []string{"0.0.0.0/32", "255.255.255.255/32", "224.0.0.1/32", "::/128", "ff02::1/128", "::ffff:224.0.0.1/128", "ff02::/64"}
	var batch []pending
	for _, s := range append(specials, "192.0.2.9/32") {
		p := netip.MustParsePrefix(s)
		batch = append(batch, pending{d: Decision{Jail: "asterisk", Addr: p.Addr(), Prefix: p, At: now, Duration: time.Hour, Until: now.Add(time.Hour), BanCount: 1}, received: now})
	}
	d.apply(batch)
	if _, ok := fw.has("192.0.2.9/32"); !ok || len(fw.set) != 1 {
		t.Fatalf("kernel = %v, want only 192.0.2.9", fw.set)
	}
	if req := <-d.storeQ; len(req.rows) != 1 || req.rows[0].Prefix.String() != "192.0.2.9/32" {
		t.Fatalf("stored %+v, want only 192.0.2.9", req.rows)
	}
	if len(d.retry) != 0 {
		t.Fatalf("special addresses queued for retry: %v", d.retry)
	}
	for _, s := range specials {
		_, err := d.Ban(context.Background(), netip.MustParsePrefix(s), time.Hour, "", "")
		if !errors.Is(err, ErrAllowlisted) || !strings.Contains(err.Error(), "multicast") {
			t.Errorf("manual ban of %s: %v, want a refusal naming the reason", s, err)
		}
	}
	for _, s := range specials {
		d.retry = append(d.retry, store.Ban{Prefix: netip.MustParsePrefix(s), Jail: "asterisk", Since: now, Until: now.Add(time.Hour)})
	}
	d.tick(context.Background())
	if len(d.retry) != 0 || len(fw.set) != 1 {
		t.Fatalf("retry %v, kernel %v", d.retry, fw.set)
	}
	if bans, _ := st.ActiveBans(context.Background(), time.Now()); len(bans) != 0 {
		t.Fatalf("store holds %+v", bans)
	}
}
