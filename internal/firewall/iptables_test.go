package firewall

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeRestore stands in for iptables-restore / ip6tables-restore: it keeps
// the chain's rules in a file and, like the real tool, fails the whole
// transaction when a -D matches no rule. The *-save fakes print the rules.
const fakeRestore = `#!/bin/bash
set -u
name=$(basename "$0")
state="$FAKE_IPT_DIR/${name%-restore}.rules"
touch "$state"
cp "$state" "$state.new"
script=$(cat)
printf '%s\n' "$script" >> "$FAKE_IPT_DIR/${name%-restore}.log"
n=0
while IFS= read -r line; do
  n=$((n+1))
  case "$line" in
    "-D PBXGUARD "*)
      rule="${line#-D PBXGUARD }"
      if grep -qxF -- "$rule" "$state.new"; then
        grep -vxF -- "$rule" "$state.new" > "$state.tmp" || true
        mv "$state.tmp" "$state.new"
      else
        echo "$name: line $n failed" >&2; rm -f "$state.new"; exit 1
      fi ;;
    "-A PBXGUARD "*) printf '%s\n' "${line#-A PBXGUARD }" >> "$state.new" ;;
    "-F PBXGUARD") : > "$state.new" ;;
  esac
done <<< "$script"
mv "$state.new" "$state"
`

const fakeSave = `#!/bin/bash
name=$(basename "$0")
state="$FAKE_IPT_DIR/${name%-save}.rules"
echo "*filter"
[ -f "$state" ] && sed 's/^/-A PBXGUARD /' "$state"
echo "COMMIT"
`

func fakeIPTables(t *testing.T) (*IPTables, string) {
	t.Helper()
	dir := t.TempDir()
	for _, f := range ipFamilies {
		if err := os.WriteFile(filepath.Join(dir, f.restore), []byte(fakeRestore), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.save), []byte(fakeSave), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("FAKE_IPT_DIR", dir)
	now := time.Unix(1_800_000_000, 0)
	return &IPTables{opts: Options{Prefixes: true}, log: slog.New(slog.DiscardHandler), r: runner{},
		now: func() time.Time { return now }, entries: map[netip.Prefix]int64{}}, dir
}

func rules(t *testing.T, dir, family string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, family+".rules"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			out = append(out, f[1]) // -s PREFIX ...
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		return netip.MustParsePrefix(a).Addr().Compare(netip.MustParsePrefix(b).Addr())
	})
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// TestIPTablesDeleteAbsentIsNotAnError: the Backend contract says an
// absent entry is not an error for Delete — twice in one batch, never
// added, removed by hand behind pbxguard's back, or spelled IPv4-mapped.
func TestIPTablesDeleteAbsentIsNotAnError(t *testing.T) {
	ipt, dir := fakeIPTables(t)
	ctx := context.Background()
	var bans []Ban
	for _, p := range prefixes("192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32", "192.0.2.4/32", "2001:db8::1/128", "2001:db8:64::/64") {
		bans = append(bans, Ban{Prefix: p, Timeout: time.Hour})
	}
	if err := ipt.Add(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rules(t, dir, "iptables"), " "); got != "192.0.2.1/32 192.0.2.2/32 192.0.2.3/32 192.0.2.4/32" {
		t.Fatalf("IPv4 rules after Add: %s", got)
	}

	// The same entry twice in one batch.
	if err := ipt.Delete(ctx, prefixes("192.0.2.1/32", "192.0.2.1/32", "2001:db8::1/128", "2001:db8::1/128")); err != nil {
		t.Fatalf("Delete of the same entry twice: %v", err)
	}
	if got := strings.Join(rules(t, dir, "iptables"), " "); got != "192.0.2.2/32 192.0.2.3/32 192.0.2.4/32" {
		t.Fatalf("IPv4 rules after Delete: %s", got)
	}
	if got := strings.Join(rules(t, dir, "ip6tables"), " "); got != "2001:db8:64::/64" {
		t.Fatalf("IPv6 rules after Delete: %s", got)
	}
	logBefore, _ := os.ReadFile(filepath.Join(dir, "iptables.log"))

	// Never added, and already deleted: nothing to run, no error.
	if err := ipt.Delete(ctx, prefixes("198.51.100.9/32", "192.0.2.1/32", "2001:db8::99/128")); err != nil {
		t.Fatalf("Delete of absent entries: %v", err)
	}
	if logAfter, _ := os.ReadFile(filepath.Join(dir, "iptables.log")); string(logAfter) != string(logBefore) {
		t.Fatalf("a restore ran for absent entries:\n%s", logAfter[len(logBefore):])
	}

	// The same address as IPv4 and IPv4-mapped IPv6 in one batch.
	if err := ipt.Delete(ctx, prefixes("::ffff:192.0.2.3/128", "192.0.2.3/32")); err != nil {
		t.Fatalf("Delete of 192.0.2.3 in two spellings: %v", err)
	}

	// Removed by hand behind the backend's back, deleted with a present one.
	if err := os.WriteFile(filepath.Join(dir, "iptables.rules"),
		[]byte("-s 192.0.2.4/32 -m comment --comment \"pbxguard until=1800003600\" -j DROP\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Delete(ctx, prefixes("192.0.2.2/32", "192.0.2.2/32", "192.0.2.4/32")); err != nil {
		t.Fatalf("Delete with a rule removed by hand: %v", err)
	}
	if got := rules(t, dir, "iptables"); len(got) != 0 {
		t.Fatalf("IPv4 rules left: %v", got)
	}
	if l, _ := ipt.List(ctx); len(l) != 1 || l[0].Prefix.String() != "2001:db8:64::/64" {
		t.Fatalf("List = %v, want only 2001:db8:64::/64", l)
	}

	// A real failure is still reported.
	os.WriteFile(filepath.Join(dir, "iptables-restore"), []byte("#!/bin/sh\necho 'iptables-restore: permission denied' >&2\nexit 4\n"), 0o755)
	if err := ipt.Add(ctx, []Ban{{Prefix: netip.MustParsePrefix("192.0.2.50/32"), Timeout: time.Hour}}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("Add with a failing restore: %v", err)
	}
}

// TestIPTablesDeleteManyDuplicates: the rewrite path (64 deletions and
// more) with every entry twice.
func TestIPTablesDeleteManyDuplicates(t *testing.T) {
	ipt, dir := fakeIPTables(t)
	ctx := context.Background()
	var bans []Ban
	var del []netip.Prefix
	for i := 1; i <= 100; i++ {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32)
		bans = append(bans, Ban{Prefix: p, Timeout: time.Hour})
		if i <= 80 {
			del = append(del, p, p)
		}
	}
	if err := ipt.Add(ctx, bans); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Delete(ctx, del); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if got := rules(t, dir, "iptables"); len(got) != 20 || got[0] != "198.51.100.81/32" {
		t.Fatalf("rules left: %d %v", len(got), got)
	}
}
