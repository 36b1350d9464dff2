package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
	"github.com/pbxguard/pbxguard/internal/fraud"
)

// Issue 9 point 2, the red team's reproduction through the real daemon:
// Asterisk's cdr_csv and cel_custom write a field holding a newline raw
// inside its quotes, and a dialled number or a caller-ID name can carry
// one. Rows whose dialled number (CDR) or caller name (CEL CHAN_START) hide
// a satellite call "by" 1001 and 1002 are appended to the files the daemon
// follows: no lock, no ban of 1001's or 1002's phone, no incident. A
// genuine fraudulent row of 1004 in the same CDR file is still contained.

// asteriskCSV renders a record as cdr_csv and CSV_QUOTE write it: every
// field in double quotes with quotes doubled, newlines raw, except the
// fields in bare (duration, billsec: written as numbers).
func asteriskCSV(fields []string, bare ...int) string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = `"` + strings.ReplaceAll(f, `"`, `""`) + `"`
		for _, b := range bare {
			if b == i {
				out[i] = f
			}
		}
	}
	return strings.Join(out, ",") + "\n"
}

// cdrRecord is a Master.csv row (18 fields) of a call that ended now.
func cdrRecord(src, dst, clid, channel, uniqueid string, now time.Time) string {
	end := now.UTC().Truncate(time.Second)
	start := end.Add(-40 * time.Second)
	const layout = "2006-01-02 15:04:05"
	return asteriskCSV([]string{"", src, dst, "from-internal", clid, channel, "PJSIP/carrier-000000f1", "Dial", "PJSIP/" + dst + "@carrier,30",
		start.Format(layout), start.Add(2 * time.Second).Format(layout), end.Format(layout), "40", "38", "ANSWERED", "DOCUMENTATION", uniqueid, ""}, 12, 13)
}

