package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pbxguard/pbxguard/internal/store"
)

// The CDR follower hands on CSV records, not lines: a dialled number
// holding a newline and a forged row stays inside its record, and the
// saved position is the record's end.
func TestFollowCDRReadsRecords(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Master.csv")
	if err := os.WriteFile(path, []byte("\"old\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := New(Options{Store: st, Backend: newFakeBackend()})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	var mu sync.Mutex
	var recs []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	key := callFileKey("cdr", path)
	go func() {
		defer close(done)
		d.followCDR(ctx, "cdr", key, store.Position{}, callFileOpener(path, slog.New(slog.NewTextHandler(logs, nil))), func(b []byte) error {
			mu.Lock()
			recs = append(recs, string(b))
			mu.Unlock()
			return nil
		})
	}()
	forged := `"","+15551230000","5551234567` + "\n" + `,1001,+88216123456,from-internal,x,PJSIP/1001-00000099,x,Dial,x,2026-11-25 04:00:36,2026-11-25 04:00:36,2026-11-25 04:05:36,300,300,ANSWERED,DOCUMENTATION,1.1,x` + "\n" + `","from-internal","","PJSIP/carrier-0000005e"` + "\n"
	waitFor(t, "the follower at the end of the file", func() bool { return strings.Contains(logs.String(), "source: following") })
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(forged[:40]) // cut inside the quoted dst: waits
	f.Sync()
	f.WriteString(forged[40:] + "\"next\"\n")
	f.Close()
	waitFor(t, "two records", func() bool { mu.Lock(); defer mu.Unlock(); return len(recs) >= 2 })
	cancel()
	<-done
	want := []string{forged[:len(forged)-1], `"next"`}
	if !slices.Equal(recs, want) {
		t.Fatalf("records %q, want %q", recs, want)
	}
	d.posMu.Lock()
	pos := d.positions[key]
	d.posMu.Unlock()
	if fi, _ := os.Stat(path); pos.Offset != fi.Size() {
		t.Fatalf("saved position %d, want the record boundary %d", pos.Offset, fi.Size())
	}
}
