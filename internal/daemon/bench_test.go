package daemon

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/source"
	"github.com/pbxguard/pbxguard/internal/store"
)

// loopSource hands on n lines from a small set, then blocks until ctx ends.
type loopSource struct {
	n     int
	lines [][]byte
	done  chan struct{}
}

func (s *loopSource) Run(ctx context.Context, handle func(Line) error) error {
	now := time.Now()
	for i := 0; i < s.n; i++ {
		if err := handle(Line{Data: s.lines[i%len(s.lines)], Pos: store.Position{Position: source.Position{Path: "/bench", Offset: int64(i)}}, Received: now}); err != nil {
			return err
		}
	}
	close(s.done)
	<-ctx.Done()
	return nil
}

// BenchmarkDaemonPerLine measures the daemon's own per-line cost (metrics,
// position bookkeeping, jail lock) around a trivial detector and judge.
func BenchmarkDaemonPerLine(b *testing.B) {
	b.ReportAllocs()
	st, err := store.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	src := &loopSource{n: b.N, done: make(chan struct{}), lines: [][]byte{
		[]byte("noise line that matches nothing"),
		[]byte("FAIL 203.0.113.9"),
		[]byte("OK 203.0.113.9"),
	}}
	judge := &countJudge{max: 1 << 30, counts: map[netip.Addr]int{}}
	d, err := New(Options{Store: st, Backend: newFakeBackend(),
		Jails: []JailSpec{{Name: "j", Judge: judge, Sources: []SourceSpec{{Key: "j:/bench", Name: "/bench", Source: src, Detector: wordDetector{}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	go func() { done <- d.Run(ctx) }()
	<-src.done
	b.StopTimer()
	cancel()
	<-done
}
