package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

// hostile is attacker text as a SIP user name can carry it.
const hostile = "1001\n[Nov 25 04:00:00] NOTICE fake line for '198.51.100.1'\x1b[2J<script>alert(1)</script>"

func seedStore(t *testing.T) (string, int64) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Now()
	a := netip.MustParseAddr("203.0.113.66")
	for i, at := range []time.Time{now.Add(-10 * 24 * time.Hour), now.Add(-time.Hour)} {
		p := netip.PrefixFrom(a, 32)
		if err := st.AddBans(ctx, []store.Ban{{Prefix: p, Addr: a, Jail: "asterisk", Reason: "5 failures in 10m0s: auth_failure×5",
			Since: at, Until: at.Add(2 * time.Hour), Count: i + 1}}); err != nil {
			t.Fatal(err)
		}
		ev := store.Evidence{Prefix: p, Addr: a, Jail: "asterisk", At: at, Until: at.Add(2 * time.Hour), Reason: "5 failures in 10m0s: auth_failure×5",
			Decision: store.EvidenceDecision{MaxRetry: 5, FindTime: "10m0s", BanTime: "1h0m0s", Count: i + 1, Duration: "2h0m0s",
				Allowlist: []string{"jail: 203.0.113.66 is not in the allowlist"}},
			Events: []store.EvidenceEvent{
				{Time: at, Kind: "auth_failure", Account: `1001\x0a<script>`, Structured: true, Counted: true, Source: "/var/log/asterisk/security", Line: 20,
					Raw: `SecurityEvent="InvalidPassword",AccountID="1001\x0a<script>"`},
				{Time: at, Kind: "auth_failure", Structured: false, Counted: false, Note: "not counted: the NOTICE twin", Source: "/var/log/asterisk/messages", Line: 84,
					Raw: "NOTICE failed for '203.0.113.66:5060'"},
			}}
		if err := st.AddEvidence(ctx, []store.Evidence{ev}); err != nil {
			t.Fatal(err)
		}
	}
	id, err := st.AddIncident(ctx, store.Incident{Time: now.Add(-time.Hour), Kind: "fraud/prefix_guessing", Subject: hostile,
		Detail: `{"calls":3,"destinations":["+8821"],"actions":[{"kind":"ban","target":"203.0.113.66","ok":true}]}`})
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

func TestWhyHistoryIncidentsCLI(t *testing.T) {
	dir, id := seedStore(t)
	out, code := runIncidentCLI(t, "why", "203.0.113.66", "--state-dir", dir)
	if code != exitOK {
		t.Fatalf("why: exit %d: %s", code, out)
	}
	for _, want := range []string{"203.0.113.66 is banned", "rule:      maxretry 5 within findtime 10m0s", "/var/log/asterisk/security:20",
		"/var/log/asterisk/messages:84", "not counted", "allowlist: passed: jail", "ban history (2)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("why output lacks %q:\n%s", want, out)
		}
	}
	out, code = runIncidentCLI(t, "why", "203.0.113.66", "--state-dir", dir, "--json")
	var w struct {
		Evidence []store.Evidence `json:"evidence"`
		Active   *struct{ Count int }
	}
	if code != exitOK || json.Unmarshal([]byte(out), &w) != nil || len(w.Evidence) != 2 || w.Active == nil || w.Active.Count != 2 ||
		w.Evidence[0].Events[0].Line != 20 {
		t.Fatalf("why --json: exit %d: %s", code, out)
	}

	out, _ = runIncidentCLI(t, "history", "--since", "7d", "--state-dir", dir, "--json")
	var h []store.HistoryEntry
	if err := json.Unmarshal([]byte(out), &h); err != nil || len(h) != 1 {
		t.Fatalf("history --since 7d: %v: %s", err, out)
	}
	out, _ = runIncidentCLI(t, "history", "--since", "30d", "--jail", "asterisk", "--addr", "203.0.113.66", "--state-dir", dir)
	if strings.Count(out, "203.0.113.66/32") != 2 {
		t.Fatalf("history --since 30d: %s", out)
	}
	out, _ = runIncidentCLI(t, "history", "--since", "30d", "--jail", "sshd", "--state-dir", dir)
	if !strings.Contains(out, "no bans") {
		t.Fatalf("history --jail sshd: %s", out)
	}
	if _, code := runIncidentCLI(t, "history", "--since", "yesterday", "--state-dir", dir); code != exitUsage {
		t.Fatalf("history --since yesterday: exit %d, want %d", code, exitUsage)
	}

	out, _ = runIncidentCLI(t, "incidents", "--state-dir", dir)
	if !strings.Contains(out, "fraud/prefix_guessing") || strings.Contains(out, "\x1b") || strings.Count(out, "\n") != 3 {
		t.Fatalf("incidents: attacker text split or unescaped:\n%q", out)
	}
	out, code = runIncidentCLI(t, "incidents", "show", strconv.FormatInt(id, 10), "--state-dir", dir)
	if code != exitOK || !strings.Contains(out, `"+8821"`) || strings.Contains(out, "\x1b") || !strings.Contains(out, `1001\x0a[Nov 25`) {
		t.Fatalf("incidents show: exit %d:\n%q", code, out)
	}
	if _, code := runIncidentCLI(t, "incidents", "show", "999", "--state-dir", dir); code != exitFindings {
		t.Fatalf("incidents show 999: exit %d, want %d", code, exitFindings)
	}
	if _, code := runIncidentCLI(t, "why", "203.0.113.66", "--state-dir", t.TempDir()); code != exitFailure {
		t.Fatalf("why with an empty state dir: exit %d, want %d", code, exitFailure)
	}
}
