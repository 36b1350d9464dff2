package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
)

// The control protocol: one JSON request per line, one JSON response per
// line, on a unix socket (mode 0600, so only root talks to it).
//
//	{"cmd":"status"}
//	{"cmd":"bans"}
//	{"cmd":"ban","prefix":"203.0.113.66/32","for":"1h","jail":"manual","reason":"..."}
//	{"cmd":"unban","prefix":"203.0.113.66/32"}
//
// Responses are {"ok":true,...} or {"ok":false,"error":"..."}.

// Request is one control request.
type Request struct {
	Cmd    string `json:"cmd"`
	Prefix string `json:"prefix,omitempty"`
	For    string `json:"for,omitempty"` // Go duration; "" = the jail's bantime
	Jail   string `json:"jail,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Response is one control response.
type Response struct {
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Refused bool      `json:"refused,omitempty"` // the request was refused on purpose (allowlist)
	Status  *Status   `json:"status,omitempty"`
	Bans    []BanInfo `json:"bans,omitempty"`
}

type controlServer struct {
	ln  net.Listener
	d   *Daemon
	log *slog.Logger
	wg  sync.WaitGroup
}

func listenControl(path string, d *Daemon, log *slog.Logger) (*controlServer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// A socket left by a killed daemon: remove it if nobody answers.
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another pbxguard is running (stop it first: systemctl stop pbxguard)", path)
		}
		os.Remove(path)
	}
	old := umask(0o077)
	ln, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	s := &controlServer{ln: ln, d: d, log: log}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *controlServer) Close() {
	s.ln.Close()
	s.wg.Wait()
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *controlServer) handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	enc := json.NewEncoder(c)
	for {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		line, err := r.ReadBytes('\n')
		if len(line) == 0 || (err != nil && len(strings.TrimSpace(string(line))) == 0) {
			return
		}
		var req Request
		var resp Response
		if err := json.Unmarshal(line, &req); err != nil {
			resp = Response{Error: "bad request: " + err.Error()}
		} else {
			resp = s.do(req)
		}
		c.SetWriteDeadline(time.Now().Add(time.Minute))
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

func (s *controlServer) do(req Request) Response {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch req.Cmd {
	case "status":
		st := s.d.Status()
		return Response{OK: true, Status: &st}
	case "bans":
		bans, err := s.d.Bans(ctx)
		if err != nil {
			return Response{Error: err.Error()}
		}
		if bans == nil {
			bans = []BanInfo{}
		}
		return Response{OK: true, Bans: bans}
	case "ban", "unban":
		pfx, err := parseTarget(req.Prefix)
		if err != nil {
			return Response{Error: err.Error()}
		}
		if req.Cmd == "unban" {
			bans, err := s.d.Unban(ctx, pfx)
			if err != nil {
				return Response{Error: err.Error()}
			}
			return Response{OK: true, Bans: bans}
		}
		var dur time.Duration
		if req.For != "" {
			if dur, err = time.ParseDuration(req.For); err != nil || dur <= 0 || dur > config.MaxDuration {
				return Response{Error: fmt.Sprintf("%q is not a duration from 1s to %s (try 1h, 30m)", req.For, config.FormatDuration(config.MaxDuration))}
			}
		}
		b, err := s.d.Ban(ctx, pfx, dur, req.Jail, req.Reason)
		if err != nil {
			return Response{Error: err.Error(), Refused: errors.Is(err, ErrAllowlisted)}
		}
		return Response{OK: true, Bans: []BanInfo{b}}
	}
	return Response{Error: fmt.Sprintf("unknown command %q (status, bans, ban, unban)", req.Cmd)}
}

func parseTarget(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix (write 203.0.113.7, or 2001:db8::/64)", s)
		}
		return normPrefix(p), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or prefix (write 203.0.113.7, or 2001:db8::/64)", s)
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ErrUnreachable is returned (wrapped) by Client when no daemon answers.
var ErrUnreachable = errors.New("is pbxguard running? (systemctl status pbxguard)")

// ErrRefused is returned (wrapped) by Client.Ban when the daemon refused on
// purpose (allowlisted address).
var ErrRefused = errors.New("refused")

// Client talks to a running daemon over its control socket. Safe for
// concurrent use; each call is one short connection.
type Client struct {
	Socket  string
	Timeout time.Duration // per call; default 30s
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client { return &Client{Socket: path} }

func (c *Client) call(ctx context.Context, req Request) (Response, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %v: %w", c.Socket, errors.Unwrap(err), ErrUnreachable)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w", c.Socket, err)
	}
	var resp Response
	dec := json.NewDecoder(bufio.NewReader(conn))
	if err := dec.Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: reading the answer: %w", c.Socket, err)
	}
	if !resp.OK {
		if resp.Refused {
			return resp, fmt.Errorf("%s: %w", resp.Error, ErrRefused)
		}
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	r, err := c.call(ctx, Request{Cmd: "status"})
	if err != nil || r.Status == nil {
		return Status{}, err
	}
	return *r.Status, nil
}

// Bans lists the active bans.
func (c *Client) Bans(ctx context.Context) ([]BanInfo, error) {
	r, err := c.call(ctx, Request{Cmd: "bans"})
	return r.Bans, err
}

// Ban bans a prefix (a single address is a /32 or /128) for dur (0 = the
// jail's bantime) under jail (default "manual") with reason.
func (c *Client) Ban(ctx context.Context, pfx netip.Prefix, dur time.Duration, jail, reason string) (BanInfo, error) {
	req := Request{Cmd: "ban", Prefix: pfx.String(), Jail: jail, Reason: reason}
	if dur > 0 {
		req.For = dur.String()
	}
	r, err := c.call(ctx, req)
	if err != nil {
		return BanInfo{}, err
	}
	if len(r.Bans) != 1 {
		return BanInfo{}, errors.New("control: malformed answer to ban")
	}
	return r.Bans[0], nil
}

// Unban removes the bans covering pfx and returns them.
func (c *Client) Unban(ctx context.Context, pfx netip.Prefix) ([]BanInfo, error) {
	r, err := c.call(ctx, Request{Cmd: "unban", Prefix: pfx.String()})
	return r.Bans, err
}
