package ami

import (
	"context"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// writeChunks writes b in pieces whose sizes come from size.
func writeChunks(s *session, b string, size func() int) bool {
	for len(b) > 0 {
		n := min(max(size(), 1), len(b))
		if !s.send(b[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// TestReplayActionsTranscript replays the recorded action session of each
// Asterisk version: the fake server reads what the client sends, checks it
// against what the recording client sent (ActionIDs aside), and answers
// with the recorded bytes, as recorded (one write per TCP read Asterisk
// made) and one byte per write. The recorded ActionIDs are rewritten to
// the client's.
func TestReplayActionsTranscript(t *testing.T) {
	for _, v := range corpusVersions {
		for _, mode := range []string{"as-recorded", "1-byte"} {
			t.Run("asterisk-"+v+"/"+mode, func(t *testing.T) {
				replayActions(t, v, mode)
			})
		}
	}
}

func replayActions(t *testing.T, version, mode string) {
	recs := transcript(t, version)
	g := loadGroundTruth(t, version)
	var sent []*Message // what the recording client sent
	for _, r := range recs {
		if r.Dir == "send" {
			m, err := ParseMessage([]byte(r.Data))
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, m)
		}
	}
	login := sent[0]
	if login.Get("Action") != "Login" {
		t.Fatalf("transcript starts with %v", login)
	}
	var mismatch []string
	var mu sync.Mutex
	srv := newFakeAMI(t, nil, func(s *session) {
		ids := map[string]string{} // recorded ActionID -> client's
		size := func() int { return 1 << 20 }
		if mode == "1-byte" {
			size = func() int { return 1 }
		}
		i := 0
		for _, r := range recs {
			if r.Dir == "recv" {
				data := r.Data
				for rec, got := range ids {
					data = strings.ReplaceAll(data, "ActionID: "+rec+"\r\n", "ActionID: "+got+"\r\n")
				}
				if !writeChunks(s, data, size) {
					return
				}
				continue
			}
			a, err := s.read()
			if err != nil {
				return
			}
			want := sent[i]
			i++
			ids[want.ActionID()] = a.get("ActionID")
			var wl []string
			for _, h := range want.Headers {
				if h.Key != "ActionID" {
					wl = append(wl, h.Key+": "+h.Value)
				}
			}
			if got := a.without("ActionID"); !reflect.DeepEqual(got, wl) {
				mu.Lock()
				mismatch = append(mismatch, strings.Join(got, "|")+" != recorded "+strings.Join(wl, "|"))
				mu.Unlock()
			}
		}
		// Keep the connection until the client goes.
		_, _ = s.br.ReadByte()
	})
	cfg := testConfig(srv.Addr())
	cfg.Username, cfg.Secret, cfg.Events = login.Get("Username"), login.Get("Secret"), login.Get("Events")
	ctx := context.Background()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, a := range sent[1:] {
		switch name := a.Get("Action"); name {
		case "CoreShowChannels":
			resp, evs, err := c.ActionList(ctx, NewAction(name))
			if err != nil {
				t.Fatal(err)
			}
			last := evs[len(evs)-1]
			if resp.Get("EventList") != "start" || last.Event() != "CoreShowChannelsComplete" || last.Get("ListItems") != strconv.Itoa(len(evs)-1) {
				t.Fatalf("list: resp %v, last %v, %d events", resp, last, len(evs))
			}
			chans := map[string]bool{}
			for _, e := range evs[:len(evs)-1] {
				chans[e.Get("Channel")] = true
			}
			if len(evs)-1 != g.AMITranscript.ChannelsSeen || !chans[g.AMITranscript.Hangup] {
				t.Fatalf("%d channels %v; ground truth %d with %s", len(evs)-1, chans, g.AMITranscript.ChannelsSeen, g.AMITranscript.Hangup)
			}
		case "Hangup":
			cause, _ := strconv.Atoi(a.Get("Cause"))
			if a.Get("Channel") != g.TollFraud.Hangup {
				t.Fatalf("recorded hangup of %s, ground truth %s", a.Get("Channel"), g.TollFraud.Hangup)
			}
			if err := c.Hangup(ctx, a.Get("Channel"), cause); err != nil {
				t.Fatal(err)
			}
		case "DBPut":
			if err := c.DBPut(ctx, a.Get("Family"), a.Get("Key"), a.Get("Val")); err != nil {
				t.Fatal(err)
			}
		case "DBGet":
			val, err := c.DBGet(ctx, a.Get("Family"), a.Get("Key"))
			if err != nil || val != "toll-fraud" {
				t.Fatalf("DBGet = %q, %v", val, err)
			}
		case "Command":
			out, err := c.Command(ctx, a.Get("Command"))
			if err != nil || !strings.Contains(out, "sip:"+g.TollFraud.Extension+"@"+g.TollFraud.AttackerIP+":5060") || !strings.Contains(out, "Objects found: 5") {
				t.Fatalf("Command output %q, %v", out, err)
			}
		case "Logoff":
			c.Close()
		default:
			t.Fatalf("transcript action %s not replayed", name)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range mismatch {
		t.Errorf("client sent %s", m)
	}
}

// TestReplayEventStream sends the recorded event stream of each Asterisk
// version through a loopback server (the first 64 KiB one byte per write,
// the rest in random pieces) and checks the client delivers every event,
// that SecurityEvent finds the attackers of ground-truth.json, and that
// the end of the recording (Shutdown, EOF) is followed by Disconnected
// and Reconnected.
func TestReplayEventStream(t *testing.T) {
	for _, v := range corpusVersions {
		t.Run("asterisk-"+v, func(t *testing.T) {
			raw := string(rawEvents(t, v))
			want, _ := countEventsIndependently([]byte(raw))
			g := loadGroundTruth(t, v)
			banner, rest, _ := strings.Cut(raw, "\r\n")
			srv := newFakeAMI(t, nil, func(s *session) {
				if s.n > 1 {
					if s.login(testLogin) {
						s.serve(nil)
					}
					return
				}
				s.send(banner + "\r\n")
				a, err := s.read()
				if err != nil || a.get("Action") != "Login" {
					return
				}
				stream := strings.Replace(rest, "ActionID: rec-login\r\n", "ActionID: "+a.get("ActionID")+"\r\n", 1)
				// The recorded Login response, then (so that the client has
				// subscribed before the first event) one Ping, then the rest.
				loginResp, stream, _ := strings.Cut(stream, "\r\n\r\n")
				s.send(loginResp + "\r\n\r\n")
				if p, err := s.read(); err != nil || p.get("Action") != "Ping" {
					return
				} else if !s.reply(p, "Success", "Ping: Pong") {
					return
				}
				rng := mrand.New(mrand.NewPCG(uint64(len(stream)), 9))
				writeChunks(s, stream[:64<<10], func() int { return 1 })
				writeChunks(s, stream[64<<10:], func() int { return 1 + rng.IntN(1500) })
			})
			cfg := testConfig(srv.Addr())
			cfg.EventBuffer = 1 << 15
			c, err := Dial(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A second consumer on the same session, as the jails use it.
			sec := c.Subscribe(1<<12, IsSecurity)
			wantSec := strings.Count(raw, "\r\nPrivilege: security,all\r\n")
			if err := c.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			var msgs []*Message
			for {
				m := nextEvent(t, c)
				if m.Event() == EventDisconnected {
					break
				}
				got[m.Event()]++
				msgs = append(msgs, m)
			}
			if m := nextEvent(t, c); m.Event() != EventReconnected {
				t.Fatalf("after Disconnected: %v", m)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("events by type\n got %v\nwant %v", got, want)
			}
			if st := c.Stats(); st.EventsDropped != 0 || st.Malformed != 0 {
				t.Errorf("stats %+v", st)
			}
			var secMsgs []*Message
			for m := range sec.C() {
				if m.Event() == EventDisconnected {
					break
				}
				secMsgs = append(secMsgs, m)
			}
			if len(secMsgs) != wantSec || sec.Dropped() != 0 {
				t.Errorf("security subscription: %d events (%d dropped), the stream has %d", len(secMsgs), sec.Dropped(), wantSec)
			}
			ami, success := securityAddrs(t, secMsgs)
			if ami2, success2 := securityAddrs(t, msgs); !reflect.DeepEqual(ami, ami2) || !reflect.DeepEqual(success, success2) {
				t.Errorf("the subscription and Events() disagree on security events")
			}
			for _, s := range g.Scenarios {
				if s.ID == "8b-ami-bruteforce" && (len(ami) != 1 || ami[netip.MustParseAddr(s.IP)] != s.Attempts) {
					t.Errorf("AMI failures %v, want %s ×%d", ami, s.IP, s.Attempts)
				}
			}
			if key := g.TollFraud.Extension + "@" + g.TollFraud.AttackerIP; success[key] == 0 {
				t.Errorf("no SuccessfulAuth %s (have %v)", key, success)
			}
		})
	}
}

// TestReaderOverSlowConn checks Reader on a net.Conn directly against a
// server that trickles the recorded stream (split reads with real
// syscalls), for the first messages of the Asterisk 22 stream.
func TestReaderOverSlowConn(t *testing.T) {
	raw := string(rawEvents(t, "22"))[:16<<10]
	cut := strings.LastIndex(raw, "\r\n\r\n") + 4
	raw = raw[:cut]
	srv := newFakeAMI(t, nil, func(s *session) {
		rng := mrand.New(mrand.NewPCG(5, 5))
		writeChunks(s, raw, func() int { return 1 + rng.IntN(7) })
	})
	conn, err := dialPlain(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	want, _ := countEventsIndependently([]byte(raw))
	r := NewReader(conn)
	got := map[string]int{}
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Event() != "" {
			got[m.Event()]++
		}
	}
	if !reflect.DeepEqual(got, want) || len(got) == 0 {
		t.Fatalf("got %v want %v", got, want)
	}
}

// BenchmarkClientEvents measures events/s from a loopback socket to the
// Events() channel (reader, dispatch, channel), replaying the recorded
// Asterisk 20 event stream as often as needed.
func BenchmarkClientEvents(b *testing.B) {
	raw := string(rawEvents(b, "20"))
	_, login, _ := strings.Cut(raw, "\r\n")      // drop the banner
	_, body, _ := strings.Cut(login, "\r\n\r\n") // drop the Login response
	perBody, _ := countEventsIndependently([]byte(body))
	n := 0
	for _, v := range perBody {
		n += v
	}
	reps := b.N/n + 1
	srv := newFakeAMI(b, nil, func(s *session) {
		if !s.login(testLogin) {
			return
		}
		for range reps {
			if !s.send(body) {
				return
			}
		}
		_, _ = s.br.ReadByte()
	})
	cfg := testConfig(srv.Addr())
	cfg.EventBuffer = 1 << 16
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		<-c.Events()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if d := c.Stats().EventsDropped; d != 0 {
		b.Logf("%d events dropped (consumer slower than the socket)", d)
	}
}
