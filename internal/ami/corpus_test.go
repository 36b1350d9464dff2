package ami

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusDir is the project's recording (testdata/corpus at the module root).
func corpusDir(version string) string {
	return filepath.Join("..", "..", "testdata", "corpus", "asterisk-"+version)
}

var corpusVersions = []string{"20", "22"}

// rawEvents returns the exact bytes Asterisk sent on the recorded event
// session (ami/ami-events.raw.gz).
func rawEvents(t testing.TB, version string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir(version), "ami", "ami-events.raw.gz"))
	if err != nil {
		t.Fatalf("corpus missing: %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// countEventsIndependently counts events by type with plain string
// splitting, independent of Reader: blocks end at "\r\n\r\n", and an
// event block's first line is "Event: <type>".
func countEventsIndependently(raw []byte) (events map[string]int, responses int) {
	events = map[string]int{}
	for _, block := range strings.Split(string(raw), "\r\n\r\n") {
		lines := strings.Split(block, "\r\n")
		if len(lines) > 0 && strings.HasPrefix(lines[0], "Asterisk Call Manager/") {
			lines = lines[1:]
		}
		if len(lines) == 0 || lines[0] == "" {
			continue
		}
		if v, ok := strings.CutPrefix(lines[0], "Event: "); ok {
			events[v]++
		} else if strings.HasPrefix(lines[0], "Response: ") {
			responses++
		}
	}
	return events, responses
}

// transcriptRecord is one line of ami-actions.transcript.jsonl.
type transcriptRecord struct {
	T    string `json:"t"`
	Dir  string `json:"dir"`
	Data string `json:"data"`
}

func transcript(t testing.TB, version string) []transcriptRecord {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir(version), "ami", "ami-actions.transcript.jsonl"))
	if err != nil {
		t.Fatalf("corpus missing: %v", err)
	}
	var recs []transcriptRecord
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		var r transcriptRecord
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("transcript line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// groundTruth is the part of ground-truth.json the AMI tests check.
type groundTruth struct {
	Attackers []struct {
		IP             string   `json:"ip"`
		Scenarios      []string `json:"scenarios"`
		ExpectedBanned bool     `json:"expected_banned"`
		Sent           struct {
			WithCredentials int `json:"sip_requests_with_credentials"`
		} `json:"sent_on_wire_total"`
	} `json:"attackers"`
	Legit []struct {
		IP         string `json:"ip"`
		FailedAuth int    `json:"failed_auth_attempts"`
	} `json:"legit"`
	Compromised []struct {
		Extension  string `json:"extension"`
		CrackedBy  string `json:"cracked_by"`
		UsedBy     string `json:"used_for_toll_fraud_by"`
		DriverName string `json:"driver"`
	} `json:"compromised_extensions"`
	TollFraud struct {
		AttackerIP string `json:"attacker_ip"`
		Extension  string `json:"extension"`
		Hangup     string `json:"ami_hangup_of_one_call"`
	} `json:"toll_fraud"`
	AMITranscript struct {
		ChannelsSeen int    `json:"channels_seen"`
		Hangup       string `json:"hangup_channel"`
	} `json:"ami_transcript"`
	Scenarios []struct {
		ID       string `json:"id"`
		IP       string `json:"ip"`
		Attempts int    `json:"attempts"`
	} `json:"scenarios"`
}

func loadGroundTruth(t testing.TB, version string) groundTruth {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(corpusDir(version), "ground-truth.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g groundTruth
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}
