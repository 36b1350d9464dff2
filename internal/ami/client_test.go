package ami

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

// testConfig is a Config with fast timings for tests.
func testConfig(addr string) Config {
	return Config{
		Addr:         addr,
		Username:     "pbxguard",
		Secret:       "s3cret",
		PingInterval: -1,
		Timeout:      5 * time.Second,
		Backoff:      [2]time.Duration{10 * time.Millisecond, 50 * time.Millisecond},
	}
}

var testLogin = loginConf{user: "pbxguard", secret: "s3cret"}

// nextEvent waits for the next event (bounded).
func nextEvent(t *testing.T, c *Client) *Message {
	t.Helper()
	select {
	case m, ok := <-c.Events():
		if !ok {
			t.Fatal("event channel closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return nil
}

func TestDialPlainLoginFiltersAndActions(t *testing.T) {
	var mu sync.Mutex
	var seen []action
	srv := newFakeAMI(t, nil, func(s *session) {
		lc := testLogin
		lc.events = "system,call,security"
		if !s.login(lc) {
			return
		}
		s.serve(func(a action) bool {
			mu.Lock()
			seen = append(seen, a)
			mu.Unlock()
			switch a.get("Action") {
			case "Filter":
				s.reply(a, "Success", "Message: Filter Added Successfully")
			case "Getvar":
				s.reply(a, "Success", "Variable: "+a.get("Variable"), "Value: 203.0.113.159:5060")
			case "DBPut":
				s.reply(a, "Success", "Message: Updated database successfully")
			case "DBDel":
				s.reply(a, "Error", "Message: Database entry not found")
			case "Hangup":
				s.reply(a, "Success", "Message: Channel Hungup")
			case "Command":
				s.reply(a, "Success", "Message: Command output follows", "Output: line one", "Output:   indented")
			default:
				s.reply(a, "Error", "Message: Invalid/unknown command")
			}
			return true
		})
	})
	cfg := testConfig(srv.Addr())
	cfg.Events = "system,call,security"
	cfg.Filters = []string{"Event: Hangup", "!Event: VarSet"}
	ctx := context.Background()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := c.Getvar(ctx, "PJSIP/1004-00000017", "CHANNEL(pjsip,remote_addr)")
	if err != nil || v != "203.0.113.159:5060" {
		t.Fatalf("Getvar = %q, %v", v, err)
	}
	if err := c.DBPut(ctx, "pbxguard/locked", "1004", "toll-fraud"); err != nil {
		t.Fatal(err)
	}
	err = c.DBDel(ctx, "pbxguard/locked", "1005")
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Message != "Database entry not found" || ae.Action != "DBDel" {
		t.Fatalf("DBDel err = %v", err)
	}
	if err := c.Hangup(ctx, "PJSIP/1004-00000017", 21); err != nil {
		t.Fatal(err)
	}
	err = c.PJSIPHangup(ctx, "PJSIP/1004-00000017", 403)
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "Invalid/unknown command") {
		t.Fatalf("PJSIPHangup err = %v", err)
	}
	out, err := c.Command(ctx, "core show channels")
	if err != nil || out != "line one\n  indented" {
		t.Fatalf("Command = %q, %v", out, err)
	}
	if err := c.Hangup(ctx, "PJSIP/x\r\nAction: Originate", 0); err == nil || !strings.Contains(err.Error(), "line break") {
		t.Fatalf("injection not refused: %v", err)
	}
	if c.Stats().Connects != 1 || !c.Stats().Connected || c.Stats().ServerBanner != "Asterisk Call Manager/9.0.0" {
		t.Fatalf("stats %+v", c.Stats())
	}

	mu.Lock()
	defer mu.Unlock()
	var got []string
	ids := map[string]bool{}
	for _, a := range seen {
		got = append(got, strings.Join(a.without("ActionID"), "|"))
		if id := a.get("ActionID"); id == "" || ids[id] {
			t.Errorf("ActionID %q missing or reused", id)
		} else {
			ids[id] = true
		}
	}
	want := []string{
		"Action: Filter|Operation: Add|Filter: Event: Hangup",
		"Action: Filter|Operation: Add|Filter: !Event: VarSet",
		"Action: Getvar|Variable: CHANNEL(pjsip,remote_addr)|Channel: PJSIP/1004-00000017",
		"Action: DBPut|Family: pbxguard/locked|Key: 1004|Val: toll-fraud",
		"Action: DBDel|Family: pbxguard/locked|Key: 1005",
		"Action: Hangup|Channel: PJSIP/1004-00000017|Cause: 21",
		"Action: PJSIPHangup|Channel: PJSIP/1004-00000017|Cause: 403",
		"Action: Command|Command: core show channels",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("server saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDialMD5Challenge(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		lc := testLogin
		lc.md5 = true
		if s.login(lc) {
			s.serve(nil)
		}
	})
	cfg := testConfig(srv.Addr())
	cfg.UseMD5 = true
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()

	cfg.Secret = "wrong"
	_, err = Dial(context.Background(), cfg)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "Authentication failed") || !strings.Contains(err.Error(), "permit/deny") {
		t.Fatalf("wrong MD5 secret: %v", err)
	}
	cfg.UseMD5 = false
	cfg.Secret = "s3cret"
	_, err = Dial(context.Background(), cfg) // plain login where the server wants MD5
	if !errors.Is(err, ErrAuth) {
		t.Fatalf("plain login against an MD5-only server: %v", err)
	}
}

// TestReconnectAfterDropMidEvent: the server cuts the connection in the
// middle of an event; the client reports the loss, reconnects, and the
// events of the new session follow the Reconnected marker. The half event
// is never delivered.
func TestReconnectAfterDropMidEvent(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		switch s.n {
		case 1:
			s.send("Event: Newchannel\r\nChannel: PJSIP/1004-00000001\r\n\r\nEvent: DialBegin\r\nDestChannel: PJSIP/carrier-00000002\r\n\r\n")
			s.send("Event: Hangup\r\nChannel: PJSIP/1004-000")
			time.Sleep(20 * time.Millisecond)
			// the handler returns: connection closed mid-event
		default:
			s.send("Event: Newchannel\r\nChannel: PJSIP/1004-00000003\r\n\r\n")
			s.serve(nil)
		}
	})
	c, err := Dial(context.Background(), testConfig(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	for len(got) < 5 {
		m := nextEvent(t, c)
		got = append(got, m.Event()+" "+m.Get("Channel")+m.Get("DestChannel"))
		if m.Event() == EventDisconnected && !strings.Contains(m.Get("Reason"), "connection") {
			t.Errorf("Disconnected reason %q", m.Get("Reason"))
		}
	}
	want := []string{
		"Newchannel PJSIP/1004-00000001",
		"DialBegin PJSIP/carrier-00000002",
		EventDisconnected + " ",
		EventReconnected + " ",
		"Newchannel PJSIP/1004-00000003",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events\n%q\nwant\n%q", got, want)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping after reconnect: %v", err)
	}
	st := c.Stats()
	if st.Connects != 2 || st.Disconnects != 1 || !strings.Contains(st.LastError, "inside the message") {
		t.Fatalf("stats %+v", st)
	}
}

