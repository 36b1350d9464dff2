// Package agi is a FastAGI server: Asterisk's AGI() application connects
// (agi://host:port/script,arg1,arg2…), sends its environment block, and the
// server answers with AGI commands, one line each, reading Asterisk's reply
// to each one.
//
// Only what a decision before Dial needs is spoken: the environment block
// (read whole, bounded) and SET VARIABLE (sent with the value quoted the way
// Asterisk's parse_args reads it, so no byte of a value can end the command
// or add one). The server never sends HANGUP: hanging up is the dialplan's
// choice, made on the variables the handler set. The decisions themselves
// are internal/fraud's.
//
// The wire, from res/res_agi.c (launch_netscript, setup_env, agi_handle_command):
//
//	agi_network: yes
//	agi_network_script: outbound
//	agi_request: agi://127.0.0.1:4573/outbound
//	agi_channel: PJSIP/1001-0000002a
//	…
//	agi_arg_1: 011442079460349
//	(blank line)
//
// then for each command the server writes ("SET VARIABLE X \"v\"\n"),
// Asterisk answers "200 result=1", "510 Invalid or unknown command",
// "511 Command Not Permitted on a dead channel or intercept routine", or the
// multi-line "520-Invalid command syntax…" … "520 End of proper usage.";
// when the caller hangs up during the AGI, Asterisk writes "HANGUP" once.
package agi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
)

// Limits of one session. Asterisk writes about 25 environment lines plus
// one per argument (at most 127); each command's answer is one line (the
// 520 usage text is a few dozen).
const (
	MaxLine      = 4096      // bytes of one line (longer lines are cut and the request marked malformed)
	MaxEnvLines  = 200       // lines of the environment block
	MaxReplyLine = 64        // lines read while waiting for one command's answer
	MaxSession   = 256 << 10 // bytes read on one connection
	MaxValue     = 512       // bytes of a value sent with SET VARIABLE (longer values are cut)
)

// Request is one AGI call: the environment block Asterisk sent. Every value
// is attacker-reachable text (the dialled number, the caller ID): data to
// look at, never to be trusted as structure.
type Request struct {
	Script       string     // agi_network_script: "outbound" in agi://host/outbound
	Args         []string   // agi_arg_1, agi_arg_2, … in order
	Channel      string     // agi_channel: "PJSIP/1001-0000002a"
	CallerID     string     // agi_callerid
	CallerIDName string     // agi_calleridname
	UniqueID     string     // agi_uniqueid
	Extension    string     // agi_extension
	Context      string     // agi_context
	Request      string     // agi_request: "agi://127.0.0.1:4573/outbound"
	Peer         netip.Addr // the address Asterisk connected from
	// Err says why the environment block cannot be trusted whole (a line
	// cut, a key twice, bytes after the blank line, too many lines); the
	// fields hold what was read. nil: well-formed.
	Err error
}

// Arg returns argument i (1-based, like agi_arg_1), "" when absent.
func (r *Request) Arg(i int) string {
	if i < 1 || i > len(r.Args) {
		return ""
	}
	return r.Args[i-1]
}

// Protocol errors.
var (
	ErrLineTooLong   = errors.New("agi: line longer than the limit")
	ErrTooManyLines  = errors.New("agi: environment block longer than the limit")
	ErrSessionTooBig = errors.New("agi: session read more than the limit")
	ErrHungUp        = errors.New("agi: the channel hung up (511: command not permitted on a dead channel)")
	ErrInvalid       = errors.New("agi: Asterisk refused the command (510/520)")
	ErrBadName       = errors.New("agi: variable names are A-Z, 0-9 and _")
)

// ReplyError is an answer that is no AGI reply (e.g. a line of an
// environment block an attacker split with a newline).
type ReplyError struct{ Line string }

func (e *ReplyError) Error() string { return "agi: unexpected reply " + strconv.Quote(e.Line) }

// Session is one connection, after its environment block.
type Session struct {
	r      *bufio.Reader
	w      io.Writer
	read   int
	hungUp bool
	buf    []byte
}

// HungUp reports whether Asterisk said the channel hung up.
func (s *Session) HungUp() bool { return s.hungUp }

