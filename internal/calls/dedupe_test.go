package calls

import (
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

// Issue 11.7: the CDR row of a call AMI reported is not a second call,
// even when the row is read before AMI's Hangup event arrives.
func TestCDRRowBeforeAMIHangupIsSameCall(t *testing.T) {
	tr := NewTracker(Config{})
	m := &ami.Message{}
	for _, kv := range [][2]string{{"Event", "Newchannel"}, {"Channel", "PJSIP/1004-00000005"}, {"Uniqueid", "1795579390.6"},
		{"Linkedid", "1795579390.6"}, {"Exten", "011442079460349"}} {
		m.Headers = append(m.Headers, ami.Header{Key: kv[0], Value: kv[1]})
	}
	if u, ok := tr.Handle(m, time.Unix(1795579390, 0)); !ok || u.Kind != CallStarted {
		t.Fatalf("%+v %v", u, ok)
	}
	rec, err := SplitCDRLine(`"","1004","011442079460349","outbound","""Reception"" <1004>","PJSIP/1004-00000005","PJSIP/carrier-00000006","Dial","PJSIP/011442079460349@carrier,30","2026-11-25 04:03:10","2026-11-25 04:03:10","2026-11-25 04:03:13",3,3,"ANSWERED","DOCUMENTATION","1795579390.6","outbound"`)
	if err != nil {
		t.Fatal(err)
	}
	if u, ok, err := tr.HandleCDR(rec, time.UTC); err != nil || ok {
		t.Errorf("CDR row of a call AMI has live: %+v ok=%v err=%v, want skipped", u, ok, err)
	}
}