// TestEventListSplitAcrossReads: a CoreShowChannels list arrives in
// pieces cut inside headers, with an unrelated event in the middle.
func TestEventListSplitAcrossReads(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		s.serve(func(a action) bool {
			id := a.get("ActionID")
			list := "Response: Success\r\nActionID: " + id + "\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n" +
				"Event: CoreShowChannel\r\nActionID: " + id + "\r\nChannel: PJSIP/1004-00000017\r\nExten: +442079460958\r\n\r\n" +
				"Event: Newchannel\r\nChannel: PJSIP/1001-00000020\r\n\r\n" +
				"Event: CoreShowChannel\r\nActionID: " + id + "\r\nChannel: PJSIP/1004-00000019\r\nExten: 011442079460614\r\n\r\n" +
				"Event: CoreShowChannelsComplete\r\nActionID: " + id + "\r\nEventList: Complete\r\nListItems: 2\r\n\r\n"
			prev := 0
			for _, cut := range []int{3, 40, 77, 150, 151, 260, 330, len(list) - 1, len(list)} {
				s.send(list[prev:cut])
				prev = cut
				time.Sleep(5 * time.Millisecond)
			}
			return true
		})
	})
	c, err := Dial(context.Background(), testConfig(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, evs, err := c.ActionList(context.Background(), NewAction("CoreShowChannels"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Get("EventList") != "start" || len(evs) != 3 || evs[0].Get("Exten") != "+442079460958" ||
		evs[1].Get("Channel") != "PJSIP/1004-00000019" || evs[2].Get("ListItems") != "2" {
		t.Fatalf("resp %v, events %v", resp, evs)
	}
	if m := nextEvent(t, c); m.Event() != "Newchannel" || m.Get("Channel") != "PJSIP/1001-00000020" {
		t.Fatalf("unrelated event = %v", m)
	}
}

func TestGarbageStream(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	garbage := make([]byte, 32<<10)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		s.send(string(garbage) + "\r\n\r\nEvent: Alive\r\nAfter: garbage\r\n\r\n")
		s.serve(nil)
	})
	c, err := Dial(context.Background(), testConfig(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		m := nextEvent(t, c)
		if m.Event() == "Alive" {
			break
		}
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping after garbage: %v", err)
	}
	if st := c.Stats(); st.Malformed == 0 || st.Connects != 1 {
		t.Fatalf("stats %+v", st)
	}

	// A peer that is not AMI at all.
	for _, greeting := range []string{"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", string(garbage[:300])} {
		other := newFakeAMI(t, nil, func(s *session) { s.send(greeting); _, _ = s.br.ReadByte() })
		_, err := Dial(context.Background(), testConfig(other.Addr()))
		if !errors.Is(err, ErrNotAMI) || !strings.Contains(err.Error(), "5038") {
			t.Fatalf("non-AMI peer: %v", err)
		}
	}
}

func TestServerNeverAnswers(t *testing.T) {
	silent := newFakeAMI(t, nil, func(s *session) { _, _ = s.br.ReadByte() })
	cfg := testConfig(silent.Addr())
	cfg.Timeout = 200 * time.Millisecond
	_, err := Dial(context.Background(), cfg)
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Fatalf("silent server: %v", err)
	}

	// Logs in, then swallows actions.
	mute := newFakeAMI(t, nil, func(s *session) {
		if s.login(testLogin) {
			s.serve(func(action) bool { return true })
		}
	})
	c, err := Dial(context.Background(), testConfig(mute.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	_, err = c.Action(short, NewAction("CoreStatus"))
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "CoreStatus") || !strings.Contains(err.Error(), "no complete response") {
		t.Fatalf("Action: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Action(ctx, NewAction("CoreStatus")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	if c.Stats().PendingActions != 0 {
		t.Fatalf("pending actions left: %+v", c.Stats())
	}
}

// TestKeepaliveReconnects: the server stops answering after login; the
// keepalive Ping times out and the client reconnects.
func TestKeepaliveReconnects(t *testing.T) {
	deaf := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		if s.n == 1 {
			for {
				if _, err := s.read(); err != nil {
					return
				}
			}
		}
		s.serve(nil)
	})
	cfg := testConfig(deaf.Addr())
	cfg.PingInterval = 50 * time.Millisecond
	cfg.Timeout = time.Second
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := nextEvent(t, c)
	if m.Event() != EventDisconnected || !strings.Contains(m.Get("Reason"), "keepalive Ping failed") {
		t.Fatalf("first event %v", m)
	}
	if m := nextEvent(t, c); m.Event() != EventReconnected {
		t.Fatalf("second event %v", m)
	}
}

func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pbxguard test AMI"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := selfSignedCert(t)
	srv := newFakeAMI(t, &tls.Config{Certificates: []tls.Certificate{cert}}, func(s *session) {
		if s.login(testLogin) {
			s.send("Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n")
			s.serve(nil)
		}
	})
	cfg := testConfig(srv.Addr())
	cfg.TLS = &tls.Config{RootCAs: pool}
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m := nextEvent(t, c); m.Event() != "FullyBooted" {
		t.Fatalf("event %v", m)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()

	_, otherPool := selfSignedCert(t)
	cfg.TLS = &tls.Config{RootCAs: otherPool}
	_, err = Dial(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "TLS handshake failed") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	cfg.TLS = nil // plain client against a TLS server
	cfg.Timeout = 200 * time.Millisecond
	_, err = Dial(context.Background(), cfg)
	if err == nil {
		t.Fatal("plain client logged in to a TLS server")
	}
}

func TestEventBufferDropsOldest(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		for i := range 10 {
			s.send(fmt.Sprintf("Event: Test\r\nSeq: %d\r\n\r\n", i))
		}
		s.serve(nil)
	})
	cfg := testConfig(srv.Addr())
	cfg.EventBuffer = 4
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; c.Stats().Events < 10; i++ {
		if i > 1000 {
			t.Fatalf("only %d events after 10s", c.Stats().Events)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var seq []string
	for range 4 {
		seq = append(seq, nextEvent(t, c).Get("Seq"))
	}
	if !reflect.DeepEqual(seq, []string{"6", "7", "8", "9"}) || c.Stats().EventsDropped != 6 {
		t.Fatalf("kept %v, dropped %d; want the 4 newest and 6 dropped", seq, c.Stats().EventsDropped)
	}
}

// TestNewWaitsForServer: New keeps retrying while the server refuses the
// login, and an Action waits for the connection.
func TestNewWaitsForServer(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		if s.n <= 2 {
			s.login(loginConf{user: "nobody"})
			return
		}
		if s.login(testLogin) {
			s.serve(nil)
		}
	})
	cfg := testConfig(srv.Addr())
	cfg.Timeout = 5 * time.Second
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Connects != 1 || !strings.Contains(st.LastError, "Authentication failed") {
		t.Fatalf("stats %+v", st)
	}
	if _, err := New(Config{Addr: "127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("bad address accepted: %v", err)
	}
}

