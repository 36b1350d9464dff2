package ami

import (
	"bufio"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAMI is a loopback TCP (or TLS) server; each accepted connection is
// handed to handle in its own goroutine with its 1-based number.
type fakeAMI struct {
	t      testing.TB
	ln     net.Listener
	count  atomic.Int32
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func newFakeAMI(t testing.TB, tlsCfg *tls.Config, handle func(s *session)) *fakeAMI {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	f := &fakeAMI{t: t, ln: ln}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			if f.closed {
				f.mu.Unlock()
				c.Close()
				return
			}
			f.conns = append(f.conns, c)
			f.mu.Unlock()
			n := int(f.count.Add(1))
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				handle(&session{t: t, c: c, br: bufio.NewReader(c), n: n})
			}()
		}
	}()
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAMI) Addr() string { return f.ln.Addr().String() }

// Close stops the listener, closes every connection and waits for the
// handlers.
func (f *fakeAMI) Close() {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.mu.Unlock()
	f.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	f.wg.Wait()
}

// session is the server side of one connection. Its parser is separate
// from Reader on purpose: the client is checked against an independent
// reading of what it sent.
type session struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
	n  int
}

// action is one received action: ordered "Key: Value" lines.
type action struct {
	lines []string
}

func (a action) get(key string) string {
	for _, l := range a.lines {
		k, v, _ := strings.Cut(l, ": ")
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return ""
}

// without returns the lines except those of the named keys.
func (a action) without(keys ...string) []string {
	var out []string
next:
	for _, l := range a.lines {
		k, _, _ := strings.Cut(l, ": ")
		for _, key := range keys {
			if strings.EqualFold(k, key) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// read reads one action (lines up to a blank line, CRLF required).
func (s *session) read() (action, error) {
	var a action
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return a, err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return a, fmt.Errorf("line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			if len(a.lines) == 0 {
				continue
			}
			return a, nil
		}
		a.lines = append(a.lines, line)
	}
}

func (s *session) send(str string) bool {
	_, err := s.c.Write([]byte(str))
	return err == nil
}

// reply answers a with headers (each "Key: Value"), adding its ActionID.
func (s *session) reply(a action, response string, headers ...string) bool {
	var b strings.Builder
	b.WriteString("Response: " + response + "\r\nActionID: " + a.get("ActionID") + "\r\n")
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return s.send(b.String())
}

// loginConf is what the fake server accepts.
type loginConf struct {
	user, secret string
	md5          bool
	events       string // expected Events value, "" = any
}

// login greets and authenticates; it reports success (after answering).
func (s *session) login(lc loginConf) bool {
	if !s.send("Asterisk Call Manager/9.0.0\r\n") {
		return false
	}
	a, err := s.read()
	if err != nil {
		return false
	}
	ok := false
	if strings.EqualFold(a.get("Action"), "Challenge") {
		if a.get("AuthType") != "MD5" {
			s.reply(a, "Error", "Message: Must specify AuthType")
			return false
		}
		const challenge = "840415273"
		s.reply(a, "Success", "Challenge: "+challenge)
		if a, err = s.read(); err != nil {
			return false
		}
		sum := md5.Sum([]byte(challenge + lc.secret))
		ok = lc.md5 && a.get("Action") == "Login" && a.get("AuthType") == "MD5" && a.get("Secret") == "" &&
			a.get("Key") == hex.EncodeToString(sum[:]) && a.get("Username") == lc.user
	} else {
		ok = !lc.md5 && a.get("Action") == "Login" && a.get("Username") == lc.user && a.get("Secret") == lc.secret
	}
	if lc.events != "" && a.get("Events") != lc.events {
		s.t.Errorf("Login Events = %q, want %q", a.get("Events"), lc.events)
		ok = false
	}
	if !ok {
		s.reply(a, "Error", "Message: Authentication failed")
		return false
	}
	return s.reply(a, "Success", "Message: Authentication accepted")
}

// serve answers Ping and Logoff and passes other actions to other; it
// returns when the connection ends or other returns false.
func (s *session) serve(other func(a action) bool) {
	for {
		a, err := s.read()
		if err != nil {
			return
		}
		switch a.get("Action") {
		case "Ping":
			s.reply(a, "Success", "Ping: Pong", fmt.Sprintf("Timestamp: %d.000000", time.Now().Unix()))
		case "Logoff":
			s.reply(a, "Goodbye", "Message: Thanks for all the fish.")
			return
		default:
			if other == nil {
				s.reply(a, "Error", "Message: Invalid/unknown command")
			} else if !other(a) {
				return
			}
		}
	}
}

func dialPlain(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 5*time.Second)
}
