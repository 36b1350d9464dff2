package fraud

import (
	"context"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/calls"
	"github.com/pbxguard/pbxguard/internal/numbers"
)

// BenchmarkPipeline measures AMI events/s through tracker + rules +
// (fake) responses: the whole corpus event stream, replayed on its own
// clock, per iteration.
func BenchmarkPipeline(b *testing.B) {
	msgs := readRawAMI(b, corpus20+"/ami/ami-events.raw.gz")
	times := make([]time.Time, len(msgs))
	var clock time.Time
	for i, m := range msgs {
		if ts, ok := calls.MessageTime(m, time.UTC); ok && ts.After(clock) {
			clock = ts
		}
		times[i] = clock
	}
	ctx := context.Background()
	// One normaliser for the run, as in the daemon: its cache is warm after
	// the first pass (BenchmarkNormalizeUncached in numbers measures a miss).
	nums, err := numbers.New(numbers.Config{HomeRegion: "US"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		var c time.Time
		fa := newFakeActions(&c)
		mon := newTestMonitorNums(b, &c, fa, nums)
		for i, m := range msgs {
			c = times[i]
			mon.HandleMessage(ctx, m, c)
		}
		n += len(msgs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkPipelineCallEvents is the same restricted to the events the
// tracker acts on (calls and security events), the worst case per event.
func BenchmarkPipelineCallEvents(b *testing.B) {
	all := readRawAMI(b, corpus20+"/ami/ami-events.raw.gz")
	var msgs = all[:0:0]
	var times []time.Time
	var clock time.Time
	for _, m := range all {
		if ts, ok := calls.MessageTime(m, time.UTC); ok && ts.After(clock) {
			clock = ts
		}
		switch m.Event() {
		case "Newchannel", "DialBegin", "Newstate", "Hangup", "SuccessfulAuth":
			msgs = append(msgs, m)
			times = append(times, clock)
		}
	}
	ctx := context.Background()
	// One normaliser for the run, as in the daemon: its cache is warm after
	// the first pass (BenchmarkNormalizeUncached in numbers measures a miss).
	nums, err := numbers.New(numbers.Config{HomeRegion: "US"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		var c time.Time
		fa := newFakeActions(&c)
		mon := newTestMonitorNums(b, &c, fa, nums)
		for i, m := range msgs {
			c = times[i]
			mon.HandleMessage(ctx, m, c)
		}
		n += len(msgs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