// TestCloseEndsEverything: Close fails waiting actions, closes the event
// channel and leaves no goroutine behind, connected or retrying.
func TestCloseEndsEverything(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		srv := newFakeAMI(t, nil, func(s *session) {
			if s.login(testLogin) {
				s.serve(func(a action) bool { return true }) // never answers other actions
			}
		})
		defer srv.Close()
		cfg := testConfig(srv.Addr())
		cfg.PingInterval = 20 * time.Millisecond
		cfg.Timeout = 10 * time.Second
		c, err := Dial(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := c.Action(context.Background(), NewAction("CoreStatus"))
			errc <- err
		}()
		for c.Stats().PendingActions == 0 {
			time.Sleep(time.Millisecond)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending action: %v", err)
		}
		for range c.Events() {
		}
		if _, err := c.Action(context.Background(), NewAction("Ping")); !errors.Is(err, ErrClosed) {
			t.Fatalf("action after Close: %v", err)
		}
		c.Close() // idempotent

		// A client that never connects (nothing listens).
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		c2, err := New(testConfig(addr))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; c2.Stats().LastError == "" && i < 1000; i++ {
			time.Sleep(5 * time.Millisecond)
		}
		c2.Close()
		if st := c2.Stats(); !strings.Contains(st.LastError, "refused") {
			t.Errorf("last error %q", st.LastError)
		}
	}()
	waitGoroutines(t, base)
}

