package store

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOpenCorruptMovesAside: a store file that is not a database, or whose
// pages are damaged, is moved aside (with its -wal/-shm) and a fresh store
// opens; other errors leave the file alone.
func TestOpenCorruptMovesAside(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"not a database", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("garbage "), 2000), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"damaged pages", func(t *testing.T, path string) {
			st, err := Open(filepath.Dir(path))
			if err != nil {
				t.Fatal(err)
			}
			var bans []Ban
			now := time.Now()
			for i := range 3000 {
				p := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.1/32", i/250, i%250))
				bans = append(bans, Ban{Prefix: p, Addr: p.Addr(), Jail: "j", Reason: "r", Since: now, Until: now.Add(time.Hour), Count: 1})
			}
			if err := st.AddBans(ctx, bans); err != nil {
				t.Fatal(err)
			}
			st.Close()
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(bytes.Repeat([]byte{0xab}, 8192), 4*4096)
			f.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FileName)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			st, err := Open(dir)
			if err != nil {
				t.Fatalf("Open of a corrupt store: %v", err)
			}
			defer st.Close()
			moved := st.RecoveredFrom()
			if !strings.HasPrefix(moved, path+".corrupt-") || st.CorruptError() == nil {
				t.Fatalf("RecoveredFrom = %q, CorruptError = %v", moved, st.CorruptError())
			}
			if got, _ := os.ReadFile(moved); !bytes.Equal(got, before) {
				t.Fatalf("the corrupt file was not kept as it was at %s", moved)
			}
			// The fresh store works.
			now := time.Now()
			p := netip.MustParsePrefix("203.0.113.1/32")
			if err := st.AddBans(ctx, []Ban{{Prefix: p, Addr: p.Addr(), Jail: "j", Since: now, Until: now.Add(time.Hour), Count: 1}}); err != nil {
				t.Fatal(err)
			}
			if b, _ := st.ActiveBans(ctx, now); len(b) != 1 {
				t.Fatalf("fresh store bans = %+v", b)
			}
			// A healthy store opened again is not "recovered".
			st.Close()
			st2, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer st2.Close()
			if st2.RecoveredFrom() != "" {
				t.Fatalf("healthy store reported recovered from %q", st2.RecoveredFrom())
			}
		})
	}
	t.Run("other errors are not corruption", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, FileName), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(dir); err == nil {
			t.Fatal("Open with a directory at the database path worked")
		}
		if fi, err := os.Stat(filepath.Join(dir, FileName)); err != nil || !fi.IsDir() {
			t.Fatal("the directory was moved")
		}
	})
}
