package store

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/source"
)

func TestBansSurviveRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond)
	a := netip.MustParseAddr("203.0.113.66")
	v6 := netip.MustParseAddr("2001:db8:203::bad:66")
	bans := []Ban{
		{Prefix: netip.PrefixFrom(a, 32), Addr: a, Jail: "asterisk", Reason: "5 failures", Since: now, Until: now.Add(time.Hour), Count: 1},
		{Prefix: netip.MustParsePrefix("2001:db8:203::/64"), Addr: v6, Jail: "asterisk", Reason: "scan", Since: now, Until: now.Add(2 * time.Hour), Count: 1},
		{Prefix: netip.MustParsePrefix("192.0.2.9/32"), Jail: "manual", Reason: "old", Since: now.Add(-2 * time.Hour), Until: now.Add(-time.Hour), Count: 1},
	}
	if err := s.AddBans(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePositions(ctx, []Position{{Source: "asterisk:/var/log/asterisk/messages", Position: source.Position{Path: "/var/log/asterisk/messages", Inode: 1 << 40, Size: 999, Offset: 900, Check: 1<<63 + 5}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddIncident(ctx, Incident{Kind: "toll_fraud", Subject: "PJSIP/1004", Detail: `{"calls":40}`}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	active, err := s.ActiveBans(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 2 {
		t.Fatalf("active = %+v", active)
	}
	if active[0].Prefix.String() != "203.0.113.66/32" || active[0].Addr != a || active[0].Jail != "asterisk" ||
		!active[0].Until.Equal(now.Add(time.Hour)) || active[0].Remaining(now) != time.Hour {
		t.Fatalf("ban 0 = %+v", active[0])
	}
	if active[1].Prefix.String() != "2001:db8:203::/64" || active[1].Addr != v6 {
		t.Fatalf("ban 1 = %+v", active[1])
	}
	if n := s.PriorBans(a); n != 1 {
		t.Fatalf("PriorBans = %d", n)
	}
	pos, err := s.Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p := pos["asterisk:/var/log/asterisk/messages"]; p.Offset != 900 || p.Check != 1<<63+5 || p.Inode != 1<<40 || p.Size != 999 {
		t.Fatalf("position = %+v", p)
	}
	inc, err := s.Incidents(ctx, time.Time{}, 10)
	if err != nil || len(inc) != 1 || inc[0].Kind != "toll_fraud" || inc[0].Detail != `{"calls":40}` {
		t.Fatalf("incidents = %+v, %v", inc, err)
	}

	expired, err := s.ExpireBans(ctx, now)
	if err != nil || len(expired) != 1 || expired[0].Prefix.String() != "192.0.2.9/32" {
		t.Fatalf("expired = %+v, %v", expired, err)
	}
	if err := s.RemoveBans(ctx, []netip.Prefix{netip.PrefixFrom(a, 32), netip.MustParsePrefix("198.51.100.1/32")}); err != nil {
		t.Fatal(err)
	}
	active, _ = s.ActiveBans(ctx, now)
	if len(active) != 1 {
		t.Fatalf("after remove: %+v", active)
	}
	// Re-banning counts history.
	if err := s.AddBans(ctx, bans[:1]); err != nil {
		t.Fatal(err)
	}
	if n := s.PriorBans(a); n != 2 {
		t.Fatalf("PriorBans after second ban = %d", n)
	}
}

func TestManyBansOneTransaction(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	bans := make([]Ban, 10000)
	for i := range bans {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		bans[i] = Ban{Prefix: netip.PrefixFrom(a, 32), Addr: a, Jail: "j", Reason: "r", Since: now, Until: now.Add(time.Hour), Count: 1}
	}
	if err := s.AddBans(ctx, bans); err != nil {
		t.Fatal(err)
	}
	active, err := s.ActiveBans(ctx, now)
	if err != nil || len(active) != 10000 {
		t.Fatalf("active = %d, %v", len(active), err)
	}
}

func TestOpenUnwritable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	_, err := Open(filepath.Join(f, "sub"))
	if err == nil {
		t.Fatal("want error for a state dir under a file")
	}
	if !strings.Contains(err.Error(), "state directory") {
		t.Fatal(err)
	}
}
