package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeNft installs an `nft` on PATH that keeps one table in a file: enough
// to test the apply/confirm/rollback bookkeeping without root. The real
// kernel is exercised by e2e/policy_test.go.
func fakeNft(t *testing.T) (dir string) {
	t.Helper()
	dir = t.TempDir()
	script := `#!/bin/sh
D="` + dir + `"
case "$*" in
"-s list table inet pbxguard_policy")
	[ -f "$D/table" ] && { cat "$D/table"; exit 0; }
	echo "Error: No such file or directory" >&2; exit 1;;
"-f /dev/stdin")
	cat > "$D/loaded"
	if grep -q BROKEN "$D/loaded"; then echo "Error: syntax error" >&2; exit 1; fi
	sed -n '/^table inet pbxguard_policy {/,$p' "$D/loaded" > "$D/table";;
"delete table inet pbxguard_policy")
	[ -f "$D/table" ] || { echo "Error: No such file or directory" >&2; exit 1; }
	rm "$D/table";;
*) echo "fake nft: unexpected $*" >&2; exit 2;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "nft"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return dir
}

func liveTable(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "table"))
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func script(marker string) string {
	return "table inet pbxguard_policy\ndelete table inet pbxguard_policy\ntable inet pbxguard_policy {\n\t# " + marker + "\n}\n"
}

func TestApplyConfirmRollback(t *testing.T) {
	dir := fakeNft(t)
	ctx := context.Background()
	k, st := Kernel{}, State{Dir: filepath.Join(t.TempDir(), "state")}
	now := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)

	// first apply on a host without a policy: the rollback removes the table
	res, err := Apply(ctx, k, st, script("A"), now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pending.HadPrevious || res.KeptPrevious || !res.Pending.Deadline.Equal(now.Add(time.Minute)) {
		t.Fatalf("pending = %+v kept=%v", res.Pending, res.KeptPrevious)
	}
	if !strings.Contains(liveTable(t, dir), "# A") {
		t.Fatal("A not loaded")
	}
	// a second apply before confirm keeps the original rollback target
	res2, err := Apply(ctx, k, st, script("B"), now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !res2.KeptPrevious || res2.Pending.HadPrevious || res2.Pending.ID == res.Pending.ID {
		t.Fatalf("second apply: %+v kept=%v", res2.Pending, res2.KeptPrevious)
	}
	// the first apply's waiter wakes up: not its turn any more
	if done, err := Rollback(ctx, k, st, res.Pending.ID); done || err != nil {
		t.Fatalf("stale waiter rolled back: %v %v", done, err)
	}
	if done, err := Rollback(ctx, k, st, res2.Pending.ID); !done || err != nil {
		t.Fatalf("rollback: %v %v", done, err)
	}
	if liveTable(t, dir) != "" {
		t.Fatal("rollback to 'no policy' left the table")
	}
	if p, _ := st.PendingRollback(); p != nil {
		t.Fatal("pending left after rollback")
	}

	// A confirmed, B applied and rolled back: A comes back
	if _, err := Apply(ctx, k, st, script("A"), now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := Confirm(st); err != nil {
		t.Fatal(err)
	}
	if _, err := Confirm(st); err == nil || !strings.Contains(err.Error(), "nothing to confirm") {
		t.Fatalf("second confirm: %v", err)
	}
	resB, err := Apply(ctx, k, st, script("B"), now, time.Minute)
	if err != nil || !resB.Pending.HadPrevious {
		t.Fatalf("apply B: %v %+v", err, resB)
	}
	if done, err := Rollback(ctx, k, st, ""); !done || err != nil {
		t.Fatalf("manual rollback: %v %v", done, err)
	}
	if got := liveTable(t, dir); !strings.Contains(got, "# A") {
		t.Fatalf("after rollback the table is %q, want A", got)
	}
	if done, _ := Rollback(ctx, k, st, ""); done {
		t.Fatal("rollback with nothing pending did something")
	}

	// a policy the kernel refuses changes nothing and arms nothing
	if _, err := Apply(ctx, k, st, script("BROKEN"), now, time.Minute); err == nil || !strings.Contains(err.Error(), "nothing changed") {
		t.Fatalf("broken apply: %v", err)
	}
	if p, _ := st.PendingRollback(); p != nil {
		t.Fatal("a refused apply left a rollback armed")
	}
	if !strings.Contains(liveTable(t, dir), "# A") {
		t.Fatal("a refused apply changed the table")
	}

	// boot: the confirmed policy (A) is reloaded
	os.Remove(filepath.Join(dir, "table"))
	if ok, err := LoadConfirmed(ctx, k, st); !ok || err != nil || !strings.Contains(liveTable(t, dir), "# A") {
		t.Fatalf("LoadConfirmed: %v %v", ok, err)
	}
	if err := Forget(st); err != nil {
		t.Fatal(err)
	}
	if ok, _ := LoadConfirmed(ctx, k, st); ok {
		t.Fatal("confirmed policy survives Forget")
	}
}

func TestPendingDamaged(t *testing.T) {
	st := State{Dir: t.TempDir()}
	os.WriteFile(filepath.Join(st.Dir, "policy-pending.json"), []byte("{nope"), 0o600)
	if _, err := st.PendingRollback(); err == nil || !strings.Contains(err.Error(), "delete it after checking") {
		t.Fatalf("damaged pending: %v", err)
	}
}

func BenchmarkCompile(b *testing.B) {
	cfg := Default()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rs, err := Compile(cfg)
		if err != nil {
			b.Fatal(err)
		}
		_ = rs.NFT("")
	}
}
