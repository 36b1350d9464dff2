package fraud

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"+442079460349", "+442079460349"},
		{"5551234567\n,1001,+88216123456", `5551234567\n,1001,+88216123456`},
		{"a\r\nBcc: x@example.org", `a\r\nBcc: x@example.org`},
		{"\x00\x01\x1b[2J\x7f\t", `\x00\x01\x1b[2J\x7f\t`},
		{`C:\n`, `C:\\n`}, // a backslash cannot forge an escape
		{"\xff\xfe", `\xff\xfe`},
		{"Zoë Müller", "Zoë Müller"},
		{"a\u2028b\u2029c\u0085d", `a\u2028b\u2029c\u0085d`},
		{"1001\u202egnp.exe", `1001\u202egnp.exe`},
		{`"quoted"`, `"quoted"`},
	} {
		if got := Escape(tt.in, 0); got != tt.want {
			t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Caps: at most max bytes, cut between escapes and characters, "…".
	long := strings.Repeat("9", 9<<10)
	if got := Escape(long, 0); len(got) != MaxAlertText || !strings.HasSuffix(got, "…") || strings.Trim(strings.TrimSuffix(got, "…"), "9") != "" {
		t.Errorf("9 KB: %d bytes %q…", len(got), got[:20])
	}
	if got := Escape(strings.Repeat("\n", 100), 20); got != strings.Repeat(`\n`, 8)+"…" {
		t.Errorf("escapes cut: %q", got)
	}
	if got := Escape(strings.Repeat("é", 100), 20); got != strings.Repeat("é", 8)+"…" || !utf8.ValidString(got) {
		t.Errorf("runes cut: %q", got)
	}
	if got := Escape("exactly20bytes......", 20); got != "exactly20bytes......" {
		t.Errorf("fits: %q", got)
	}
	for _, in := range []string{long, strings.Repeat("\x00é\n", 3000), "\xff" + long} {
		for _, max := range []int{1, 2, 3, 4, 7, 64, 256} {
			got := Escape(in, max)
			if len(got) > max && len(got) > len("…") || strings.ContainsAny(got, "\r\n\x00") || !utf8.ValidString(got) {
				t.Errorf("Escape(%.10q, %d) = %q", in, max, got)
			}
		}
	}
}

// hostile is an incident whose caller-reachable fields carry what a red
// team puts in a dialled number or a SIP user name.
func hostile() *Incident {
	forged := "5551234567\r\nBcc: victim@example.org\r\n\r\nfake body\n.\nQUIT\x00\x1b[2J" + strings.Repeat("9", 9<<10)
	return &Incident{ID: "x", Rule: RuleSatellite, Severity: SeverityCritical,
		Extension: "1001\r\nSubject: pwned", Channel: "PJSIP/1001-00000001\n", Dialled: forged,
		Addrs:  []netip.Addr{netip.MustParseAddr("203.0.113.159")},
		Reason: "call to satellite number +88216123456 (" + forged + ")", Evidence: []string{forged},
		Actions: []Action{{Kind: "lock", Target: "1001\n", Error: "AMI: " + forged}}}
}

func TestSubjectHostile(t *testing.T) {
	s := Subject(hostile())
	if strings.ContainsAny(s, "\r\n\x00") || len(s) > MaxAlertText || !strings.Contains(s, `1001\r\nSubject: pwned`) {
		t.Errorf("subject %q", s)
	}
}

func TestSMTPAlerterHostile(t *testing.T) {
	addr, msg := fakeSMTP(t)
	s := &SMTPAlerter{Addr: addr, From: "pbxguard@example.org", To: []string{"admin@example.org"}}
	if err := s.Alert(context.Background(), hostile()); err != nil {
		t.Fatal(err)
	}
	var m string
	select {
	case m = <-msg:
	case <-time.After(5 * time.Second):
		t.Fatal("no mail")
	}
	head, body, ok := strings.Cut(m, "\r\n\r\n")
	if !ok {
		t.Fatalf("no header/body split:\n%.400s", m)
	}
	hdrs := strings.Split(head, "\r\n")
	if len(hdrs) != 6 || !strings.HasPrefix(hdrs[2], "Subject: ") || strings.Contains(head, "\r\nBcc") {
		t.Errorf("headers injected:\n%s", head)
	}
	if strings.ContainsAny(strings.ReplaceAll(body, "\r\n", ""), "\r\n\x00\x1b") && strings.Contains(body, "fake body\r\n") {
		t.Errorf("raw attacker text in the body:\n%.600s", body)
	}
	for _, line := range strings.Split(body, "\r\n") {
		if len(line) > 2*MaxAlertText+64 || strings.ContainsAny(line, "\x00\x1b\r\n") || line == "." || line == "QUIT" {
			t.Errorf("body line %.80q (%d bytes)", line, len(line))
		}
	}
}

func TestWebhookAlerterHostile(t *testing.T) {
	var raw []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { raw, _ = io.ReadAll(r.Body) }))
	defer srv.Close()
	if err := (&WebhookAlerter{URL: srv.URL}).Alert(context.Background(), hostile()); err != nil {
		t.Fatal(err)
	}
	var got Incident
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	for name, v := range map[string]string{"extension": got.Extension, "channel": got.Channel, "dialled": got.Dialled, "reason": got.Reason,
		"evidence": got.Evidence[0], "target": got.Actions[0].Target, "error": got.Actions[0].Error} {
		if strings.ContainsAny(v, "\r\n\x00\x1b") || len(v) > 2*MaxAlertText {
			t.Errorf("%s = %.80q (%d bytes)", name, v, len(v))
		}
	}
	if got.Extension != `1001\r\nSubject: pwned` || !strings.HasPrefix(got.Dialled, `5551234567\r\nBcc:`) {
		t.Errorf("escapes not visible: %q %.40q", got.Extension, got.Dialled)
	}
}

func TestSyslogAlerterHostile(t *testing.T) {
	line := syslogLine(hostile())
	if strings.ContainsAny(line, "\r\n\x00\x1b") || len(line) > 1024 || !strings.Contains(line, `extension="1001\r\nSubject: pwned"`) {
		t.Errorf("syslog line (%d bytes) %.300q", len(line), line)
	}
	sock := filepath.Join(t.TempDir(), "log.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := (&SyslogAlerter{Network: "unixgram", Addr: sock}).Alert(context.Background(), hostile()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(string(buf[:n]), "\n"); strings.ContainsAny(got, "\r\n\x00") || n > 1024+64 {
		t.Errorf("syslog packet (%d bytes) %.200q", n, got)
	}
}

// The ban reason (kept in the store, shown by `pbxguard bans`) carries the
// extension escaped: for an unauthenticated call it is the caller's user.
func TestBanReasonEscaped(t *testing.T) {
	var reason string
	r := &Responder{Banner: BanFunc(func(_ context.Context, _ netip.Addr, _ time.Duration, why string) error { reason = why; return nil })}
	r.Respond(context.Background(), Finding{Rule: RuleUnauthIntl, Severity: SeverityHigh, Time: time.Now(),
		Response: Response{Ban: true}, Extension: "evil\x1b]0;pwned\a\n" + strings.Repeat("x", 9<<10), Addrs: []netip.Addr{netip.MustParseAddr("203.0.113.7")}}, nil)
	if reason == "" || strings.ContainsAny(reason, "\x1b\a\n") || len(reason) > 128 || !strings.HasPrefix(reason, `fraud unauth_intl ext evil\x1b]0;pwned\x07\n`) {
		t.Fatalf("ban reason %q", reason)
	}
}
