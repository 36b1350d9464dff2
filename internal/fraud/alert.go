package fraud

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/syslog"
	"mime"
	"net"
	"net/http"
	"net/smtp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxAlertText caps each attacker-reachable value (a dialled number, a
// caller name, an account, a channel, a reason quoting them) in an alert.
const MaxAlertText = 256

// Escape makes text that came from a caller (a dialled number, a caller-ID
// name, a SIP user name: it can hold newlines, control bytes, quotes and
// 9 KB) safe to put in an alert: every control byte becomes a visible
// escape (\n, \r, \t, \xNN), as do invalid UTF-8 bytes, the Unicode line and
// paragraph separators (\u2028, \u2029, \u0085) and the bidirectional
// overrides that reorder what a reader sees (\u202e, …); a backslash becomes
// \\ so an escape cannot be forged. The result is at most max bytes (0:
// MaxAlertText; a max below 3 still gets the 3-byte "…"): longer text is
// cut, never inside an escape or a character, and ends with "…".
func Escape(s string, max int) string {
	if max <= 0 {
		max = MaxAlertText
	}
	const ellipsis = "…"
	var b strings.Builder
	cut := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size <= 1:
			piece = `\x` + hex2(s[i])
		case r == '\\':
			piece = `\\`
		case r == '\n':
			piece = `\n`
		case r == '\r':
			piece = `\r`
		case r == '\t':
			piece = `\t`
		case r < 0x20 || r == 0x7f:
			piece = `\x` + hex2(byte(r))
		case r >= 0x80 && r < 0xa0, r == 0x2028, r == 0x2029, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0xfeff:
			piece = `\u` + strconv.FormatInt(int64(r)+0x10000, 16)[1:]
		default:
			piece = s[i : i+size]
		}
		if b.Len() <= max-len(ellipsis) {
			cut = b.Len() // the last boundary where "…" still fits
		}
		if b.Len()+len(piece) > max {
			return b.String()[:cut] + ellipsis
		}
		b.WriteString(piece)
		i += size
	}
	return b.String()
}

func hex2(c byte) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[c>>4], digits[c&15]})
}

// alertCopy is inc with every caller-reachable text escaped and capped
// (Escape): what every alerter sends. The stored incident keeps the raw
// values.
func alertCopy(inc *Incident) *Incident {
	c := *inc
	c.Extension = Escape(inc.Extension, 0)
	c.Channel = Escape(inc.Channel, 0)
	c.Dialled = Escape(inc.Dialled, 0)
	c.E164 = Escape(inc.E164, 0)
	c.Country = Escape(inc.Country, 0)
	c.Reason = Escape(inc.Reason, 2*MaxAlertText)
	c.Rule = Rule(Escape(string(inc.Rule), 0))
	c.Evidence = nil
	for i, e := range inc.Evidence {
		if i == 20 {
			c.Evidence = append(c.Evidence, "…")
			break
		}
		c.Evidence = append(c.Evidence, Escape(e, 0))
	}
	c.Actions = make([]Action, len(inc.Actions))
	for i, a := range inc.Actions {
		a.Kind, a.Target, a.Error = Escape(a.Kind, 0), Escape(a.Target, 0), Escape(a.Error, 0)
		c.Actions[i] = a
	}
	return &c
}

// WebhookAlerter POSTs each incident as JSON.
type WebhookAlerter struct {
	URL    string
	Header map[string]string // e.g. Authorization
	Client *http.Client      // nil: 10 s timeout client
}

// Name identifies the alerter in recorded actions.
func (w *WebhookAlerter) Name() string { return "webhook" }

// Alert posts inc (its caller-reachable text escaped, see Escape; JSON
// escapes what is left).
func (w *WebhookAlerter) Alert(ctx context.Context, inc *Incident) error {
	body, err := json.Marshal(alertCopy(inc))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.URL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pbxguard")
	for k, v := range w.Header {
		req.Header.Set(k, v)
	}
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", w.URL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: answered %s (want 2xx)", w.URL, resp.Status)
	}
	return nil
}

// SMTPAlerter mails each incident (plain SMTP with optional PLAIN auth;
// STARTTLS when the server offers it).
type SMTPAlerter struct {
	Addr     string // host:port
	From     string
	To       []string
	Username string // "" for no auth
	Password string
	Timeout  time.Duration // 0: 15 s
}

// Name identifies the alerter in recorded actions.
func (s *SMTPAlerter) Name() string { return "smtp" }

