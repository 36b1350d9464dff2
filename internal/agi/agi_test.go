package agi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeAsterisk plays Asterisk's side of one session without goroutines:
// the environment block is readable at once; each reply becomes readable
// only after the server wrote a whole command line (as on the wire:
// Asterisk answers a command, never ahead of it).
type fakeAsterisk struct {
	pending  []byte
	replies  []string
	written  bytes.Buffer
	commands []string
}

func (f *fakeAsterisk) Read(p []byte) (int, error) {
	if len(f.pending) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

func (f *fakeAsterisk) Write(p []byte) (int, error) {
	f.written.Write(p)
	for {
		line, err := f.written.ReadString('\n')
		if err != nil {
			// put the partial line back
			rest := line
			f.written.Reset()
			f.written.WriteString(rest)
			break
		}
		f.commands = append(f.commands, strings.TrimSuffix(line, "\n"))
		if len(f.replies) > 0 {
			f.pending = append(f.pending, f.replies[0]...)
			f.replies = f.replies[1:]
		}
	}
	return len(p), nil
}

// parseArgs splits an AGI command line exactly as res_agi.c's parse_args
// does (quotes toggle, backslash escapes the next byte, blanks split).
func parseArgs(s string) []string {
	var out []string
	var cur []byte
	quoted, escaped, white := false, false, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' && !escaped:
			quoted = !quoted
			if quoted && white {
				out = append(out, "")
				white = false
			}
		case (c == ' ' || c == '\t') && !quoted && !escaped:
			if !white && len(out) > 0 {
				out[len(out)-1] = string(cur)
			}
			cur = cur[:0]
			white = true
		case c == '\\' && !escaped:
			escaped = true
			continue
		default:
			if white {
				out = append(out, "")
				cur = cur[:0]
				white = false
			}
			cur = append(cur, c)
		}
		escaped = false
		if len(out) > 0 && !white {
			out[len(out)-1] = string(cur)
		}
	}
	return out
}

const env1001 = "agi_network: yes\nagi_network_script: outbound\nagi_request: agi://127.0.0.1:4573/outbound\n" +
	"agi_channel: PJSIP/1001-0000002a\nagi_language: en\nagi_type: PJSIP\nagi_uniqueid: 1795579417.64\n" +
	"agi_version: 22.10.1\nagi_callerid: 1001\nagi_calleridname: Alice Office\nagi_callingpres: 0\n" +
	"agi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0\nagi_dnid: 0033170189999\nagi_rdnis: unknown\n" +
	"agi_context: outbound\nagi_extension: 0033170189999\nagi_priority: 1\nagi_enhanced: 0.0\n" +
	"agi_accountcode: \nagi_threadid: 140173930981056\nagi_arg_1: 0033170189999\n\n"

func serve(t testing.TB, env string, replies []string, h Handler) (*fakeAsterisk, error) {
	t.Helper()
	f := &fakeAsterisk{pending: []byte(env), replies: replies}
	srv := &Server{Handler: h}
	err := srv.ServeConn(context.Background(), f, netip.MustParseAddr("127.0.0.1"))
	return f, err
}

func TestEnvironmentBlock(t *testing.T) {
	var got *Request
	_, err := serve(t, env1001, nil, func(_ context.Context, r *Request, _ *Session) { got = r })
	if err != nil {
		t.Fatal(err)
	}
	if got.Err != nil {
		t.Fatalf("well-formed block marked malformed: %v", got.Err)
	}
	want := Request{Script: "outbound", Args: []string{"0033170189999"}, Channel: "PJSIP/1001-0000002a", CallerID: "1001",
		CallerIDName: "Alice Office", UniqueID: "1795579417.64", Extension: "0033170189999", Context: "outbound",
		Request: "agi://127.0.0.1:4573/outbound", Peer: netip.MustParseAddr("127.0.0.1")}
	if got.Script != want.Script || strings.Join(got.Args, ",") != "0033170189999" || got.Channel != want.Channel ||
		got.CallerID != want.CallerID || got.CallerIDName != want.CallerIDName || got.UniqueID != want.UniqueID ||
		got.Extension != want.Extension || got.Context != want.Context || got.Request != want.Request || got.Peer != want.Peer {
		t.Errorf("request = %+v\nwant      %+v", *got, want)
	}
	if got.Arg(1) != "0033170189999" || got.Arg(2) != "" || got.Arg(0) != "" {
		t.Errorf("Arg: %q %q %q", got.Arg(1), got.Arg(2), got.Arg(0))
	}
}

func TestEnvironmentBlockMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, env string
		errPart   string // "" = well-formed; "!" = the session fails (no handler call)
		channel   string
		args      string
	}{
		{"script from agi_request", "agi_request: agi://127.0.0.1/outbound?x=1\nagi_channel: PJSIP/1-1\n\n", "", "PJSIP/1-1", ""},
		{"CRLF line ends", "agi_channel: PJSIP/1004-00000005\r\nagi_arg_1: 00442079460349\r\n\r\n", "", "PJSIP/1004-00000005", "00442079460349"},
		{"newline in the number splits a line", "agi_channel: PJSIP/1004-1\nagi_arg_1: 0044\nagi_channel: PJSIP/1001-2\n\n", "agi_channel appears twice", "PJSIP/1004-1", "0044"},
		{"blank line in the number ends the block early", "agi_channel: PJSIP/1004-1\nagi_arg_1: 1002\n\nagi_arg_2: x\n\n", "bytes after the end", "PJSIP/1004-1", "1002"},
		{"not a key", "agi_channel: PJSIP/1004-1\nhello\n\n", "is not", "PJSIP/1004-1", ""},
		// ${EXTEN} = "0044\nagi_arg_2: 198.51.100.22": Asterisk writes EXTEN
		// as agi_dnid and agi_extension before the arguments, so the
		// injected argument comes out of order there.
		{"injected argument via EXTEN", "agi_channel: PJSIP/1004-1\nagi_dnid: 0044\nagi_arg_2: 198.51.100.22\nagi_extension: 0044\nagi_arg_2: 198.51.100.22\n" +
			"agi_arg_1: 0044\nagi_arg_2: 198.51.100.22\n\n", "agi_arg_2 out of order", "PJSIP/1004-1", "0044"},
		{"argument out of order", "agi_arg_2: 1\nagi_arg_1: 2\n\n", "agi_arg_2 out of order", "", "2"},
		{"overlong line", "agi_channel: PJSIP/1004-1\nagi_calleridname: " + strings.Repeat("A", 9000) + "\nagi_arg_1: 5\n\n", "longer than", "PJSIP/1004-1", "5"},
		{"too many lines", strings.Repeat("agi_x: y\n", MaxEnvLines+1) + "\n", "!", "", ""},
		{"eof inside the block", "agi_channel: PJSIP/1004-1\nagi_arg_1: 0", "!", "", ""},
		{"huge session", "agi_calleridname: " + strings.Repeat("B", MaxSession+10) + "\n\n", "!", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got *Request
			_, err := serve(t, tc.env, nil, func(_ context.Context, r *Request, _ *Session) { got = r })
			if tc.errPart == "!" {
				if err == nil || got != nil {
					t.Fatalf("err = %v, handler called: %v; want an error and no call", err, got != nil)
				}
				return
			}
			if err != nil || got == nil {
				t.Fatalf("err = %v, handler called: %v", err, got != nil)
			}
			if tc.errPart == "" && got.Err != nil || tc.errPart != "" && (got.Err == nil || !strings.Contains(got.Err.Error(), tc.errPart)) {
				t.Errorf("Err = %v, want containing %q", got.Err, tc.errPart)
			}
			if got.Channel != tc.channel || strings.Join(got.Args, ",") != tc.args {
				t.Errorf("channel %q args %q, want %q %q", got.Channel, got.Args, tc.channel, tc.args)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"deny", `"deny"`},
		{`a "b" c\d`, `"a \"b\" c\\d"`},
		{"x\ny\r\x00z\x7f", `"x?y??z?"`},
		{"\xff\xfe", `"??"`},
		{"é ✓", `"é ✓"`},
		{"", `""`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
	if got := Quote(strings.Repeat("9", 9000)); len(got) != MaxValue+2 {
		t.Errorf("Quote of 9000 bytes is %d bytes, want %d", len(got), MaxValue+2)
	}
	// What Asterisk reads back is one argument holding the value (control bytes replaced).
	for _, v := range []string{`"; HANGUP`, "x\" \nEXEC Dial PJSIP/1@carrier", `\`, `\"`, `a\`, "tab\there"} {
		line := "SET VARIABLE PBXGUARD_REASON " + Quote(v)
		args := parseArgs(line)
		want := strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return '?'
			}
			return r
		}, v)
		if len(args) != 4 || args[3] != want || strings.ContainsAny(line, "\n\r") {
			t.Errorf("%q: Asterisk reads %q, want [SET VARIABLE PBXGUARD_REASON %q]", v, args, want)
		}
	}
}

func TestReplies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replies []string
		wantErr error
		hungUp  bool
		reply   bool // a *ReplyError
	}{
		{"ok", []string{"200 result=1\n"}, nil, false, false},
		{"ok CRLF", []string{"200 result=1\r\n"}, nil, false, false},
		{"hangup first", []string{"HANGUP\n200 result=1\n"}, nil, true, false},
		{"dead channel", []string{"HANGUP\n511 Command Not Permitted on a dead channel or intercept routine\n"}, ErrHungUp, true, false},
		{"unknown", []string{"510 Invalid or unknown command\n"}, ErrInvalid, false, false},
		{"usage", []string{"520-Invalid command syntax.  Proper usage follows:\n Usage: SET VARIABLE <variablename> <value>\n520 End of proper usage.\n"}, ErrInvalid, false, false},
		{"stray line", []string{"agi_arg_2: x\n"}, nil, false, true},
		{"silence", nil, io.EOF, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			var hung bool
			_, serr := serve(t, "agi_channel: PJSIP/1-1\n\n", tc.replies, func(_ context.Context, _ *Request, s *Session) {
				err = s.SetVariable("PBXGUARD_DECISION", "allow")
				hung = s.HungUp()
			})
			if serr != nil {
				t.Fatal(serr)
			}
			var re *ReplyError
			switch {
			case tc.reply:
				if !errors.As(err, &re) {
					t.Errorf("err = %v, want a ReplyError", err)
				}
			case !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil):
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if hung != tc.hungUp {
				t.Errorf("HungUp = %v, want %v", hung, tc.hungUp)
			}
		})
	}
}