// celRecord is a cel_custom row (legacy mapping, 20 fields).
func celRecord(event, cidName, cidNum, exten, channel, uniqueid string, now time.Time) string {
	return asteriskCSV([]string{event, fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000), cidName, cidNum, "", "", "", exten, "from-internal",
		channel, "", "", "3", "", uniqueid, uniqueid, "", "", "", ""})
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// startForgedLab is startFraudLab with both fraud.cdr and fraud.cel
// followed.
func startForgedLab(t *testing.T, items []replayItem) (l *fraudLab, cdrPath, celPath string) {
	t.Helper()
	ns := newNetns(t, "forged")
	dir := t.TempDir()
	var ln net.Listener
	if err := inNetns(t, ns.Name, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("fake AMI listener in %s: %v", ns.Name, err)
	}
	secret := filepath.Join(dir, "ami.secret")
	if err := os.WriteFile(secret, []byte(fraudAMIPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cdrPath, celPath = filepath.Join(dir, "Master.csv"), filepath.Join(dir, "cel-Master.csv")
	for _, p := range []string{cdrPath, celPath} {
		if err := os.WriteFile(p, nil, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	top := fmt.Sprintf(`timezone: UTC
allowlist_asterisk_trunks: false
audit: {enabled: false}
fraud:
  country: US
  trunks: [carrier]
  ami: {addr: "%s", user: %s, secret_file: %s, md5: true}
  ban_for: 1h
  cdr: %s
  cel: %s
`, ln.Addr(), fraudAMIUser, secret, cdrPath, celPath)
	// Security events only, all compressed (no real-timed window): they
	// teach the daemon where 1001, 1002 and 1004 register from.
	srv := newFakeAMI(t, ln, items, time.Time{}, time.Time{}, cdrPath)
	cfg := writeDaemonConfig(t, dir, daemonConfig{backend: "nftables", top: top})
	d := startDaemon(t, ns, dir, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		in := srv.srv.LoggedIn() > 0
		log := d.out.String()
		if in && strings.Contains(log, "AMI listener started") && followsFile(log, cdrPath) && followsFile(log, celPath) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon did not log in to the fake AMI (or follow the CDR and CEL files); log:\n%s", tail(log, 30))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &fraudLab{ns: ns, dir: dir, srv: srv, d: d}, cdrPath, celPath
}

// TestForgedRecordsIntoDaemon: issue 9 "Show": forged CDR and CEL rows →
// no lock, no ban, no incident; a genuine fraudulent row still contained.
func TestForgedRecordsIntoDaemon(t *testing.T) {
	requireE2E(t, "nft")
	var items []replayItem
	for _, it := range readCorpusAMI(t) {
		if ami.IsSecurity(it.msg) {
			items = append(items, it)
		}
	}
	l, cdrPath, celPath := startForgedLab(t, items)
	l.waitStream(t, 45*time.Second)

	now := time.Now()
	// The forged rows, each on a line of its own inside a quoted field of
	// a genuine record of a call from the carrier (what an attacker can
	// dial in: pjsip unescapes %0A in the R-URI user).
	const layout = "2006-01-02 15:04:05"
	ts := now.UTC().Format(layout)
	forgedCDR := fmt.Sprintf(`,1001,+88216123456,from-internal,x,PJSIP/1001-00000099,x,Dial,x,%s,%s,%s,300,300,ANSWERED,DOCUMENTATION,%d.99,x`, ts, ts, ts, now.Unix())
	forgedCEL := fmt.Sprintf(`CHAN_START,%d.000001,Bob,1002,,,,+88216123456,from-internal,PJSIP/1002-00000099,,,3,,%d.98,%d.98,,,,`, now.Unix(), now.Unix(), now.Unix())
	appendTo(t, cdrPath, cdrRecord("+15551230000", "5551234567\n"+forgedCDR+"\n", `"Mallory" <+15551230000>`, "PJSIP/carrier-000000e1", fmt.Sprintf("%d.1", now.Unix()), now))
	appendTo(t, celPath, celRecord("CHAN_START", "Mallory\n"+forgedCEL+"\n", "+15551230000", "2125550100", "PJSIP/carrier-000000e2", fmt.Sprintf("%d.2", now.Unix()), now))
	// The same forgeries in the caller ID of a CDR and cut by the end of
	// the file (completed a moment later).
	cut := cdrRecord("+15551230000", "2125550100", "x\n"+forgedCDR+"\n", "PJSIP/carrier-000000e3", fmt.Sprintf("%d.3", now.Unix()), now)
	half := strings.Index(cut, "\n") + 1
	appendTo(t, cdrPath, cut[:half])
	time.Sleep(500 * time.Millisecond)
	appendTo(t, cdrPath, cut[half:])

	// Give the daemon time to (wrongly) act: the old followers locked 1001
	// and 1002 within a second.
	time.Sleep(2 * time.Second)
	for _, a := range l.srv.actions() {
		if act := a.msg.Get("Action"); act == "DBPut" || act == "Hangup" || act == "PJSIPHangup" {
			t.Errorf("forged rows caused %s %v", act, a.msg.Headers)
		}
	}
	if bans := l.d.bans(); len(bans) != 0 {
		t.Errorf("forged rows caused bans %+v", bans)
	}
	if n, kernel := kernelCount(t, l.ns, "nftables"); n != 0 {
		t.Errorf("forged rows put %d entries in the kernel set: %v", n, kernel)
	}
	// A genuine fraudulent row in the same CDR file: 1004 (cracked,
	// registered from 203.0.113.159) calls a satellite number.
	appendTo(t, cdrPath, cdrRecord(fraudExt, "+88216123456", `"Reception" <1004>`, "PJSIP/1004-000000e4", fmt.Sprintf("%d.4", now.Unix()), time.Now()))
	deadline := time.Now().Add(10 * time.Second)
	for {
		bans := l.d.bans()
		v, _ := l.srv.srv.DB(fraud.LockFamily, fraudExt)
		locked := v != ""
		if locked && len(bans) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the genuine fraudulent row of %s was not contained (locked %v, bans %+v); log:\n%s", fraudExt, locked, bans, tail(l.d.out.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := l.checkActions(t) // DBPut of 1004 only; no action on 1001, 1002, 2001
	l.checkBans(t, &c)     // 203.0.113.159 only, in the kernel set too
	incs := l.checkIncidents(t)
	t.Logf("after the forged rows and one genuine fraudulent row: %d incident(s), all on %s; lock of %s at %s",
		len(incs), fraudExt, fraudExt, c.lockAt.Format("15:04:05.000"))
}
