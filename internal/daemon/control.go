package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/store"
)

// The control protocol: one JSON request per line, one JSON response per
// line, on a unix socket (mode 0600, so only root talks to it).
//
//	{"cmd":"status"}
//	{"cmd":"bans"}
//	{"cmd":"ban","prefix":"203.0.113.66/32","for":"1h","jail":"manual","reason":"..."}
//	{"cmd":"ban","prefix":"203.0.113.66/32","for":"permanent"}
//	{"cmd":"unban","all":true,"jail":"sip"}
//	{"cmd":"unban","prefix":"203.0.113.66/32"}
//
// Responses are {"ok":true,...} or {"ok":false,"error":"..."}.

// Request is one control request.
type Request struct {
	Cmd    string `json:"cmd"`
	Prefix string `json:"prefix,omitempty"`
	For    string `json:"for,omitempty"` // Go duration or "permanent"; "" = the jail's bantime
	Jail   string `json:"jail,omitempty"`
	Reason string `json:"reason,omitempty"`
	All    bool   `json:"all,omitempty"` // unban: every active ban (of Jail when set)
}

// Response is one control response.
type Response struct {
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Refused bool      `json:"refused,omitempty"` // the request was refused on purpose (allowlist)
	Usage   bool      `json:"usage,omitempty"`   // the request was wrong (unknown jail)
	Status  *Status   `json:"status,omitempty"`
	Bans    []BanInfo `json:"bans,omitempty"`
}

type controlServer struct {
	ln     net.Listener
	d      *Daemon
	log    *slog.Logger
	wg     sync.WaitGroup
	ctx    context.Context // cancelled by Close: requests in progress give up
	cancel context.CancelFunc

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// MaxRequest is the longest control request (one JSON line); a longer one
// is answered with an error and the connection closed.
const MaxRequest = 64 << 10

// Idle clients are dropped after controlIdle; Close waits at most
// controlCloseWait for requests in progress.
const (
	controlIdle      = time.Minute
	controlCloseWait = 500 * time.Millisecond
)

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
	s := &controlServer{ln: ln, d: d, log: log, conns: map[net.Conn]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Close stops accepting, closes every connection (an idle client never
// holds a reload or shutdown), cancels requests in progress and waits for
// them at most controlCloseWait. Closing again does nothing.
func (s *controlServer) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	if stuck := waitBounded(s.wg.Wait, controlCloseWait, nil); len(stuck) > 0 {
		s.log.Warn("control socket: a request still running was left behind at shutdown")
	}
}

func (s *controlServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *controlServer) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if !s.track(c) {
			c.Close()
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.handle(c)
		}()
	}
}

func (s *controlServer) handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	enc := json.NewEncoder(c)
	for {
		c.SetReadDeadline(time.Now().Add(controlIdle))
		line, tooLong, err := readLine(r, MaxRequest)
		if tooLong {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			enc.Encode(Response{Error: fmt.Sprintf("request longer than %d bytes: one JSON object per line, e.g. {\"cmd\":\"status\"}", MaxRequest)})
			return
		}
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

// readLine reads one line of at most max bytes; tooLong when it is longer
// (what was read is dropped: memory stays bounded).
func readLine(r *bufio.Reader, max int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			return nil, true, nil
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, false, err
	}
}

func (s *controlServer) do(req Request) Response {
	base := s.ctx
	if base == nil {
		base = context.Background()
	}
	ctx, cancel := context.WithTimeout(base, 30*time.Second)
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
		if req.Cmd == "unban" && req.All {
			bans, err := s.d.UnbanAll(ctx, req.Jail)
			if err != nil {
				return Response{Error: err.Error(), Usage: errors.Is(err, ErrUnknownJail)}
			}
			return Response{OK: true, Bans: bans}
		}
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
		if req.For == "permanent" {
			dur = store.Permanent
		} else if req.For != "" {
			if dur, err = time.ParseDuration(req.For); err != nil || dur <= 0 || dur > config.MaxDuration {
				return Response{Error: fmt.Sprintf("%q is not a duration from 1s to %s (try 1h, 30m, or permanent)", req.For, config.FormatDuration(config.MaxDuration))}
			}
		}
		b, err := s.d.Ban(ctx, pfx, dur, req.Jail, req.Reason)
		if err != nil {
			return Response{Error: err.Error(), Refused: errors.Is(err, ErrAllowlisted), Usage: errors.Is(err, ErrUnknownJail)}
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

// ErrUsage is returned (wrapped) by Client when the daemon found the
// request wrong (an unknown jail): the caller's usage error.
var ErrUsage = errors.New("usage")

// ErrRefused is returned (wrapped) by Client.Ban when the daemon refused on
// purpose (allowlisted address).
var ErrRefused = errors.New("refused")

// Client talks to a running daemon over its control socket. Safe for
// concurrent use; each call is one short connection.
type Client struct {
	Socket  string
	Timeout time.Duration // per call; default 30s
}

// dialError says why the control socket could not be reached, and what to
// do when the answer is a permission (the socket is root's, mode 0600).
func dialError(socket string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("control socket %s: permission denied: the socket is root's, run as root (sudo): %w", socket, ErrUnreachable)
	}
	return fmt.Errorf("control socket %s: %v: %w", socket, errors.Unwrap(err), ErrUnreachable)
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
		return Response{}, dialError(c.Socket, err)
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
		if resp.Usage {
			return resp, usageError{resp.Error}
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
	if dur >= store.Permanent {
		req.For = "permanent"
	} else if dur > 0 {
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

// UnbanAll removes every active ban (of jail, when not "") and returns them.
func (c *Client) UnbanAll(ctx context.Context, jail string) ([]BanInfo, error) {
	r, err := c.call(ctx, Request{Cmd: "unban", All: true, Jail: jail})
	return r.Bans, err
}

// usageError is the daemon's message for a wrong request, as is.
type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Unban removes the bans covering pfx and returns them.
func (c *Client) Unban(ctx context.Context, pfx netip.Prefix) ([]BanInfo, error) {
	r, err := c.call(ctx, Request{Cmd: "unban", Prefix: pfx.String()})
	return r.Bans, err
}
