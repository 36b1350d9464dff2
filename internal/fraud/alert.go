package fraud

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/syslog"
	"net"
	"net/http"
	"net/smtp"
	"strings"
	"time"
)

// WebhookAlerter POSTs each incident as JSON.
type WebhookAlerter struct {
	URL    string
	Header map[string]string // e.g. Authorization
	Client *http.Client      // nil: 10 s timeout client
}

// Name identifies the alerter in recorded actions.
func (w *WebhookAlerter) Name() string { return "webhook" }

// Alert posts inc.
func (w *WebhookAlerter) Alert(ctx context.Context, inc *Incident) error {
	body, err := json.Marshal(inc)
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

// Subject returns the mail subject for inc.
func Subject(inc *Incident) string {
	who := inc.Extension
	if who == "" && len(inc.Addrs) > 0 {
		who = inc.Addrs[0].String()
	}
	return fmt.Sprintf("[pbxguard] toll fraud %s: %s %s", inc.Severity, who, inc.Rule)
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
	body, _ := json.MarshalIndent(inc, "", "  ")
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n\r\n%s\r\n",
		s.From, strings.Join(s.To, ", "), Subject(inc), time.Now().UTC().Format(time.RFC1123Z), inc.Reason, body)
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
	addrs := make([]string, len(inc.Addrs))
	for i, a := range inc.Addrs {
		addrs[i] = a.String()
	}
	msg := fmt.Sprintf("toll fraud incident=%s rule=%s severity=%s extension=%s addrs=%s reason=%q",
		inc.ID, inc.Rule, inc.Severity, inc.Extension, strings.Join(addrs, ","), inc.Reason)
	if err := s.w.Warning(msg); err != nil {
		s.w.Close()
		s.w = nil
		return fmt.Errorf("syslog: %w", err)
	}
	return nil
}
