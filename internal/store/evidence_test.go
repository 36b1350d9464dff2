package store

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func sampleEvidence(addr netip.Addr, at time.Time, n, lineLen int) Evidence {
	e := Evidence{Prefix: netip.PrefixFrom(addr, addr.BitLen()), Addr: addr, Jail: "asterisk", At: at, Until: at.Add(time.Hour),
		Reason: "5 failures in 10m0s: auth_failure×5", Decision: EvidenceDecision{MaxRetry: 5, FindTime: "10m0s", Count: 1}}
	for i := range n {
		e.Events = append(e.Events, EvidenceEvent{Time: at.Add(time.Duration(i) * time.Second), Kind: "auth_failure", Account: `"1001\x0a`,
			Structured: i%2 == 0, Counted: true, Source: "/var/log/asterisk/security", Line: int64(100 + i), Raw: strings.Repeat("x", lineLen)})
	}
	return e
}

func TestEvidenceRoundTripHistoryPrune(t *testing.T) {
	ctx := context.Background()
	st, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := time.Now().Add(-40 * 24 * time.Hour)
	now := time.Now()
	a := netip.MustParseAddr("203.0.113.66")
	b := netip.MustParseAddr("2001:db8::7")
	for _, x := range []struct {
		addr netip.Addr
		at   time.Time
		jail string
	}{{a, old, "asterisk"}, {a, now, "asterisk"}, {b, now, "sshd"}} {
		e := sampleEvidence(x.addr, x.at, 25, 100)
		e.Jail = x.jail
		if err := st.AddBans(ctx, []Ban{{Prefix: e.Prefix, Addr: x.addr, Jail: x.jail, Reason: e.Reason, Since: x.at, Until: e.Until, Count: 1}}); err != nil {
			t.Fatal(err)
		}
		if err := st.AddEvidence(ctx, []Evidence{e}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.EvidenceFor(ctx, a, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("EvidenceFor = %d, %v; want 2", len(got), err)
	}
	e := got[0]
	if !e.At.Equal(now) || len(e.Events) != MaxEvidenceEvents || e.Decision.Dropped != 5 || e.Events[0].Line != 105 ||
		e.Events[0].Account != `"1001\x0a` || e.Decision.MaxRetry != 5 {
		t.Fatalf("newest evidence = %+v (%d events)", e.Decision, len(e.Events))
	}
	h, err := st.History(ctx, HistoryFilter{Since: now.Add(-7 * 24 * time.Hour)})
	if err != nil || len(h) != 2 {
		t.Fatalf("History(7d) = %+v, %v", h, err)
	}
	h, _ = st.History(ctx, HistoryFilter{Jail: "sshd"})
	if len(h) != 1 || h[0].Addr != b {
		t.Fatalf("History(jail sshd) = %+v", h)
	}
	h, _ = st.History(ctx, HistoryFilter{Addr: a})
	if len(h) != 2 {
		t.Fatalf("History(addr) = %+v", h)
	}
	id, err := st.AddIncident(ctx, Incident{Time: old, Kind: "fraud/prefix_guessing", Subject: "1004", Detail: `{"calls":3}`})
	if err != nil {
		t.Fatal(err)
	}
	if in, ok, err := st.Incident(ctx, id); err != nil || !ok || in.Subject != "1004" {
		t.Fatalf("Incident(%d) = %+v %v %v", id, in, ok, err)
	}
	if _, ok, err := st.Incident(ctx, id+100); ok || err != nil {
		t.Fatalf("Incident(missing) = %v %v", ok, err)
	}
	n, err := st.Prune(ctx, now.Add(-30*24*time.Hour))
	if err != nil || n != 3 { // one history row, one evidence row, one incident
		t.Fatalf("Prune = %d, %v; want 3", n, err)
	}
	if got, _ := st.EvidenceFor(ctx, a, 0); len(got) != 1 {
		t.Fatalf("after prune: %d evidence rows of %s, want 1", len(got), a)
	}
	if act, _ := st.ActiveBans(ctx, now); len(act) != 2 {
		t.Fatalf("prune touched active bans: %d left", len(act))
	}
}

// BenchmarkEvidenceStoreSize reports the database bytes per ban (history
// row + evidence of 20 events of 250-byte lines), the typical case.
func BenchmarkEvidenceStoreSize(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	st, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const n = 2000
	size := func() int64 {
		st.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		fi, err := os.Stat(st.Path())
		if err != nil {
			b.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	base := time.Now()
	for i := 0; i < n; i++ {
		addr := netip.MustParseAddr(fmt.Sprintf("198.51.%d.%d", 100+i/256, i%256))
		e := sampleEvidence(addr, base.Add(time.Duration(i)*time.Second), MaxEvidenceEvents, 250)
		if err := st.AddBans(ctx, []Ban{{Prefix: e.Prefix, Addr: addr, Jail: e.Jail, Reason: e.Reason, Since: e.At, Until: e.Until, Count: 1}}); err != nil {
			b.Fatal(err)
		}
		if err := st.AddEvidence(ctx, []Evidence{e}); err != nil {
			b.Fatal(err)
		}
	}
	perBan := float64(size()-before) / n
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := st.EvidenceFor(ctx, netip.MustParseAddr("198.51.100.7"), 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perBan, "bytes/ban")
}
