package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pbxguard/pbxguard/internal/audit"
	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/firewall"
)

const corpusEtc = "../../testdata/corpus/asterisk-20/etc"

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// buildWith builds a daemon (dry-run backend, no control socket, no
// metrics endpoint) from YAML text, logging into the returned buffer.
func buildWith(t *testing.T, yamlText string) (*Built, *lockedBuffer) {
	t.Helper()
	dir := t.TempDir()
	text := fmt.Sprintf("state_dir: %[1]s/state\nfirewall: {backend: dry-run}\ncontrol: {socket: %[1]s/ctl.sock}\nmetrics: {listen: \"\"}\n"+
		"jails:\n  asterisk:\n    files: [%[1]s/messages.log]\n%[2]s", dir, yamlText)
	path := filepath.Join(dir, "pbxguard.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, config.Options{HostPrefixes: func() []netip.Prefix { return nil }})
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	logs := &lockedBuffer{}
	b, err := Build(cfg, BuildOptions{Logger: slog.New(slog.NewTextHandler(logs, nil)), Backend: firewall.NewDryRun(firewall.Options{Prefixes: true})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, logs
}

// gauges returns the values of one metric family by the given label.
func gauges(t *testing.T, b *Built, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := b.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}

func TestAuditAtStart(t *testing.T) {
	etc, err := filepath.Abs(corpusEtc)
	if err != nil {
		t.Fatal(err)
	}
	want, err := audit.Run(etc, audit.Options{TrustedEndpoints: []string{"1001"}})
	if err != nil {
		t.Fatal(err)
	}
	counts := want.CountBySeverity()
	if counts[audit.Critical] == 0 {
		t.Fatalf("the corpus config has no critical finding (weak secret of 1004, AMI user monitor): %+v", want.Findings)
	}
	b, logs := buildWith(t, fmt.Sprintf("audit:\n  asterisk_dir: %s\n  trusted_endpoints: [\"1001\"]\n", etc))

	got := gauges(t, b, "pbxguard_audit_findings", "severity")
	if len(got) != 5 {
		t.Fatalf("pbxguard_audit_findings has %d severities, want all 5: %v", len(got), got)
	}
	for _, s := range audit.Severities() {
		if got[s.String()] != float64(counts[s]) {
			t.Errorf("pbxguard_audit_findings{severity=%q} = %v, want %d", s, got[s.String()], counts[s])
		}
	}
	st := b.Status().Audit
	if st == nil || !st.Enabled || st.Dir != etc || st.Error != "" || st.Findings["critical"] != counts[audit.Critical] || st.Findings["high"] != counts[audit.High] {
		t.Fatalf("Status().Audit = %+v, want counts %v", st, counts)
	}
	out := logs.String()
	summary := fmt.Sprintf("asterisk config audit of %s: %d critical, %d high, %d medium, %d low, %d info finding(s)",
		etc, counts[audit.Critical], counts[audit.High], counts[audit.Medium], counts[audit.Low], counts[audit.Info])
	if strings.Count(out, "asterisk config audit of ") != 1 || !strings.Contains(out, summary) {
		t.Errorf("summary line %q not logged once:\n%s", summary, out)
	}
	logged := strings.Count(out, "msg=\"asterisk config audit finding\"")
	if n := counts[audit.Critical] + counts[audit.High]; logged != n {
		t.Errorf("%d findings logged, want each critical/high one (%d):\n%s", logged, n, out)
	}
	for _, f := range want.Findings {
		line := fmt.Sprintf("id=%s at=%s:%d", f.ID, f.File, f.Line)
		if f.Severity >= audit.High && !strings.Contains(out, line) {
			t.Errorf("finding %q not logged", line)
		}
		if f.Severity < audit.High && strings.Contains(out, line) {
			t.Errorf("%s finding %q logged; only critical and high are", f.Severity, line)
		}
	}
}

func TestAuditUnreadableDirIsAWarning(t *testing.T) {
	b, logs := buildWith(t, "audit:\n  asterisk_dir: /nonexistent/asterisk\n")
	got := gauges(t, b, "pbxguard_audit_findings", "severity")
	if len(got) != 5 || got["critical"] != 0 || got["info"] != 0 {
		t.Fatalf("pbxguard_audit_findings = %v, want the 5 severities at 0", got)
	}
	st := b.Status().Audit
	if st == nil || !strings.Contains(st.Error, "/nonexistent/asterisk") {
		t.Fatalf("Status().Audit = %+v, want the error", st)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN msg=\"asterisk config audit: not run\"") || !strings.Contains(out, "audit.asterisk_dir") {
		t.Fatalf("no warning with a hint:\n%s", out)
	}
}

func TestAuditDisabled(t *testing.T) {
	etc, _ := filepath.Abs(corpusEtc)
	b, logs := buildWith(t, fmt.Sprintf("audit: {enabled: false, asterisk_dir: %s}\n", etc))
	if got := gauges(t, b, "pbxguard_audit_findings", "severity"); len(got) != 5 || got["critical"] != 0 {
		t.Fatalf("pbxguard_audit_findings = %v, want 5 zeros", got)
	}
	if st := b.Status().Audit; st == nil || st.Enabled {
		t.Fatalf("Status().Audit = %+v", st)
	}
	if strings.Contains(logs.String(), "asterisk config audit") {
		t.Fatalf("audit ran while disabled:\n%s", logs.String())
	}
}

func TestJailTwinsMetricExposed(t *testing.T) {
	b, _ := buildWith(t, "audit: {enabled: false}\nallowlist_asterisk_trunks: false\n")
	if n := counterValue(t, b.Metrics(), "pbxguard_jail_twins_skipped_total", "jail", "asterisk"); n != 0 {
		t.Fatalf("pbxguard_jail_twins_skipped_total{jail=asterisk} = %v, want 0", n)
	}
}