// waitGoroutines waits (bounded) until no more than base goroutines run.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	for i := 0; ; i++ {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if i > 500 {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDialFailuresLeaveNothing: every way a Dial can fail ends all it
// started.
func TestDialFailuresLeaveNothing(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		refuse := newFakeAMI(t, nil, func(s *session) { s.login(loginConf{user: "nobody"}) })
		defer refuse.Close()
		silent := newFakeAMI(t, nil, func(s *session) { _, _ = s.br.ReadByte() })
		defer silent.Close()
		filterFails := newFakeAMI(t, nil, func(s *session) {
			if s.login(testLogin) {
				s.serve(func(a action) bool { return s.reply(a, "Error", "Message: Permission denied") })
			}
		})
		defer filterFails.Close()

		if _, err := Dial(context.Background(), testConfig(refuse.Addr())); !errors.Is(err, ErrAuth) {
			t.Errorf("refused: %v", err)
		}
		cfg := testConfig(silent.Addr())
		cfg.Timeout = 100 * time.Millisecond
		if _, err := Dial(context.Background(), cfg); !errors.Is(err, ErrTimeout) {
			t.Errorf("silent: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := Dial(ctx, testConfig(silent.Addr())); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled: %v", err)
		}
		cfg = testConfig(filterFails.Addr())
		cfg.Filters = []string{"Event: Hangup"}
		if _, err := Dial(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "Permission denied") || !strings.Contains(err.Error(), "write = system") {
			t.Errorf("filter refused: %v", err)
		}
	}()
	waitGoroutines(t, base)
}

// securityAddrs summarises what SecurityEvent finds in msgs.
func securityAddrs(t *testing.T, msgs []*Message) (ami map[netip.Addr]int, success map[string]int) {
	ami = map[netip.Addr]int{}
	success = map[string]int{}
	var ev event.Event
	for _, m := range msgs {
		if SecurityEvent(m, &ev) {
			if ev.Service == event.ServiceAMI && ev.Kind.IsFailure() {
				ami[ev.Addr]++
			}
			if ev.Kind == event.AuthSuccess {
				success[ev.Account+"@"+ev.Addr.String()]++
			}
		}
	}
	return ami, success
}

