package ami

import (
	"bytes"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

func TestSecurityEventTable(t *testing.T) {
	const base = "Privilege: security,all\r\nEventTV: 2026-11-25T04:02:42.411+0000\r\nSeverity: Error\r\n"
	tv := time.Date(2026, 11, 25, 4, 2, 42, 411e6, time.UTC)
	tests := []struct {
		name string
		raw  string
		ok   bool
		want event.Event
	}{
		{"ami acl", "Event: FailedACL\r\n" + base + "Service: AMI\r\nAccountID: pbxadmin\r\nRemoteAddress: IPV4/TCP/203.0.113.222/34066\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("203.0.113.222"), Port: 34066, Service: event.ServiceAMI, Kind: event.ACLViolation, Account: "pbxadmin", Detail: "FailedACL", Detector: "ami", Structured: true}},
		{"pjsip unknown v6", "Event: InvalidAccountID\r\n" + base + "Service: PJSIP\r\nAccountID: 1005\r\nRemoteAddress: IPV6/UDP/2001:db8:203::bad:66/5060\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("2001:db8:203::bad:66"), Port: 5060, Service: event.ServicePJSIP, Kind: event.UnknownAccount, Account: "1005", Detail: "InvalidAccountID", Detector: "ami", Structured: true}},
		{"bracketed v6, mapped v4", "Event: ChallengeResponseFailed\r\n" + base + "Service: SIP\r\nRemoteAddress: IPV6/UDP/[::ffff:192.0.2.7]/5070\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("192.0.2.7"), Port: 5070, Service: event.ServiceSIP, Kind: event.AuthFailure, Detail: "ChallengeResponseFailed", Detector: "ami", Structured: true}},
		{"invalid password iax old EventTV", "Event: InvalidPassword\r\nPrivilege: security,all\r\nEventTV: 1318427581-123456\r\nService: IAX2\r\nAccountID: 5001\r\nRemoteAddress: IPV4/UDP/192.0.2.12/4569\r\n", true,
			event.Event{Time: time.Unix(1318427581, 123456000).UTC(), Addr: netip.MustParseAddr("192.0.2.12"), Port: 4569, Service: event.ServiceIAX2, Kind: event.AuthFailure, Account: "5001", Detail: "InvalidPassword", Detector: "ami", Structured: true}},
		{"success", "Event: SuccessfulAuth\r\n" + base + "Service: PJSIP\r\nAccountID: 1004\r\nRemoteAddress: IPV4/UDP/203.0.113.159/5060\r\nUsingPassword: 1\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("203.0.113.159"), Port: 5060, Service: event.ServicePJSIP, Kind: event.AuthSuccess, Account: "1004", Detail: "SuccessfulAuth", Detector: "ami", Structured: true}},
		{"challenge sent", "Event: ChallengeSent\r\n" + base + "Service: PJSIP\r\nRemoteAddress: IPV4/UDP/203.0.113.77/5060\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("203.0.113.77"), Port: 5060, Service: event.ServicePJSIP, Kind: event.ChallengeSent, Detail: "ChallengeSent", Detector: "ami", Structured: true}},
		{"bad format", "Event: RequestBadFormat\r\n" + base + "Service: AMI\r\nRemoteAddress: IPV4/TCP/198.51.100.9/40000\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("198.51.100.9"), Port: 40000, Service: event.ServiceAMI, Kind: event.BadRequest, Detail: "RequestBadFormat", Detector: "ami", Structured: true}},
		{"unexpected address", "Event: UnexpectedAddress\r\n" + base + "Service: SIP\r\nRemoteAddress: IPV4/UDP/198.51.100.9\r\n", true,
			event.Event{Time: tv, Addr: netip.MustParseAddr("198.51.100.9"), Service: event.ServiceSIP, Kind: event.BadRequest, Detail: "UnexpectedAddress", Detector: "ami", Structured: true}},
		// The attacker chose AccountID; a forged second RemoteAddress (as a
		// CRLF in the account would produce) must not name an address.
		{"forged remote address", "Event: InvalidAccountID\r\n" + base + "Service: PJSIP\r\nAccountID: x\r\nRemoteAddress: IPV4/UDP/198.51.100.21/5060\r\nRemoteAddress: IPV4/UDP/203.0.113.5/5060\r\n", true,
			event.Event{Time: tv, Service: event.ServicePJSIP, Kind: event.InjectionSuspect, Account: "x", Detail: "InvalidAccountID", Detector: "ami", Structured: true}},
		{"garbled address", "Event: FailedACL\r\n" + base + "Service: AMI\r\nRemoteAddress: IPV4/TCP/203.0.113.999/1\r\n", true,
			event.Event{Time: tv, Service: event.ServiceAMI, Kind: event.ACLViolation, Detail: "FailedACL", Detector: "ami", Structured: true}},
		{"not security class", "Event: FailedACL\r\nPrivilege: system,all\r\nRemoteAddress: IPV4/TCP/203.0.113.5/1\r\n", false, event.Event{}},
		{"user event with forged privilege", "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: x\r\nPrivilege: security,all\r\nEvent: FailedACL\r\nRemoteAddress: IPV4/TCP/203.0.113.5/1\r\n", false, event.Event{}},
		{"user event", "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: InvalidAccountID\r\nRemoteAddress: IPV4/TCP/203.0.113.5/1\r\n", false, event.Event{}},
		{"other security event", "Event: SessionLimit\r\n" + base + "RemoteAddress: IPV4/TCP/203.0.113.5/1\r\n", false, event.Event{}},
		{"response", "Response: Success\r\nMessage: Authentication accepted\r\n", false, event.Event{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseMessage([]byte(tt.raw))
			if err != nil {
				t.Fatal(err)
			}
			ev := event.Event{Account: "stale", Kind: event.Scan}
			ok := SecurityEvent(m, &ev)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if !tt.want.Structured {
				t.Fatal("table row without Structured")
			}
			if ev != tt.want {
				t.Errorf("got  %+v\nwant %+v", ev, tt.want)
			}
		})
	}
}

// TestSecurityEventsCorpus runs SecurityEvent over the recorded event
// streams and checks the addresses against ground-truth.json.
func TestSecurityEventsCorpus(t *testing.T) {
	for _, v := range corpusVersions {
		t.Run("asterisk-"+v, func(t *testing.T) {
			g := loadGroundTruth(t, v)
			r := NewReader(bytes.NewReader(rawEvents(t, v)))
			failures := map[netip.Addr]int{}
			amiFailures := map[netip.Addr]int{}
			success := map[netip.Addr]map[string]int{}
			total := 0
			var ev event.Event
			for {
				m, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if !SecurityEvent(m, &ev) {
					continue
				}
				total++
				if !ev.Addr.IsValid() || ev.Time.IsZero() || ev.Service == event.ServiceUnknown || ev.Port == 0 || !ev.Structured || ev.Detector != "ami" {
					t.Fatalf("incomplete event %+v from %v", ev, m.Headers)
				}
				if ev.Kind.IsFailure() {
					failures[ev.Addr]++
					if ev.Service == event.ServiceAMI {
						amiFailures[ev.Addr]++
					}
				}
				if ev.Kind == event.AuthSuccess {
					if success[ev.Addr] == nil {
						success[ev.Addr] = map[string]int{}
					}
					success[ev.Addr][ev.Account]++
				}
			}
			if total < 250 {
				t.Fatalf("only %d security events", total)
			}
			// AMI brute force: exactly one address, one failure per Login try.
			var bruteIP string
			var tries int
			for _, s := range g.Scenarios {
				if s.ID == "8b-ami-bruteforce" {
					bruteIP, tries = s.IP, s.Attempts
				}
			}
			if len(amiFailures) != 1 || amiFailures[netip.MustParseAddr(bruteIP)] != tries {
				t.Errorf("AMI failures %v, want %s ×%d", amiFailures, bruteIP, tries)
			}
			// Toll fraud: SuccessfulAuth for the cracked extension from the
			// fraudster, once per request with credentials; and from the cracker.
			ext := g.TollFraud.Extension
			fraud := netip.MustParseAddr(g.TollFraud.AttackerIP)
			for _, a := range g.Attackers {
				if a.IP == g.TollFraud.AttackerIP && success[fraud][ext] != a.Sent.WithCredentials {
					t.Errorf("SuccessfulAuth %s from %s: %d, ground truth sent %d requests with credentials", ext, fraud, success[fraud][ext], a.Sent.WithCredentials)
				}
			}
			if cracker := netip.MustParseAddr(g.Compromised[0].CrackedBy); success[cracker][ext] != 1 {
				t.Errorf("SuccessfulAuth %s from the cracker %s: %d, want 1", ext, cracker, success[cracker][ext])
			}
			// Every attacker except the IAX2 one (chan_iax2 raises no
			// security events) and the fraudster (who had the password) fails.
			known := map[netip.Addr]bool{netip.MustParseAddr("127.0.0.1"): true}
			for _, a := range g.Attackers {
				addr := netip.MustParseAddr(a.IP)
				known[addr] = true
				iax := a.Scenarios[0] == "3b-iax2-bruteforce"
				if addr == fraud || iax {
					if failures[addr] != 0 {
						t.Errorf("%s (%v): %d failures, want 0", a.IP, a.Scenarios, failures[addr])
					}
					continue
				}
				if failures[addr] == 0 {
					t.Errorf("attacker %s (%v): no failure event", a.IP, a.Scenarios)
				}
			}
			for _, l := range g.Legit {
				addr := netip.MustParseAddr(l.IP)
				known[addr] = true
				if failures[addr] != l.FailedAuth {
					t.Errorf("legit %s: %d failures, ground truth %d", l.IP, failures[addr], l.FailedAuth)
				}
			}
			for a := range failures {
				if !known[a] {
					t.Errorf("failure for %s, which is in no ground-truth table", a)
				}
			}
		})
	}
}

func BenchmarkSecurityEvent(b *testing.B) {
	m, _ := ParseMessage([]byte("Event: ChallengeResponseFailed\r\nPrivilege: security,all\r\nEventTV: 2026-11-25T04:00:27.875+0000\r\nSeverity: Error\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: 1002\r\nSessionID: 1-12790@203.0.113.60\r\nLocalAddress: IPV4/UDP/198.51.100.10/5060\r\nRemoteAddress: IPV4/UDP/203.0.113.60/5060\r\nChallenge: 1795579227/16daae487614b2f61637b405b1ba9183\r\nResponse: ff62d04c8f7c2501a886a113a0d387e2\r\nExpectedResponse: \r\n"))
	var ev event.Event
	b.ReportAllocs()
	for range b.N {
		if !SecurityEvent(m, &ev) {
			b.Fatal("not a security event")
		}
	}
}

// FuzzSecurityEvent: any message, no panic; an address only ever comes
// from the message's single RemoteAddress header.
func FuzzSecurityEvent(f *testing.F) {
	f.Add([]byte("Event: FailedACL\r\nPrivilege: security,all\r\nService: AMI\r\nRemoteAddress: IPV4/TCP/203.0.113.222/34066\r\n"))
	f.Add([]byte("Event: InvalidAccountID\r\nPrivilege: security\r\nRemoteAddress: IPV6/UDP/[2001:db8::1%eth0]/5060\r\nEventTV: 1318427581-123456\r\n"))
	f.Add([]byte("Event: SuccessfulAuth\r\nPrivilege: security,all\r\nAccountID: 1004\r\nRemoteAddress: IPV4/UDP/1.2.3.4\r\nremoteaddress: IPV4/UDP/5.6.7.8/1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMessage(data)
		if err != nil {
			return
		}
		var ev event.Event
		if !SecurityEvent(m, &ev) || !ev.Addr.IsValid() {
			return
		}
		remotes := m.Values("RemoteAddress")
		if len(remotes) != 1 {
			t.Fatalf("address %v from %d RemoteAddress headers", ev.Addr, len(remotes))
		}
		if a, p, ok := ParseRemoteAddress(remotes[0]); !ok || a != ev.Addr || p != ev.Port {
			t.Fatalf("address %v:%d does not come from %q", ev.Addr, ev.Port, remotes[0])
		}
		if ev.Kind == event.InjectionSuspect || ev.Addr.Is4In6() || ev.Addr.Zone() != "" {
			t.Fatalf("event %+v", ev)
		}
	})
}
