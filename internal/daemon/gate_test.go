package daemon

import (
	"bytes"
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

// TestAllowlistGateRefusalIsNotABan: when the daemon's own allowlist check
// lets a prefix through but firewall.WithAllowlist refuses it (a path that
// skipped the check), the refused entry is neither stored nor retried nor
// counted as a backend error, and the rest of the batch is banned.
func TestAllowlistGateRefusalIsNotABan(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fw := newFakeBackend()
	gate := firewall.WithAllowlist(fw, firewall.PrefixDenier([]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}))
	var logs bytes.Buffer
	d, err := New(Options{Store: st, Backend: gate, Logger: slog.New(slog.NewTextHandler(&logs, nil))}) // no Allowed: only the gate knows
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dec := func(a string) pending {
		ad := netip.MustParseAddr(a)
		return pending{d: Decision{Jail: "asterisk", Addr: ad, Prefix: netip.PrefixFrom(ad, 32), At: now, Duration: time.Hour, Until: now.Add(time.Hour), BanCount: 1}, received: now}
	}
	d.apply([]pending{dec("203.0.113.5"), dec("192.0.2.9")})
	if _, ok := fw.has("192.0.2.9/32"); !ok || len(fw.set) != 1 {
		t.Fatalf("kernel = %v, want only 192.0.2.9", fw.set)
	}
	req := <-d.storeQ
	if len(req.rows) != 1 || req.rows[0].Prefix.String() != "192.0.2.9/32" {
		t.Fatalf("stored %+v, want only 192.0.2.9", req.rows)
	}
	if len(d.retry) != 0 || len(d.active) != 1 {
		t.Fatalf("retry %v, active %v", d.retry, d.active)
	}
	if n := counterValue(t, d.metrics, "pbxguard_backend_errors_total", "op", "add"); n != 0 {
		t.Fatalf("backend add errors = %v, want 0", n)
	}
	if !strings.Contains(logs.String(), `msg="allowlisted prefix kept out of the kernel" prefix=203.0.113.5/32`) {
		t.Fatalf("refusal not logged:\n%s", logs.String())
	}

	// A manual ban refused by the gate is refused as allowlisted.
	_, err = d.Ban(context.Background(), netip.MustParsePrefix("203.0.113.7/32"), time.Hour, "", "")
	if !errors.Is(err, ErrAllowlisted) {
		t.Fatalf("manual ban through the gate: %v, want ErrAllowlisted", err)
	}
	if bans, _ := st.ActiveBans(context.Background(), time.Now()); len(bans) != 0 {
		t.Fatalf("store after refused manual ban: %+v", bans)
	}

	// The retry path drops refusals instead of retrying them forever.
	d.retry = []store.Ban{{Prefix: netip.MustParsePrefix("203.0.113.8/32"), Jail: "asterisk", Since: now, Until: now.Add(time.Hour)}}
	d.tick(context.Background())
	if len(d.retry) != 0 {
		t.Fatalf("refused entry still queued for retry: %v", d.retry)
	}
	if _, ok := fw.has("203.0.113.8/32"); ok {
		t.Fatal("refused entry reached the kernel")
	}
}

func counterValue(t *testing.T, m *Metrics, name, label, value string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, lp := range mm.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return mm.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}