// TestSubscribe: two consumers share one session; a filtered subscription
// gets only what it asked for plus the markers; closing it leaves the
// others running.
func TestSubscribe(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		if s.n == 1 {
			s.serve(func(a action) bool { // UserEvent makes the server emit events
				s.send("Event: VarSet\r\nPrivilege: dialplan,all\r\nVariable: X\r\n\r\n" +
					"Event: FailedACL\r\nPrivilege: security,all\r\nService: AMI\r\nRemoteAddress: IPV4/TCP/203.0.113.222/34066\r\n\r\n")
				return false // then hang up
			})
			return
		}
		s.serve(nil)
	})
	c, err := Dial(context.Background(), testConfig(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sec := c.Subscribe(8, IsSecurity)
	other := c.Subscribe(8, nil)
	_, _ = c.Action(context.Background(), NewAction("UserEvent", "UserEvent", "go"))
	var got []string
	for len(got) < 3 {
		select {
		case m := <-sec.C():
			got = append(got, m.Event())
		case <-time.After(10 * time.Second):
			t.Fatalf("subscription got only %v", got)
		}
	}
	if !reflect.DeepEqual(got, []string{"FailedACL", EventDisconnected, EventReconnected}) {
		t.Fatalf("security subscription got %v", got)
	}
	other.Close()
	other.Close()
	if _, ok := <-other.C(); ok {
		// drain what was buffered before Close
		for range other.C() {
		}
	}
	var all []string
	for len(all) < 4 {
		all = append(all, nextEvent(t, c).Event())
	}
	if !reflect.DeepEqual(all, []string{"VarSet", "FailedACL", EventDisconnected, EventReconnected}) {
		t.Fatalf("Events() got %v", all)
	}
	c.Close()
	if _, ok := <-sec.C(); ok {
		t.Fatal("subscription channel open after Client.Close")
	}
	if s := c.Subscribe(1, nil); s == nil {
		t.Fatal("nil subscription after Close")
	} else if _, ok := <-s.C(); ok {
		t.Fatal("subscription after Close is open")
	}
}

// TestConcurrentActionsOutOfOrder: responses arriving in another order
// than the actions still reach the right callers.
func TestConcurrentActionsOutOfOrder(t *testing.T) {
	const batch = 10
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		for {
			var as []action
			for len(as) < batch {
				a, err := s.read()
				if err != nil {
					return
				}
				as = append(as, a)
			}
			for i := len(as) - 1; i >= 0; i-- {
				s.send("Event: Noise\r\nActionID: " + as[i].get("ActionID") + "x\r\n\r\n")
				s.reply(as[i], "Success", "Variable: "+as[i].get("Variable"), "Value: value-of-"+as[i].get("Variable"))
			}
		}
	})
	c, err := Dial(context.Background(), testConfig(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for round := range 5 {
		var wg sync.WaitGroup
		errs := make(chan error, batch)
		for i := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := fmt.Sprintf("V%d_%d", round, i)
				got, err := c.Getvar(context.Background(), "", v)
				if err == nil && got != "value-of-"+v {
					err = fmt.Errorf("Getvar %s = %q", v, got)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if st := c.Stats(); st.Events != 5*batch || st.PendingActions != 0 {
		t.Fatalf("stats %+v (the Noise events carry unknown ActionIDs and belong on Events())", st)
	}
}

// TestActionListOldAndError: a list announced only by "Message: … will
// follow" (old Asterisk) and an Error answer to a list action.
func TestActionListOldAndError(t *testing.T) {
	srv := newFakeAMI(t, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		s.serve(func(a action) bool {
			id := a.get("ActionID")
			switch a.get("Action") {
			case "Status":
				s.send("Response: Success\r\nActionID: " + id + "\r\nMessage: Channel status will follow\r\n\r\n" +
					"Event: Status\r\nActionID: " + id + "\r\nChannel: SIP/2001-0000000a\r\n\r\n" +
					"Event: StatusComplete\r\nActionID: " + id + "\r\nItems: 1\r\n\r\n")
			default:
				s.reply(a, "Error", "Message: Permission denied")
			}
			return true
		})
	})
	c, err := Dial(context.Background(), testConfig(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, evs, err := c.ActionList(context.Background(), NewAction("Status"))
	if err != nil || len(evs) != 2 || evs[1].Event() != "StatusComplete" {
		t.Fatalf("old-style list: %v, %v", evs, err)
	}
	resp, evs, err := c.ActionList(context.Background(), NewAction("PJSIPShowContacts"))
	var ae *ActionError
	if !errors.As(err, &ae) || resp.Get("Message") != "Permission denied" || len(evs) != 0 || !strings.Contains(err.Error(), "write class") {
		t.Fatalf("error list: %v %v %v", resp, evs, err)
	}
}
