package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pbxguard/pbxguard/internal/fraud"
)

const corpus20 = "../../testdata/corpus/asterisk-20"

// runCmd runs the CLI in-process and returns stdout and the exit code.
func runIncidentCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.Execute()
	code := exitOK
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else {
			code = exitUsage
		}
		t.Logf("err: %v", err)
	}
	return out.String(), code
}

func TestIncidentReportCorpusJSON(t *testing.T) {
	out, code := runIncidentCLI(t, "incident", "report", "--json",
		"--cdr", corpus20+"/log/cdr-csv/Master.csv", "--log", corpus20+"/log/security")
	if code != exitFindings {
		t.Fatalf("exit %d, want %d (suspicious found)\n%s", code, exitFindings, out)
	}
	var rep fraud.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	sus := rep.Suspicious()
	if len(sus) != 1 {
		t.Fatalf("suspicious = %+v, want exactly 1004", sus)
	}
	e := sus[0]
	if e.Extension != "1004" || !e.PrefixGuessing || e.Calls != 40 || e.InternationalCalls != 40 ||
		!slices.Equal(e.Countries, []string{"GB", "IL"}) || !slices.Equal(e.Addrs, []string{"203.0.113.159"}) ||
		e.FirstCall != "2026-11-25T04:03:10Z" || len(e.Reasons) == 0 {
		t.Errorf("1004 entry = %+v", e)
	}
	var saw1001 bool
	for _, x := range rep.Extensions {
		if x.Extension == "1001" {
			saw1001 = true
			if x.Suspicious || x.InternationalCalls != 1 {
				t.Errorf("1001 = %+v, want not suspicious with its 1 legit international call", x)
			}
		}
	}
	if !saw1001 {
		t.Error("1001 missing from the report")
	}
	// The exact key set of the documented shape.
	var raw map[string][]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"extension", "suspicious", "calls", "international_calls", "countries", "prefix_guessing", "addrs", "first_call", "reasons"} {
		if _, ok := raw["extensions"][0][k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
}

func TestIncidentReportText(t *testing.T) {
	out, code := runIncidentCLI(t, "incident", "report", "--cdr", corpus20+"/log/cdr-csv/Master.csv", "--log", corpus20+"/log/security")
	if code != exitFindings || !bytes.Contains([]byte(out), []byte("SUSPICIOUS extension 1004")) || !bytes.Contains([]byte(out), []byte("203.0.113.159")) {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestIncidentReportRatesAndExitCodes(t *testing.T) {
	dir := t.TempDir()
	rates := filepath.Join(dir, "rates.csv")
	if err := os.WriteFile(rates, []byte("key,rate\nGB,0.10\nIL,0.20\n+882,6.00\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := runIncidentCLI(t, "incident", "report", "--json", "--cdr", corpus20+"/log/cdr-csv/Master.csv", "--rates", rates)
	if code != exitFindings {
		t.Fatalf("exit %d", code)
	}
	var rep fraud.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	e := rep.Suspicious()[0]
	// 29 GB calls (3 s each but one of 2 s: 86 s), 6 IL (18 s), 4 +882 (12 s)
	if e.EstimatedCost == nil || *e.EstimatedCost < 1 || *e.EstimatedCost > 2 {
		t.Errorf("estimated cost = %v", e.EstimatedCost)
	}
	t.Logf("estimated cost of 1004: %.2f", *e.EstimatedCost)

	// Only legit calls: exit 0.
	legit := filepath.Join(dir, "legit.csv")
	if err := os.WriteFile(legit, []byte(`"","1001","0033170189999","outbound","""Alice"" <1001>","PJSIP/1001-0000003f","PJSIP/carrier-00000040","Dial","PJSIP/0033170189999@carrier,30","2026-11-25 04:03:37","2026-11-25 04:03:37","2026-11-25 04:03:42",5,5,"ANSWERED","DOCUMENTATION","1795579417.64","outbound"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := runIncidentCLI(t, "incident", "report", "--cdr", legit); code != exitOK {
		t.Errorf("legit only: exit %d\n%s", code, out)
	}
	// Bad input: exit 2.
	if _, code := runIncidentCLI(t, "incident", "report", "--cdr", filepath.Join(dir, "missing.csv")); code != exitUsage {
		t.Errorf("missing file: exit %d", code)
	}
	if _, code := runIncidentCLI(t, "incident", "report"); code != exitUsage {
		t.Errorf("no --cdr: exit %d", code)
	}
	if _, code := runIncidentCLI(t, "incident", "report", "--cdr", legit, "--since", "yesterday"); code != exitUsage {
		t.Errorf("bad --since: exit %d", code)
	}
	garbage := filepath.Join(dir, "garbage.csv")
	os.WriteFile(garbage, []byte("hello,world\nfoo\n"), 0o600)
	if _, code := runIncidentCLI(t, "incident", "report", "--cdr", garbage); code != exitUsage {
		t.Errorf("garbage: exit %d", code)
	}
}

func TestIncidentReportCorpus22(t *testing.T) {
	const c22 = "../../testdata/corpus/asterisk-22"
	if _, err := os.Stat(c22 + "/log/cdr-csv/Master.csv"); err != nil {
		t.Skip("no asterisk-22 corpus")
	}
	out, code := runIncidentCLI(t, "incident", "report", "--json", "--cdr", c22+"/log/cdr-csv/Master.csv", "--log", c22+"/log/security")
	if code != exitFindings {
		t.Fatalf("exit %d", code)
	}
	var rep fraud.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	sus := rep.Suspicious()
	if len(sus) != 1 || sus[0].Extension != "204" || !sus[0].PrefixGuessing || !slices.Equal(sus[0].Countries, []string{"GB", "IL"}) ||
		!slices.Equal(sus[0].Addrs, []string{"203.0.113.187"}) {
		t.Errorf("suspicious %+v", sus)
	}
}

func TestIncidentConfigDefaults(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("fraud:\n  country: US\n  trunks: [carrier]\n"), 0o600)
	os.WriteFile(bad, []byte("fraud:\n  country: US\n  window: soon\n"), 0o600)
	if out, code := runIncidentCLI(t, "incident", "report", "--config", good, "--cdr", corpus20+"/log/cdr-csv/Master.csv"); code != exitFindings {
		t.Errorf("good config: exit %d\n%s", code, out)
	}
	if _, code := runIncidentCLI(t, "incident", "report", "--config", bad, "--cdr", corpus20+"/log/cdr-csv/Master.csv"); code != exitUsage {
		t.Errorf("bad config: exit %d", code)
	}
	// The config's country is used unless --country is given.
	gb := filepath.Join(dir, "gb.yaml")
	os.WriteFile(gb, []byte("fraud:\n  country: XX\n"), 0o600)
	if _, code := runIncidentCLI(t, "incident", "report", "--config", gb, "--cdr", corpus20+"/log/cdr-csv/Master.csv"); code != exitUsage {
		t.Errorf("config country XX: exit %d", code)
	}
}