func TestSetVariableCommands(t *testing.T) {
	f, err := serve(t, env1001, []string{"200 result=1\n", "200 result=1\n"}, func(_ context.Context, _ *Request, s *Session) {
		if err := s.SetVariable("PBXGUARD_DECISION", "deny"); err != nil {
			t.Error(err)
		}
		if err := s.SetVariable("PBXGUARD_REASON", "prefix_guessing: \"+44…\"\nHANGUP"); err != nil {
			t.Error(err)
		}
		if err := s.SetVariable("bad name", "x"); !errors.Is(err, ErrBadName) {
			t.Errorf("bad name: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`SET VARIABLE PBXGUARD_DECISION "deny"`, `SET VARIABLE PBXGUARD_REASON "prefix_guessing: \"+44…\"?HANGUP"`}
	if strings.Join(f.commands, "|") != strings.Join(want, "|") {
		t.Errorf("commands = %q\nwant       %q", f.commands, want)
	}
}

// TestServeTCP: a real loopback connection, a client speaking as Asterisk.
func TestServeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Timeout: 2 * time.Second, Handler: func(_ context.Context, r *Request, s *Session) {
		_ = s.SetVariable("PBXGUARD_DECISION", map[bool]string{true: "deny", false: "allow"}[strings.HasPrefix(r.Arg(1), "00")])
	}}
	go func() { done <- srv.Serve(ctx, ln) }()
	for _, tc := range []struct{ num, want string }{{"2125550142", "allow"}, {"00442079460349", "deny"}} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "agi_network: yes\nagi_network_script: outbound\nagi_channel: PJSIP/1001-1\nagi_arg_1: "+tc.num+"\n\n"); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:n]); got != "SET VARIABLE PBXGUARD_DECISION \""+tc.want+"\"\n" {
			t.Errorf("%s: got %q", tc.num, got)
		}
		if _, err := io.WriteString(c, "200 result=1\n"); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(buf); err != io.EOF {
			t.Errorf("after the reply: %q, %v; want the server to close", buf[:n], err)
		}
		c.Close()
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestServeRefusesPeers: a peer Allow refuses gets no command at all.
func TestServeRefusesPeers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	refused := make(chan netip.Addr, 1)
	called := make(chan bool, 1)
	srv := &Server{Timeout: 2 * time.Second, Allow: func(a netip.Addr) bool { return a == netip.MustParseAddr("192.0.2.1") },
		Refused: func(a netip.Addr) { refused <- a },
		Handler: func(_ context.Context, _ *Request, s *Session) {
			called <- true
			_ = s.SetVariable("PBXGUARD_DECISION", "allow")
		}}
	go srv.Serve(ctx, ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.WriteString(c, "agi_channel: PJSIP/1001-1\nagi_arg_1: 0033170189999\n\n")
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Errorf("refused peer got %q (%v)", b, err)
	}
	if a := <-refused; a != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("refused %v", a)
	}
	select {
	case <-called:
		t.Error("the handler ran for a refused peer")
	default:
	}
}

// FuzzAGISession: any environment block and any replies; no panic, and
// every line the server writes is one SET VARIABLE with exactly one
// argument value, as Asterisk would parse it.
func FuzzAGISession(f *testing.F) {
	f.Add(env1001, "200 result=1\n")
	f.Add("agi_channel: PJSIP/1004-1\nagi_arg_1: 0044\"\nHANGUP\n\n", "HANGUP\n511 x\n")
	f.Add("agi_arg_1: \\\"; EXEC Dial\n\n", "520-x\n520 End\n")
	f.Add("agi_calleridname: \x00\xff\r\n\n", "510 x\n200 result=1\n")
	f.Fuzz(func(t *testing.T, env, replies string) {
		rs := strings.SplitAfter(replies, "\n")
		f, _ := serve(t, env, rs, func(_ context.Context, r *Request, s *Session) {
			_ = s.SetVariable("PBXGUARD_DECISION", r.Arg(1))
			_ = s.SetVariable("PBXGUARD_REASON", r.CallerIDName+r.Channel+r.Arg(2))
		})
		out := f.written.String()
		if out != "" && !strings.HasSuffix(out, "\n") {
			t.Fatalf("unterminated command: %q", out)
		}
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if line == "" {
				continue
			}
			args := parseArgs(line)
			if len(args) != 4 || args[0] != "SET" || args[1] != "VARIABLE" || (args[2] != "PBXGUARD_DECISION" && args[2] != "PBXGUARD_REASON") {
				t.Fatalf("injected command: %q parses as %q", line, args)
			}
			if strings.ContainsAny(args[3], "\r\n\x00") {
				t.Fatalf("control byte in value: %q", args[3])
			}
		}
	})
}