// Subject returns the mail subject for inc: one line (no CR or LF: no
// header can be injected), the extension escaped (Escape) and capped to 64
// bytes, the whole at most MaxAlertText bytes.
func Subject(inc *Incident) string {
	who := inc.Extension
	if who == "" && len(inc.Addrs) > 0 {
		who = inc.Addrs[0].String()
	}
	return fmt.Sprintf("[pbxguard] toll fraud %s: %s %s", Escape(inc.Severity.String(), 32), Escape(who, 64), Escape(string(inc.Rule), 64))
}

// Alert sends inc.
func (s *SMTPAlerter) Alert(ctx context.Context, inc *Incident) error {
	if len(s.To) == 0 {
		return fmt.Errorf("smtp: no recipient (set alert.email.to)")
	}
	for _, a := range append([]string{s.From}, s.To...) {
		if strings.ContainsAny(a, "\r\n") {
			return fmt.Errorf("smtp: address %q contains a line break", a)
		}
	}
	to := s.Timeout
	if to <= 0 {
		to = 15 * time.Second
	}
	d := net.Dialer{Timeout: to}
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(to))
	host, _, _ := net.SplitHostPort(s.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: %w", s.Addr, err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("smtp %s: STARTTLS: %w", s.Addr, err)
		}
	}
	if s.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.Username, s.Password, host)); err != nil {
			return fmt.Errorf("smtp %s: auth: %w", s.Addr, err)
		}
	}
	if err := c.Mail(s.From); err != nil {
		return fmt.Errorf("smtp %s: MAIL FROM: %w", s.Addr, err)
	}
	for _, r := range s.To {
		if err := c.Rcpt(r); err != nil {
			return fmt.Errorf("smtp %s: RCPT TO %s: %w", s.Addr, r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", s.Addr, err)
	}
	safe := alertCopy(inc)
	body, _ := json.MarshalIndent(safe, "", "  ")
	// The subject is one escaped line; non-ASCII in it is RFC 2047-encoded.
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n\r\n%s\r\n",
		s.From, strings.Join(s.To, ", "), mime.QEncoding.Encode("utf-8", Subject(inc)), time.Now().UTC().Format(time.RFC1123Z), safe.Reason, body)
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: message refused: %w", s.Addr, err)
	}
	return c.Quit()
}

// SyslogAlerter writes each incident to syslog (LOG_AUTH|LOG_WARNING).
type SyslogAlerter struct {
	Network, Addr string // "" "" for the local syslog socket; "unixgram" "/dev/log"; "udp" "host:514"
	Tag           string // "" = "pbxguard"
	w             *syslog.Writer
}

// Name identifies the alerter in recorded actions.
func (s *SyslogAlerter) Name() string { return "syslog" }

// Alert logs inc in one line.
func (s *SyslogAlerter) Alert(_ context.Context, inc *Incident) error {
	if s.w == nil {
		tag := s.Tag
		if tag == "" {
			tag = "pbxguard"
		}
		w, err := syslog.Dial(s.Network, s.Addr, syslog.LOG_AUTH|syslog.LOG_WARNING, tag)
		if err != nil {
			return fmt.Errorf("syslog: %w", err)
		}
		s.w = w
	}
	msg := syslogLine(inc)
	if err := s.w.Warning(msg); err != nil {
		s.w.Close()
		s.w = nil
		return fmt.Errorf("syslog: %w", err)
	}
	return nil
}

// syslogLine is inc as one key=value line: no newline or control byte
// (Escape), a value quoted unless it is a plain word, each capped so that
// the line stays under 1024 bytes (RFC 3164's limit for the whole packet).
func syslogLine(inc *Incident) string {
	addrs := make([]string, len(inc.Addrs))
	for i, a := range inc.Addrs {
		addrs[i] = a.String()
	}
	v := func(s string, max int) string {
		e := Escape(s, max)
		for i := 0; i < len(e); i++ {
			c := e[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._+@:,-", c) >= 0) {
				return `"` + strings.ReplaceAll(e, `"`, `\"`) + `"`
			}
		}
		return e
	}
	return fmt.Sprintf("toll fraud incident=%s rule=%s severity=%s extension=%s addrs=%s reason=%s",
		v(inc.ID, 64), v(string(inc.Rule), 64), v(inc.Severity.String(), 32), v(inc.Extension, 64), v(strings.Join(addrs, ","), 160), v(inc.Reason, 2*MaxAlertText))
}
