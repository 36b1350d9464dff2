package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

type demoSummary struct {
	Mode             string  `json:"mode"`
	Banned           bool    `json:"banned"`
	SentBeforeBan    int     `json:"sent_before_ban"`
	ArrivedBeforeBan int     `json:"arrived_before_ban"`
	SentAfterBan     int     `json:"sent_after_ban"`
	ArrivedAfterBan  int     `json:"arrived_after_ban"`
	Seconds          float64 `json:"seconds"`
	Latency          struct {
		Count uint64  `json:"count"`
		P50ms float64 `json:"p50_ms"`
	} `json:"ban_latency"`
}

func runDemoJSON(t *testing.T, args ...string) demoSummary {
	t.Helper()
	out, err := exec.Command(pbxguardBin, append([]string{"demo", "--json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("pbxguard demo %v: %v\n%s", args, err, out)
	}
	var s demoSummary
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatalf("demo --json: %v\n%s", err, out)
	}
	return s
}

// TestDemoKernel: the namespaces demo bans the attacker after 5 failures
// and its packets stop arriving; nothing is left behind.
func TestDemoKernel(t *testing.T) {
	requireE2E(t, "nft")
	before, _ := exec.Command("ip", "netns", "list").Output()
	s := runDemoJSON(t)
	t.Logf("demo: %+v", s)
	if s.Mode != "kernel" || !s.Banned || s.SentBeforeBan != 5 || s.ArrivedBeforeBan != 5 || s.SentAfterBan == 0 || s.ArrivedAfterBan != 0 {
		t.Fatalf("demo summary = %+v", s)
	}
	if s.Latency.Count != 1 {
		t.Fatalf("latency samples = %d", s.Latency.Count)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "pbxguard-demo-") && !strings.Contains(string(before), strings.Fields(l)[0]) {
			t.Fatalf("demo left a namespace behind: %s", l)
		}
	}
}

// TestDemoDryRun: the same story without the kernel.
func TestDemoDryRun(t *testing.T) {
	s := runDemoJSON(t, "--dry-run")
	if s.Mode != "dry-run" || !s.Banned || s.SentBeforeBan != 5 {
		t.Fatalf("demo summary = %+v", s)
	}
}
