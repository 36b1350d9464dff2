package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/store"
)

// TestFraudCDRPosition: the fraud CDR file is followed from its end at the
// first start, its position is saved in the store like a jail source's,
// and a restart reads exactly the rows written while the daemon was down
// (none lost, none read twice). Rows are malformed on purpose: each one
// handled is one "fraud: CDR line skipped" debug line.
func TestFraudCDRPosition(t *testing.T) {
	for _, kind := range []string{"cdr", "cel"} {
		t.Run(kind, func(t *testing.T) { testCallFilePosition(t, kind) })
	}
}

// testCallFilePosition is TestFraudCDRPosition for the file kind (cdr, cel).
func testCallFilePosition(t *testing.T, kind string) {
	addr := fakeManager(t, nil)
	dir := t.TempDir()
	secret := filepath.Join(dir, "ami.secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	cdr := filepath.Join(dir, "Master.csv")
	row := func(i int) string { return fmt.Sprintf("row %d with a bare \" quote\n", i) }
	appendRows := func(from, to int) {
		f, err := os.OpenFile(cdr, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i <= to; i++ {
			f.WriteString(row(i))
		}
		f.Close()
	}
	appendRows(1, 2) // history before the first start: not news
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(fmt.Sprintf("country: US\nami: {addr: %q, user: pbxguard, secret_file: %s, md5: false}\n%s: %s\n", addr, secret, kind, cdr)), &node); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Fraud: node.Content[0], Location: time.UTC}
	st, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	type run struct {
		logs *lockedBuffer
		stop func()
	}
	startDaemon := func() run {
		positions, err := st.Positions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		logs := &lockedBuffer{}
		log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		w, err := amiWorker(cfg, st, positions, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		d, err := New(Options{Store: st, Backend: newFakeBackend(), Logger: log, Workers: []Worker{*w}, SaveEvery: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- d.Run(rctx) }()
		deadline := time.Now().Add(5 * time.Second)
		for s := logs.String(); !strings.Contains(s, "source: following") && !strings.Contains(s, "source: resuming"); s = logs.String() {
			if time.Now().After(deadline) {
				t.Fatalf("CDR follower not started; log:\n%s", logs.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		return run{logs: logs, stop: func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}}
	}
	handled := func(r run) int {
		return strings.Count(r.logs.String(), `msg="fraud: `+strings.ToUpper(kind)+` line skipped"`)
	}

	r := startDaemon()
	appendRows(3, 4)
	waitFor(t, "rows 3 and 4", func() bool { return handled(r) == 2 })
	r.stop()
	if n := handled(r); n != 2 {
		t.Fatalf("first run handled %d rows, want 2 (rows 1-2 were there before the start)", n)
	}
	pos, err := st.Positions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := pos[callFileKey(kind, cdr)]
	if fi, _ := os.Stat(cdr); !ok || p.Path != cdr || p.Offset != fi.Size() {
		t.Fatalf("stored CDR position %+v (found %v), want %s at offset %d", p, ok, cdr, fi.Size())
	}

	appendRows(5, 6) // while the daemon is down
	r = startDaemon()
	defer r.stop()
	waitFor(t, "rows 5 and 6 written while down", func() bool { return handled(r) == 2 })
	appendRows(7, 7)
	waitFor(t, "row 7", func() bool { return handled(r) == 3 })
	time.Sleep(100 * time.Millisecond)
	if n := handled(r); n != 3 {
		t.Fatalf("second run handled %d rows, want 3 (5, 6, 7: none of 1-4 again)", n)
	}
}
