package nfttest

import (
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
)

// TestTransactions: a batch with one refused message changes nothing; a
// good one is kept; dumps read back what was sent, with remaining times.
func TestTransactions(t *testing.T) {
	k := New()
	c, err := nftables.New(nftables.WithTestDial(k.Dial))
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Name: "t", Family: nftables.TableFamilyINet})
	s := &nftables.Set{Table: tbl, Name: "s", KeyType: nftables.TypeIPAddr, HasTimeout: true, Interval: true}
	if err := c.AddSet(s, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("table and set: %v", err)
	}
	el := func(a string, end bool, to time.Duration) nftables.SetElement {
		return nftables.SetElement{Key: netip.MustParseAddr(a).AsSlice(), IntervalEnd: end, Timeout: to}
	}
	// 192.0.2.0/24 as [start, end).
	if err := c.SetAddElements(s, []nftables.SetElement{el("192.0.2.0", false, time.Hour), el("192.0.3.0", true, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("interval: %v", err)
	}
	// A good interval and an overlapping one in one batch: neither stays.
	if err := c.SetAddElements(s, []nftables.SetElement{el("198.51.100.0", false, time.Hour), el("198.51.101.0", true, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAddElements(s, []nftables.SetElement{el("192.0.2.128", false, time.Hour), el("192.0.2.129", true, 0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err == nil {
		t.Fatal("overlapping interval accepted")
	}
	if got := k.Elements("t", "s"); len(got) != 1 || got[0].Key != netip.MustParseAddr("192.0.2.0") || got[0].End != netip.MustParseAddr("192.0.3.0") {
		t.Fatalf("after the refused batch: %+v", got)
	}
	k.Advance(15 * time.Minute)
	els, err := c.GetSetElements(s)
	if err != nil || len(els) != 2 {
		t.Fatalf("dump: %+v %v", els, err)
	}
	if els[0].Expires != 45*time.Minute || els[0].Timeout != time.Hour || !els[1].IntervalEnd {
		t.Fatalf("dump: %+v", els)
	}
	k.Refuse = func(typ uint16, name string) syscall.Errno { return syscall.EPERM }
	c.DelTable(tbl)
	if err := c.Flush(); err == nil {
		t.Fatal("Refuse ignored")
	}
	k.Refuse = nil
	k.FlushRuleset()
	if _, err := c.ListTableOfFamily("t", nftables.TableFamilyINet); err == nil || len(k.Tables()) != 0 {
		t.Fatalf("table after flush ruleset: %v %v", err, k.Tables())
	}
}
