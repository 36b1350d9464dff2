package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/agi"
	"github.com/pbxguard/pbxguard/internal/fraud"
)

// BenchmarkAGIDecision1000rps: FastAGI sessions on loopback, started at
// 1,000 per second (one every millisecond, whatever the previous ones do),
// through the daemon's handler (decider, monitor state, metrics, a JSON
// log line per decision). The decision latency is from the environment
// block written to PBXGUARD_DECISION read (p50/p99/max); session-p99 is
// connect to close, what the channel waits in all; server-p99 is the
// decision inside the server (environment block read → decision made,
// engine state included), the part that does not depend on the client.
//
//	go test -run XXX -bench AGIDecision1000rps -benchtime 5000x ./internal/daemon/
func BenchmarkAGIDecision1000rps(b *testing.B) {
	h, addr, stop := benchAGIServer(b)
	defer stop()
	var decMu sync.Mutex
	decided := make([]time.Duration, 0, b.N)
	h.onDecided = func(d time.Duration) {
		decMu.Lock()
		decided = append(decided, d)
		decMu.Unlock()
	}
	nums := []string{"2125550142", "011442079460349", "00442079460349", "0033170189999", "13125550123", "1002", "+442079460614", "0088213674923"}

	lat := make([]time.Duration, b.N)
	whole := make([]time.Duration, b.N)
	errs := make([]error, b.N)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Millisecond)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			lat[i], errs[i] = benchSession(addr, fmt.Sprintf("PJSIP/%d-%08x", 1000+i%200, i), nums[i%len(nums)])
			whole[i] = time.Since(t0)
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	// A session that failed (a deadline passed on a starved machine) is
	// counted, not measured.
	failed := 0
	ok, okWhole := lat[:0], whole[:0]
	for i, err := range errs {
		if err != nil {
			if failed == 0 {
				b.Logf("session %d: %v", i, err)
			}
			failed++
			continue
		}
		ok, okWhole = append(ok, lat[i]), append(okWhole, whole[i])
	}
	if len(ok) == 0 {
		b.Fatalf("every session failed")
	}
	lat, whole = ok, okWhole
	b.ReportMetric(float64(failed), "failed")
	slices.Sort(lat)
	slices.Sort(whole)
	q := func(l []time.Duration, p float64) float64 {
		return float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(lat, 0.50), "p50-ms")
	b.ReportMetric(q(lat, 0.99), "p99-ms")
	b.ReportMetric(q(lat, 1), "max-ms")
	b.ReportMetric(q(whole, 0.99), "session-p99-ms")
	slices.Sort(decided)
	b.ReportMetric(q(decided, 0.99), "server-p99-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
}

// benchAGIServer starts the daemon's AGI handler on loopback with the
// settings of a small office: 200 extensions, every other one trusted.
func benchAGIServer(b *testing.B) (h *agiHandler, addr string, stop func()) {
	var node yaml.Node
	if err := yaml.Unmarshal([]byte("country: US\ntrunks: [carrier]\nagi: {listen: \"127.0.0.1:4573\"}\n"), &node); err != nil {
		b.Fatal(err)
	}
	set, err := fraud.ParseSettings(node.Content[0])
	if err != nil {
		b.Fatal(err)
	}
	var trusted []string
	for i := 0; i < 200; i += 2 {
		trusted = append(trusted, fmt.Sprint(1000+i))
	}
	dec, err := set.Decider(trusted)
	if err != nil {
		b.Fatal(err)
	}
	mon, err := fraud.NewMonitor(set, fraud.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	h = &agiHandler{dec: dec, slot: &monitorSlot{}, log: slog.New(slog.NewJSONHandler(io.Discard, nil)),
		m: newAGIMetrics(prometheus.NewRegistry()), contain: make(chan fraud.Finding, 64)}
	h.slot.set(mon)
	ctx, cancel := context.WithCancel(context.Background())
	go h.containLoop(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &agi.Server{Handler: h.serve, Timeout: 2 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	var once sync.Once
	return h, ln.Addr().String(), func() {
		once.Do(func() {
			cancel()
			<-served
		})
	}
}

// BenchmarkAGISession: one FastAGI session at a time on loopback (connect,
// environment block, two SET VARIABLEs, close): the cost of one decision
// with nothing else running.
func BenchmarkAGISession(b *testing.B) {
	_, addr, stop := benchAGIServer(b)
	defer stop()
	nums := []string{"2125550142", "011442079460349", "0033170189999", "13125550123"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := benchSession(addr, fmt.Sprintf("PJSIP/%d-%08x", 1000+i%200, i), nums[i%len(nums)]); err != nil {
			b.Fatal(err)
		}
	}
}

func benchSession(addr, channel, num string) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	env := "agi_network: yes\nagi_network_script: outbound\nagi_request: agi://" + addr + "/outbound\nagi_channel: " + channel +
		"\nagi_uniqueid: 1795579390.6\nagi_callerid: 1004\nagi_context: outbound\nagi_extension: " + num + "\nagi_arg_1: " + num + "\n\n"
	t0 := time.Now()
	if _, err := io.WriteString(c, env); err != nil {
		return 0, err
	}
	br := bufio.NewReader(c)
	var took time.Duration
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF && line == "" {
			if took == 0 {
				return 0, fmt.Errorf("closed without a decision")
			}
			return took, nil
		}
		if err != nil {
			return 0, err
		}
		if took == 0 {
			if !strings.HasPrefix(line, "SET VARIABLE PBXGUARD_DECISION ") {
				return 0, fmt.Errorf("first command %q", line)
			}
			took = time.Since(t0)
		}
		if _, err := io.WriteString(c, "200 result=1\n"); err != nil {
			return 0, err
		}
	}
}