// readLine returns the next line without its "\n" (and "\r"); a line longer
// than MaxLine is consumed whole and returned cut, with ErrLineTooLong.
func (s *Session) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	s.read += len(line)
	if s.read > MaxSession {
		return nil, ErrSessionTooBig
	}
	if err == nil {
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return line, nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	// Too long: keep the start, skip to the end of the line (bounded by
	// MaxSession).
	s.buf = append(s.buf[:0], line...)
	for {
		more, err := s.r.ReadSlice('\n')
		s.read += len(more)
		if s.read > MaxSession {
			return nil, ErrSessionTooBig
		}
		if err == nil {
			return s.buf, ErrLineTooLong
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// readEnv reads the environment block into req.
func (s *Session) readEnv(req *Request) error {
	seen := make(map[string]bool, 32)
	var malformed []string
	mark := func(why string) {
		if len(malformed) < 4 {
			malformed = append(malformed, why)
		}
	}
	for n := 0; ; n++ {
		if n >= MaxEnvLines {
			return ErrTooManyLines
		}
		line, err := s.readLine()
		if errors.Is(err, ErrLineTooLong) {
			mark(fmt.Sprintf("line %d longer than %d bytes", n+1, MaxLine))
		} else if err != nil {
			return err
		}
		if len(line) == 0 && err == nil {
			break
		}
		key, val, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			key, val, ok = bytes.Cut(line, []byte(":"))
		}
		if !ok || !bytes.HasPrefix(key, []byte("agi_")) {
			mark(fmt.Sprintf("line %d is not \"agi_name: value\"", n+1))
			continue
		}
		k := string(key)
		if seen[k] {
			mark(fmt.Sprintf("%s appears twice", k))
			continue // the first one counts: Asterisk writes agi_channel before any argument
		}
		seen[k] = true
		v := string(val)
		switch k {
		case "agi_network_script":
			req.Script = v
		case "agi_channel":
			req.Channel = v
		case "agi_callerid":
			req.CallerID = v
		case "agi_calleridname":
			req.CallerIDName = v
		case "agi_uniqueid":
			req.UniqueID = v
		case "agi_extension":
			req.Extension = v
		case "agi_context":
			req.Context = v
		case "agi_request":
			req.Request = v
		default:
			if rest, ok := strings.CutPrefix(k, "agi_arg_"); ok {
				i, err := strconv.Atoi(rest)
				if err != nil || i != len(req.Args)+1 {
					mark(fmt.Sprintf("%s out of order", k))
					continue
				}
				req.Args = append(req.Args, v)
			}
		}
	}
	if req.Script == "" && req.Request != "" {
		// agi://host:port/script: the script is the path (as res_agi.c cuts it).
		if rest, ok := strings.CutPrefix(req.Request, "agi://"); ok {
			if _, script, ok := strings.Cut(rest, "/"); ok {
				req.Script = script
			}
		}
	}
	// Asterisk sends nothing after the blank line until it gets a command:
	// bytes already there were part of a value (a newline inside the
	// dialled number or the caller name).
	if n := s.r.Buffered(); n > 0 {
		mark("bytes after the end of the environment block")
		_, _ = s.r.Discard(n) // the rest of that value: junk, not replies
	}
	if len(malformed) > 0 {
		req.Err = errors.New("agi: malformed environment block: " + strings.Join(malformed, "; "))
	}
	return nil
}

// validName: SET VARIABLE names the server sends.
func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// Quote returns v as one argument of an AGI command line: in double quotes,
// with '"' and '\' escaped by a backslash (res_agi.c parse_args), control
// bytes (newline, CR, NUL, …) and invalid UTF-8 replaced by '?', and cut
// to MaxValue bytes. Nothing in v can end the line or start another
// argument.
func Quote(v string) string {
	var b strings.Builder
	b.Grow(len(v) + 2)
	b.WriteByte('"')
	n := 0
	for i, r := range v {
		if n >= MaxValue {
			break
		}
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(v[i:], "\uFFFD"):
			b.WriteByte('?')
			n++
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == '\u2028' || r == '\u2029':
			b.WriteByte('?')
			n++
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
			n += 2
		default:
			b.WriteRune(r)
			n += utf8.RuneLen(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// SetVariable sends SET VARIABLE name "value" and reads Asterisk's answer.
func (s *Session) SetVariable(name, value string) error {
	if !validName(name) {
		return ErrBadName
	}
	if _, err := io.WriteString(s.w, "SET VARIABLE "+name+" "+Quote(value)+"\n"); err != nil {
		return err
	}
	return s.reply()
}

// reply reads one command's answer.
func (s *Session) reply() error {
	for n := 0; n < MaxReplyLine; n++ {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, ErrLineTooLong) {
				return &ReplyError{Line: string(line[:min(len(line), 80)])}
			}
			return err
		}
		l := string(line)
		switch {
		case l == "HANGUP":
			s.hungUp = true
			continue
		case strings.HasPrefix(l, "200 result="):
			return nil
		case strings.HasPrefix(l, "511 "):
			s.hungUp = true
			return ErrHungUp
		case strings.HasPrefix(l, "510 "), strings.HasPrefix(l, "520 "):
			return ErrInvalid
		case strings.HasPrefix(l, "520-"):
			// usage text follows until "520 End of proper usage."
			for ; n < MaxReplyLine; n++ {
				more, err := s.readLine()
				if err != nil && !errors.Is(err, ErrLineTooLong) {
					return err
				}
				if bytes.HasPrefix(more, []byte("520 ")) {
					return ErrInvalid
				}
			}
			return ErrInvalid
		default:
			return &ReplyError{Line: l[:min(len(l), 80)]}
		}
	}
	return &ReplyError{Line: "(no answer within the line limit)"}
}

// Handler answers one request through its session. It must return soon:
// Asterisk's channel waits.
type Handler func(ctx context.Context, req *Request, s *Session)

// Server serves FastAGI connections.
type Server struct {
	Handler Handler
	// Timeout bounds one connection, from accept to close (default 5 s).
	Timeout time.Duration
	// MaxConns bounds the connections served at once (default 512); more
	// wait in the kernel's backlog.
	MaxConns int
	// Allow, when set, says which peers may ask (Asterisk's address): a
	// connection from any other is closed unanswered. Nil: every peer.
	Allow func(netip.Addr) bool
	// Refused, when set, sees each refused peer.
	Refused func(netip.Addr)
	Log     *slog.Logger
}

func (srv *Server) timeout() time.Duration {
	if srv.Timeout > 0 {
		return srv.Timeout
	}
	return 5 * time.Second
}

// Serve accepts connections on ln until ctx ends (then ln is closed and
// the connections in flight are waited for).
func (srv *Server) Serve(ctx context.Context, ln net.Listener) error {
	maxConns := srv.MaxConns
	if maxConns <= 0 {
		maxConns = 512
	}
	sem := make(chan struct{}, maxConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	pause := 5 * time.Millisecond
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := ln.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				time.Sleep(pause)
				pause = min(2*pause, time.Second)
				continue
			}
			return fmt.Errorf("agi: accept: %w", err)
		}
		pause = 5 * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			srv.serveConn(ctx, c)
		}()
	}
}

func (srv *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(srv.timeout()))
	var peer netip.Addr
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		peer = ap.Addr().Unmap()
	}
	if srv.Allow != nil && !srv.Allow(peer) {
		if srv.Refused != nil {
			srv.Refused(peer)
		}
		return
	}
	if err := srv.ServeConn(ctx, c, peer); err != nil && srv.Log != nil {
		srv.Log.Warn("agi: session ended badly", "peer", peer, "err", err)
	}
}

// ServeConn serves one session on rw (a connection whose deadline the
// caller set): reads the environment block, calls the handler. An error
// means the environment block could not be read at all (the handler was
// not called).
func (srv *Server) ServeConn(ctx context.Context, rw io.ReadWriter, peer netip.Addr) error {
	s := &Session{r: bufio.NewReaderSize(rw, MaxLine), w: rw}
	req := &Request{Peer: peer}
	if err := s.readEnv(req); err != nil {
		return err
	}
	if srv.Handler != nil {
		srv.Handler(ctx, req, s)
	}
	return nil
}
