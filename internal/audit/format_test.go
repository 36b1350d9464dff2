package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pbxguard/pbxguard/internal/version"
)

func sampleReport() *Report {
	return &Report{Dir: "/etc/asterisk", Files: []string{"sip.conf"}, Findings: []Finding{
		{ID: "sip.allowguest", Severity: High, File: "sip.conf", Line: 4, Message: "m1", Fix: "f1"},
		{ID: "logging.security-off", Severity: Medium, File: "logger.conf", Line: 0, Message: "m2", Fix: "f2"},
		{ID: "secret.weak", Severity: Critical, File: "pjsip.conf", Line: 9, Message: "m3", Fix: "f3"},
	}}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Findings []map[string]any `json:"findings"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	f := got.Findings[0]
	if f["id"] != "sip.allowguest" || f["severity"] != "high" || f["file"] != "sip.conf" || f["line"] != 4.0 || f["message"] != "m1" || f["fix"] != "f1" {
		t.Errorf("first finding %v", f)
	}
	b.Reset()
	if err := (&Report{}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"findings": []`) {
		t.Errorf("empty report: %s", b.String())
	}
	var r Report
	if err := json.Unmarshal([]byte(`{"findings":[{"id":"x","severity":"critical"}]}`), &r); err != nil || r.Findings[0].Severity != Critical {
		t.Errorf("round trip: %v %+v", err, r)
	}
}

func TestWriteSARIF(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteSARIF(&b); err != nil {
		t.Fatal(err)
	}
	var log struct {
		Version string `json:"version"`
		Schema  string `json:"$schema"`
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name    string `json:"name"`
					Version string `json:"version"`
					Rules   []struct {
						ID string `json:"id"`
					} `json:"rules"`
				} `json:"driver"`
			} `json:"tool"`
			OriginalURIBaseIDs map[string]struct {
				URI string `json:"uri"`
			} `json:"originalUriBaseIds"`
			Results []struct {
				RuleID    string `json:"ruleId"`
				RuleIndex int    `json:"ruleIndex"`
				Level     string `json:"level"`
				Message   struct {
					Text string `json:"text"`
				} `json:"message"`
				Locations []struct {
					PhysicalLocation struct {
						ArtifactLocation struct {
							URI       string `json:"uri"`
							URIBaseID string `json:"uriBaseId"`
						} `json:"artifactLocation"`
						Region *struct {
							StartLine int `json:"startLine"`
						} `json:"region"`
					} `json:"physicalLocation"`
				} `json:"locations"`
			} `json:"results"`
		} `json:"runs"`
	}
	if err := json.Unmarshal(b.Bytes(), &log); err != nil {
		t.Fatal(err)
	}
	if log.Version != "2.1.0" || log.Schema == "" || len(log.Runs) != 1 {
		t.Fatalf("header: %+v", log)
	}
	run := log.Runs[0]
	if run.Tool.Driver.Name != "pbxguard" || len(run.Results) != 3 {
		t.Fatalf("run: %+v", run)
	}
	if run.Tool.Driver.Version != version.Short() || run.Tool.Driver.Version == "" {
		t.Errorf("tool version %q, want %q", run.Tool.Driver.Version, version.Short())
	}
	if run.OriginalURIBaseIDs["ASTERISK_DIR"].URI != "file:///etc/asterisk/" {
		t.Errorf("base: %+v", run.OriginalURIBaseIDs)
	}
	levels := []string{"error", "warning", "error"}
	for i, res := range run.Results {
		if run.Tool.Driver.Rules[res.RuleIndex].ID != res.RuleID {
			t.Errorf("result %d: ruleIndex %d is not %s", i, res.RuleIndex, res.RuleID)
		}
		if res.Level != levels[i] {
			t.Errorf("result %d level %s want %s", i, res.Level, levels[i])
		}
		loc := res.Locations[0].PhysicalLocation
		if loc.ArtifactLocation.URIBaseID != "ASTERISK_DIR" || loc.ArtifactLocation.URI == "" {
			t.Errorf("location %+v", loc)
		}
		if (loc.Region == nil) != (i == 1) || loc.Region != nil && loc.Region.StartLine < 1 {
			t.Errorf("result %d region %+v", i, loc.Region)
		}
	}
}

func TestWriteText(t *testing.T) {
	r := sampleReport()
	r.Findings = Check(&Config{}, Options{}) // logging.security-off only
	r.Findings = append(sampleReport().Findings, r.Findings...)
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "pbxguard audit of /etc/asterisk: 4 findings (1 critical, 1 high, 2 medium)\n") {
		t.Errorf("header: %q", out)
	}
	c, h, m := strings.Index(out, "\nCRITICAL (1)\n"), strings.Index(out, "\nHIGH (1)\n"), strings.Index(out, "\nMEDIUM (2)\n")
	if c < 0 || h < c || m < h || strings.Contains(out, "LOW") {
		t.Errorf("grouping wrong:\n%s", out)
	}
	if !strings.Contains(out, "sip.conf:4\n      m1\n      fix: f1\n") || !strings.Contains(out, "logger.conf\n      m2") {
		t.Errorf("finding layout:\n%s", out)
	}
	b.Reset()
	if err := (&Report{Dir: "/x", Files: []string{"sip.conf"}}).WriteText(&b); err != nil || !strings.Contains(b.String(), "no findings") {
		t.Errorf("empty: %q %v", b.String(), err)
	}
}

func TestSeverity(t *testing.T) {
	for _, s := range Severities() {
		got, err := ParseSeverity(strings.ToUpper(s.String()))
		if err != nil || got != s {
			t.Errorf("ParseSeverity(%s) = %v %v", s, got, err)
		}
	}
	if _, err := ParseSeverity("severe"); err == nil {
		t.Error("accepted severe")
	}
	r := sampleReport()
	if r.AtOrAbove(High) != 2 || r.AtOrAbove(Info) != 3 || r.AtOrAbove(Critical) != 1 {
		t.Error("AtOrAbove")
	}
	c := (*Report)(nil).CountBySeverity()
	if len(c) != 5 || c[Info] != 0 {
		t.Errorf("nil counts %v", c)
	}
}

func TestRunErrors(t *testing.T) {
	if _, err := Run("/nonexistent/asterisk", Options{}); err == nil || !strings.Contains(err.Error(), "--asterisk-dir") {
		t.Errorf("err = %v", err)
	}
	if _, err := Run("format_test.go", Options{}); err == nil {
		t.Error("a file is not a directory")
	}
}
