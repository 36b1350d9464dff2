package detect

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// corpusCounts runs the asterisk detector over one corpus file and counts
// events per address and kind.
type corpusCounts struct {
	byAddr     map[netip.Addr]*[event.NumKinds]int
	noAddr     [event.NumKinds]int
	lines      int
	matched    int
	timeErrors int
}

func countCorpusFile(t *testing.T, path string, now time.Time) *corpusCounts {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	d, err := New("asterisk", Options{Location: time.UTC, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	c := &corpusCounts{byAddr: map[netip.Addr]*[event.NumKinds]int{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var ev event.Event
	for sc.Scan() {
		c.lines++
		if !d.Detect(sc.Bytes(), &ev) {
			continue
		}
		c.matched++
		// The corpus ran on 2026-11-25 between 04:00 and 04:15 UTC.
		if ev.Time.Year() != 2026 || ev.Time.Month() != 11 || ev.Time.Day() != 25 {
			c.timeErrors++
		}
		if !ev.Addr.IsValid() {
			c.noAddr[ev.Kind]++
			continue
		}
		k := c.byAddr[ev.Addr]
		if k == nil {
			k = new([event.NumKinds]int)
			c.byAddr[ev.Addr] = k
		}
		k[ev.Kind]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return c
}

type groundTruth struct {
	Attackers []struct {
		IP        string   `json:"ip"`
		Scenarios []string `json:"scenarios"`
	} `json:"attackers"`
	Legit []struct {
		IP                 string `json:"ip"`
		Role               string `json:"role"`
		FailedAuthAttempts int    `json:"failed_auth_attempts"`
	} `json:"legit"`
}

func readTruth(t *testing.T, dir string) groundTruth {
	t.Helper()
	b, err := os.ReadFile(dir + "/ground-truth.json")
	if err != nil {
		t.Fatal(err)
	}
	var g groundTruth
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

func kindsString(k *[event.NumKinds]int) string {
	if k == nil {
		return "-"
	}
	var parts []string
	for i, n := range k {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", event.Kind(i), n))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func failures(k *[event.NumKinds]int) int {
	if k == nil {
		return 0
	}
	n := 0
	for i, v := range k {
		if event.Kind(i).IsFailure() {
			n += v
		}
	}
	return n
}

// corpusExpect is what each file must show per address: kind -> count.
type corpusExpect map[string]map[string]map[event.Kind]int // file -> addr -> kind -> n

func TestCorpus(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		dir    string
		expect corpusExpect
	}{
		{"asterisk-20", expectAsterisk20},
		{"asterisk-22", expectAsterisk22},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := corpusDir + "/" + tc.dir
			g := readTruth(t, dir)
			for _, file := range []string{"messages", "security", "syslog-local0.log"} {
				c := countCorpusFile(t, dir+"/log/"+file, now)
				if c.timeErrors != 0 {
					t.Errorf("%s: %d events with a wrong date", file, c.timeErrors)
				}
				// The table for the note.
				var b strings.Builder
				fmt.Fprintf(&b, "\n%s/%s: %d lines, %d events, without address: %s\n", tc.dir, file, c.lines, c.matched, kindsString(&c.noAddr))
				known := map[netip.Addr]bool{}
				for _, a := range g.Attackers {
					ip := netip.MustParseAddr(a.IP)
					known[ip] = true
					fmt.Fprintf(&b, "  attacker %-22s %-40s %s\n", a.IP, strings.Join(a.Scenarios, ","), kindsString(c.byAddr[ip]))
				}
				for _, l := range g.Legit {
					ip := netip.MustParseAddr(l.IP)
					known[ip] = true
					fmt.Fprintf(&b, "  legit    %-22s failed_auth(truth)=%d  failures=%d  %s\n", l.IP, l.FailedAuthAttempts, failures(c.byAddr[ip]), kindsString(c.byAddr[ip]))
				}
				var others []string
				for ip, k := range c.byAddr {
					if !known[ip] {
						others = append(others, ip.String()+" "+kindsString(k))
					}
				}
				sort.Strings(others)
				for _, o := range others {
					fmt.Fprintf(&b, "  other    %s\n", o)
				}
				t.Log(b.String())

				// Assertions.
				exp := tc.expect[file]
				if exp == nil {
					t.Errorf("%s: no expectations", file)
					continue
				}
				for ip, k := range c.byAddr {
					want := exp[ip.String()]
					for kind, n := range k {
						if n != want[event.Kind(kind)] {
							t.Errorf("%s: %s %s = %d, want %d", file, ip, event.Kind(kind), n, want[event.Kind(kind)])
						}
					}
				}
				for ip, want := range exp {
					got := c.byAddr[netip.MustParseAddr(ip)]
					for kind, n := range want {
						g := 0
						if got != nil {
							g = got[kind]
						}
						if g != n {
							t.Errorf("%s: %s %s = %d, want %d", file, ip, kind, g, n)
						}
					}
				}
				for k, n := range c.noAddr {
					if n != 0 {
						t.Errorf("%s: %d %s events without an address (no injection in this corpus)", file, n, event.Kind(k))
					}
				}
				// Every legit address: only the failures ground truth says it made
				// (the carrier's one misdialled DID is a call rejection, not an auth failure).
				for _, l := range g.Legit {
					k := c.byAddr[netip.MustParseAddr(l.IP)]
					authFails := 0
					if k != nil {
						authFails = k[event.AuthFailure] + k[event.UnknownAccount] + k[event.ACLViolation] + k[event.Scan] + k[event.BadRequest]
					}
					// syslog carries the NOTICE and the security event of each attempt.
					perAttempt := 1
					if file == "syslog-local0.log" {
						perAttempt = 2
					}
					if authFails != l.FailedAuthAttempts*perAttempt {
						t.Errorf("%s: legit %s has %d auth failures, ground truth %d attempt(s) × %d line(s)", file, l.IP, authFails, l.FailedAuthAttempts, perAttempt)
					}
				}
				// Every attacker is seen: failing, or (toll fraud with a cracked
				// password) authenticating.
				for _, a := range g.Attackers {
					k := c.byAddr[netip.MustParseAddr(a.IP)]
					iaxOnly := len(a.Scenarios) == 1 && strings.Contains(a.Scenarios[0], "iax2")
					if file == "security" && iaxOnly {
						continue // chan_iax2 raises no security events
					}
					fraudOnly := len(a.Scenarios) == 1 && strings.HasPrefix(a.Scenarios[0], "7-toll-fraud")
					if file == "messages" && fraudOnly {
						continue // correct credentials: nothing at NOTICE level (README)
					}
					if failures(k) == 0 && (k == nil || k[event.AuthSuccess] == 0) {
						t.Errorf("%s: attacker %s not detected", file, a.IP)
					}
				}
			}
		})
	}
}

// Expected events per file and address, checked against ground-truth.json
// and the corpus README (line shapes and security event counts):
//   - 3-svcrack: 28 REGISTERs with credentials, the last one right → 27
//     auth failures + 1 auth_success on pjsip; chan_sip 24 tries, all wrong.
//   - 7-toll-fraud: the attacker authenticates correctly 41 times: no
//     failure anywhere, 41 auth_success + 41 challenge_sent (the fraud
//     stage catches it).
//   - legit phones: one mistyped password each (one NOTICE + one
//     ChallengeResponseFailed); the carrier: one misdialled DID
//     (call_rejected), never an auth failure.
//   - syslog-local0.log carries both the NOTICEs and the security events.
var expectAsterisk20 = corpusExpect{
	"messages": {
		"203.0.113.45":         {event.Scan: 1},
		"203.0.113.77":         {event.UnknownAccount: 29, event.ACLViolation: 4},
		"203.0.113.101":        {event.AuthFailure: 51},
		"2001:db8:203::bad:66": {event.AuthFailure: 30},
		"203.0.113.130":        {event.UnknownAccount: 12, event.CallRejected: 20},
		"203.0.113.201":        {event.AuthFailure: 4, event.ACLViolation: 28},
		"203.0.113.222":        {event.AuthFailure: 10, event.UnknownAccount: 3, event.ACLViolation: 6},
		"203.0.113.233":        {event.AuthFailure: 5, event.BadRequest: 1},
		"198.51.100.21":        {event.AuthFailure: 1},
		"203.0.113.60":         {event.AuthFailure: 1},
		"203.0.113.250":        {event.CallRejected: 1},
	},
	"security": {
		"203.0.113.45":         {event.UnknownAccount: 1, event.ChallengeSent: 1},
		"203.0.113.77":         {event.UnknownAccount: 29, event.ACLViolation: 2, event.ChallengeSent: 49},
		"203.0.113.101":        {event.AuthFailure: 51, event.AuthSuccess: 1, event.ChallengeSent: 26},
		"2001:db8:203::bad:66": {event.AuthFailure: 30, event.ChallengeSent: 1},
		"203.0.113.130":        {event.UnknownAccount: 12, event.ACLViolation: 8, event.ChallengeSent: 20},
		"203.0.113.201":        {event.AuthFailure: 4, event.ACLViolation: 14, event.ChallengeSent: 4},
		"203.0.113.222":        {event.AuthFailure: 4, event.UnknownAccount: 3, event.ACLViolation: 3},
		"203.0.113.159":        {event.AuthSuccess: 41, event.ChallengeSent: 41},
		"198.51.100.21":        {event.AuthFailure: 1, event.AuthSuccess: 10, event.ChallengeSent: 13},
		"203.0.113.60":         {event.AuthFailure: 1, event.AuthSuccess: 1, event.ChallengeSent: 2},
		"127.0.0.1":            {event.AuthSuccess: 2},
	},
	"syslog-local0.log": {
		"203.0.113.45":         {event.UnknownAccount: 1, event.Scan: 1, event.ChallengeSent: 1},
		"203.0.113.77":         {event.UnknownAccount: 58, event.ACLViolation: 6, event.ChallengeSent: 49},
		"203.0.113.101":        {event.AuthFailure: 102, event.AuthSuccess: 1, event.ChallengeSent: 26},
		"2001:db8:203::bad:66": {event.AuthFailure: 60, event.ChallengeSent: 1},
		"203.0.113.130":        {event.UnknownAccount: 24, event.ACLViolation: 8, event.CallRejected: 20, event.ChallengeSent: 20},
		"203.0.113.201":        {event.AuthFailure: 8, event.ACLViolation: 42, event.ChallengeSent: 4},
		"203.0.113.222":        {event.AuthFailure: 14, event.UnknownAccount: 6, event.ACLViolation: 9},
		"203.0.113.233":        {event.AuthFailure: 5, event.BadRequest: 1},
		"203.0.113.159":        {event.AuthSuccess: 41, event.ChallengeSent: 41},
		"198.51.100.21":        {event.AuthFailure: 2, event.AuthSuccess: 10, event.ChallengeSent: 13},
		"203.0.113.60":         {event.AuthFailure: 2, event.AuthSuccess: 1, event.ChallengeSent: 2},
		"203.0.113.250":        {event.CallRejected: 1},
		"127.0.0.1":            {event.AuthSuccess: 2},
	},
}
var expectAsterisk22 = corpusExpect{
	"messages": {
		"203.0.113.52":          {event.Scan: 1},
		"192.0.2.118":           {event.UnknownAccount: 34},
		"203.0.113.143":         {event.AuthFailure: 27},
		"2001:db8:203::c0:ffee": {event.AuthFailure: 30},
		"192.0.2.205":           {event.UnknownAccount: 12, event.CallRejected: 12},
		"192.0.2.64":            {event.AuthFailure: 4, event.ACLViolation: 16},
		"203.0.113.211":         {event.AuthFailure: 10, event.UnknownAccount: 3, event.ACLViolation: 6},
		"192.0.2.12":            {event.AuthFailure: 5, event.BadRequest: 1},
		"198.51.100.44":         {event.AuthFailure: 1},
		"203.0.113.31":          {event.AuthFailure: 1},
		"203.0.113.240":         {event.CallRejected: 1},
	},
	"security": {
		"203.0.113.52":          {event.UnknownAccount: 1, event.ChallengeSent: 1},
		"192.0.2.118":           {event.UnknownAccount: 34, event.ChallengeSent: 34},
		"203.0.113.143":         {event.AuthFailure: 27, event.AuthSuccess: 1, event.ChallengeSent: 1},
		"2001:db8:203::c0:ffee": {event.AuthFailure: 30, event.ChallengeSent: 1},
		"192.0.2.205":           {event.UnknownAccount: 12, event.ChallengeSent: 12},
		"192.0.2.64":            {event.AuthFailure: 4, event.ACLViolation: 8, event.ChallengeSent: 4},
		"203.0.113.211":         {event.AuthFailure: 4, event.UnknownAccount: 3, event.ACLViolation: 3},
		"203.0.113.187":         {event.AuthSuccess: 41, event.ChallengeSent: 41},
		"198.51.100.44":         {event.AuthFailure: 1, event.AuthSuccess: 9, event.ChallengeSent: 10},
		"203.0.113.31":          {event.AuthFailure: 1, event.AuthSuccess: 1, event.ChallengeSent: 2},
		"127.0.0.1":             {event.AuthSuccess: 2},
	},
	"syslog-local0.log": {
		"203.0.113.52":          {event.UnknownAccount: 1, event.Scan: 1, event.ChallengeSent: 1},
		"192.0.2.118":           {event.UnknownAccount: 68, event.ChallengeSent: 34},
		"203.0.113.143":         {event.AuthFailure: 54, event.AuthSuccess: 1, event.ChallengeSent: 1},
		"2001:db8:203::c0:ffee": {event.AuthFailure: 60, event.ChallengeSent: 1},
		"192.0.2.205":           {event.UnknownAccount: 24, event.CallRejected: 12, event.ChallengeSent: 12},
		"192.0.2.64":            {event.AuthFailure: 8, event.ACLViolation: 24, event.ChallengeSent: 4},
		"203.0.113.211":         {event.AuthFailure: 14, event.UnknownAccount: 6, event.ACLViolation: 9},
		"192.0.2.12":            {event.AuthFailure: 5, event.BadRequest: 1},
		"203.0.113.187":         {event.AuthSuccess: 41, event.ChallengeSent: 41},
		"198.51.100.44":         {event.AuthFailure: 2, event.AuthSuccess: 9, event.ChallengeSent: 10},
		"203.0.113.31":          {event.AuthFailure: 2, event.AuthSuccess: 1, event.ChallengeSent: 2},
		"203.0.113.240":         {event.CallRejected: 1},
		"127.0.0.1":             {event.AuthSuccess: 2},
	},
}
