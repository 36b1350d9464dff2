package ami

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// splitReader returns data in reads whose sizes come from sizes (cycled).
type splitReader struct {
	data  []byte
	sizes func() int
}

func (s *splitReader) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := min(s.sizes(), len(p), len(s.data))
	if n < 1 {
		n = 1
	}
	copy(p, s.data[:n])
	s.data = s.data[n:]
	return n, nil
}

// readAll reads every message, counting ParseErrors; it fails the test on
// any other error than io.EOF.
func readAll(t testing.TB, r *Reader) (msgs []*Message, parseErrs int) {
	t.Helper()
	for i := 0; ; i++ {
		m, err := r.Next()
		if err == io.EOF {
			return msgs, parseErrs
		}
		var pe *ParseError
		if errors.As(err, &pe) {
			parseErrs++
			continue
		}
		if err != nil {
			t.Fatalf("Next after %d messages: %v", len(msgs), err)
		}
		msgs = append(msgs, m)
	}
}

func countByEvent(msgs []*Message) (map[string]int, int) {
	ev := map[string]int{}
	resp := 0
	for _, m := range msgs {
		if e := m.Event(); e != "" {
			ev[e]++
		} else if m.Response() != "" {
			resp++
		}
	}
	return ev, resp
}

// TestReaderCorpusEventStream parses the recorded event streams of both
// Asterisk versions whole, one byte per read and in random splits, and
// compares the counts of events by type with an independent count and
// with the corpus README's figures.
func TestReaderCorpusEventStream(t *testing.T) {
	readme := map[string]map[string]int{
		"20": {"VarSet": 2683, "CEL": 750, "Newexten": 288, "ChallengeSent": 157, "Newchannel": 100, "Hangup": 100,
			"ChallengeResponseFailed": 63, "SuccessfulAuth": 55, "DialBegin": 50, "Cdr": 50, "InvalidAccountID": 45,
			"InvalidPassword": 28, "FailedACL": 27, "PeerStatus": 4, "ContactStatus": 4, "FullyBooted": 1, "Shutdown": 1},
		"22": {"VarSet": 2587, "CEL": 720, "Newexten": 280, "ChallengeSent": 106, "Newchannel": 96, "Hangup": 96,
			"ChallengeResponseFailed": 63, "SuccessfulAuth": 54, "DialBegin": 48, "Cdr": 48, "InvalidAccountID": 50,
			"InvalidPassword": 4, "FailedACL": 11, "PeerStatus": 3, "ContactStatus": 4, "FullyBooted": 1, "Shutdown": 1},
	}
	for _, v := range corpusVersions {
		raw := rawEvents(t, v)
		want, wantResp := countEventsIndependently(raw)
		for typ, n := range readme[v] {
			if want[typ] != n {
				t.Fatalf("asterisk-%s: independent count of %s = %d, README says %d", v, typ, want[typ], n)
			}
		}
		rng := rand.New(rand.NewPCG(1, uint64(len(raw))))
		readers := map[string]io.Reader{
			"whole":    bytes.NewReader(raw),
			"1-byte":   iotest.OneByteReader(bytes.NewReader(raw)),
			"random":   &splitReader{data: raw, sizes: func() int { return 1 + rng.IntN(700) }},
			"crlf-cut": &splitReader{data: raw, sizes: func() int { return 2 + rng.IntN(3) }},
		}
		for name, rd := range readers {
			t.Run("asterisk-"+v+"/"+name, func(t *testing.T) {
				r := NewReader(rd)
				msgs, perr := readAll(t, r)
				if perr != 0 {
					t.Errorf("%d parse errors in a clean recorded stream", perr)
				}
				got, gotResp := countByEvent(msgs)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("event counts differ:\n got %v\nwant %v", got, want)
				}
				if gotResp != wantResp || gotResp != 1 {
					t.Errorf("responses = %d, want %d (the Login response)", gotResp, wantResp)
				}
				if !strings.HasPrefix(r.Banner(), "Asterisk Call Manager/") {
					t.Errorf("banner = %q", r.Banner())
				}
				if r.Offset() != int64(len(raw)) {
					t.Errorf("offset %d, stream has %d bytes", r.Offset(), len(raw))
				}
				last := msgs[len(msgs)-1]
				if last.Event() != "Shutdown" || last.Get("Restart") != "False" {
					t.Errorf("last message = %v", last)
				}
			})
		}
	}
}

// recvBytes is everything Asterisk sent in a recorded actions session.
func recvBytes(t testing.TB, version string) []byte {
	var b []byte
	for _, r := range transcript(t, version) {
		if r.Dir == "recv" {
			b = append(b, r.Data...)
		}
	}
	return b
}

// TestReaderEverySplit cuts the recorded action session at every byte
// offset into two reads and at every offset into 1 + 2-byte reads, and
// checks the messages are identical to an unsplit read.
func TestReaderEverySplit(t *testing.T) {
	for _, v := range corpusVersions {
		raw := recvBytes(t, v)
		want, _ := readAll(t, NewReader(bytes.NewReader(raw)))
		if len(want) < 10 {
			t.Fatalf("only %d messages in the transcript", len(want))
		}
		for i := 1; i < len(raw); i++ {
			got, perr := readAll(t, NewReader(io.MultiReader(bytes.NewReader(raw[:i]), bytes.NewReader(raw[i:]))))
			if perr != 0 || !reflect.DeepEqual(got, want) {
				t.Fatalf("asterisk-%s: split at byte %d changes the result (%d parse errors)", v, i, perr)
			}
		}
	}
}

func TestReaderCommandOutputForms(t *testing.T) {
	// New form (Asterisk 14+), as recorded.
	raw := recvBytes(t, "20")
	msgs, _ := readAll(t, NewReader(bytes.NewReader(raw)))
	var cmd *Message
	for _, m := range msgs {
		if m.ActionID() == "tx-6" {
			cmd = m
		}
	}
	if cmd == nil {
		t.Fatal("no response to tx-6 (Command) in the transcript")
	}
	out := cmd.Values("Output")
	if len(out) != 12 || !strings.HasPrefix(out[1], "  Contact:  <Aor/ContactUri") || !strings.Contains(out[6], "1004/sip:1004@203.0.113.159:5060") || out[10] != "Objects found: 5" {
		t.Fatalf("new-form output = %q", out)
	}

	// Old form (Asterisk ≤ 13): raw output with blank lines and lines that
	// look like headers, END glued to the last line, then a bare-LF event.
	old := "Response: Follows\r\nPrivilege: Command\r\nActionID: 7\r\n" +
		"  Contact:  1001/sip:1001@198.51.100.21:5060  Avail\n\nObjects found: 1\n--END COMMAND--\r\n\r\n" +
		"Response: Follows\r\nPrivilege: Command\r\nActionID: 8\r\nNo such command 'x'\n--END COMMAND--\r\n\r\n" +
		"Event: Hangup\nChannel: PJSIP/1004-00000017\nCause: 16\n\n"
	for name, rd := range map[string]io.Reader{"whole": strings.NewReader(old), "1-byte": iotest.OneByteReader(strings.NewReader(old))} {
		msgs, perr := readAll(t, NewReader(rd))
		if perr != 0 || len(msgs) != 3 {
			t.Fatalf("%s: %d messages, %d parse errors", name, len(msgs), perr)
		}
		if got := msgs[0].Values("Output"); !reflect.DeepEqual(got, []string{"  Contact:  1001/sip:1001@198.51.100.21:5060  Avail", "", "Objects found: 1"}) {
			t.Errorf("%s: old-form output = %q", name, got)
		}
		if msgs[0].ActionID() != "7" || msgs[0].Get("Privilege") != "Command" || msgs[0].Get("Contact") != "" {
			t.Errorf("%s: old-form headers = %v", name, msgs[0].Headers)
		}
		if got := msgs[1].Values("Output"); !reflect.DeepEqual(got, []string{"No such command 'x'"}) {
			t.Errorf("%s: second output = %q", name, got)
		}
		if msgs[2].Event() != "Hangup" || msgs[2].Get("Cause") != "16" {
			t.Errorf("%s: bare-LF event = %v", name, msgs[2].Headers)
		}
	}
}

func TestReaderGarbageResync(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	var stream []byte
	stream = append(stream, "Event: First\r\nA: 1\r\n\r\n"...)
	stream = append(stream, garbage...)
	stream = append(stream, "\r\n\r\nEvent: Second\r\nB: 2\r\n\r\n"...)
	stream = append(stream, "this line has no colon\r\nEvent: Skipped\r\n\r\nEvent: Third\r\n\r\n"...)
	r := NewReaderSize(bytes.NewReader(stream), 4096)
	var names []string
	var perrs []*ParseError
	for range 100000 {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		var pe *ParseError
		if errors.As(err, &pe) {
			perrs = append(perrs, pe)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, m.Event())
	}
	// Whatever the garbage decodes to, the three real events come through
	// and "Skipped" (in a message with a bad line) does not.
	var real []string
	for _, n := range names {
		if n == "First" || n == "Second" || n == "Third" || n == "Skipped" {
			real = append(real, n)
		}
	}
	if !reflect.DeepEqual(real, []string{"First", "Second", "Third"}) {
		t.Errorf("real events = %v", real)
	}
	if len(perrs) == 0 {
		t.Fatal("garbage produced no ParseError")
	}
	last := perrs[len(perrs)-1]
	if !errors.Is(last, ErrMalformed) || last.Line != "this line has no colon" || !strings.Contains(last.Error(), "not \"Key: Value\"") {
		t.Errorf("last parse error = %v (line %q)", last, last.Line)
	}
}

func TestReaderOversizedMessage(t *testing.T) {
	const max = 8 << 10
	big := strings.Repeat("x", 5*max)
	stream := "Event: Before\r\n\r\n" +
		"Event: Huge\r\nValue: " + big + "\r\n\r\n" + // one huge line
		"Event: Many\r\n" + strings.Repeat("K: v\r\n", max) + "\r\n" + // many lines
		"Response: Follows\r\n" + strings.Repeat("line\n", max) + "--END COMMAND--\r\n\r\n" + // endless output
		"Event: After\r\n\r\n"
	r := NewReaderSize(iotest.HalfReader(strings.NewReader(stream)), max)
	var names []string
	tooLarge := 0
	for range 100 {
		m, err := r.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, ErrTooLarge) {
			tooLarge++
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, m.Event())
		if cap(r.body) > 2*max || cap(r.long) > 2*max+readBufferSize {
			t.Fatalf("buffers grew to %d/%d bytes with a %d limit", cap(r.body), cap(r.long), max)
		}
	}
	if tooLarge != 3 || !reflect.DeepEqual(names, []string{"Before", "After"}) {
		t.Errorf("events %v, %d too large; want [Before After] and 3", names, tooLarge)
	}
}

func TestReaderEOFInsideMessage(t *testing.T) {
	r := NewReader(strings.NewReader("Event: A\r\n\r\nEvent: B\r\nChannel: PJSIP/10"))
	if m, err := r.Next(); err != nil || m.Event() != "A" {
		t.Fatalf("first = %v, %v", m, err)
	}
	_, err := r.Next()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestReadBanner(t *testing.T) {
	r := NewReader(strings.NewReader("Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n\r\n"))
	if b, err := r.ReadBanner(); err != nil || b != "Asterisk Call Manager/9.0.0" {
		t.Fatalf("banner %q, %v", b, err)
	}
	if m, err := r.Next(); err != nil || m.Response() != "Success" {
		t.Fatalf("after banner: %v %v", m, err)
	}
	_, err := NewReader(strings.NewReader("SSH-2.0-OpenSSH_9.2p1 Debian\r\n")).ReadBanner()
	if !errors.Is(err, ErrNotAMI) || !strings.Contains(err.Error(), "SSH-2.0-OpenSSH") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseMessageAndWire(t *testing.T) {
	m, err := ParseMessage([]byte("Event: Newchannel\r\nChannel: PJSIP/1004-00000017\r\nAccountCode: \r\nExten: +442079460958"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Event() != "Newchannel" || m.Get("exten") != "+442079460958" || m.Get("AccountCode") != "" || len(m.Headers) != 4 {
		t.Fatalf("parsed %v", m.Headers)
	}
	a := NewAction("Hangup", "Channel", "PJSIP/1004-00000017", "Cause", "21")
	if got := string(a.appendWire(nil)); got != "Action: Hangup\r\nChannel: PJSIP/1004-00000017\r\nCause: 21\r\n\r\n" {
		t.Fatalf("wire = %q", got)
	}
	if err := NewAction("Hangup", "Channel", "x\r\nAction: Originate").validate(); err == nil {
		t.Fatal("a value with CRLF was accepted")
	}
	login := NewAction("Login", "Username", "u", "Secret", "s3cret")
	if strings.Contains(login.String(), "s3cret") {
		t.Fatalf("String leaks the secret: %q", login.String())
	}
	if _, err := ParseMessage([]byte("\r\n")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty: %v", err)
	}
}

// FuzzReader: any input, no panic, progress on every call, bounded memory,
// and every message within the limit.
func FuzzReader(f *testing.F) {
	f.Add([]byte("Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nActionID: 1\r\n\r\nEvent: X\r\n\r\n"))
	f.Add([]byte("Response: Follows\r\nPrivilege: Command\r\nfoo\n\n--END COMMAND--\r\n\r\n"))
	f.Add([]byte("Event: A\nB: c\n\n\x00\xff: \r\r\n\r\n"))
	f.Add([]byte(":\r\n\r\nEvent:\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 512
		r := NewReaderSize(&splitReader{data: data, sizes: func() int { return 3 }}, max)
		for i := 0; ; i++ {
			if i > len(data)+2 {
				t.Fatalf("no progress: %d calls for %d bytes", i, len(data))
			}
			m, err := r.Next()
			if err != nil {
				var pe *ParseError
				if errors.As(err, &pe) {
					continue
				}
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			size := 0
			for _, h := range m.Headers {
				size += len(h.Key) + len(h.Value)
				if strings.ContainsAny(h.Key, "\r\n: ") || strings.ContainsAny(h.Value, "\n") {
					t.Fatalf("bad header %q", h)
				}
			}
			if size > max || len(m.Headers) == 0 {
				t.Fatalf("message of %d bytes, %d headers", size, len(m.Headers))
			}
			if cap(r.body) > 4*max+readBufferSize || cap(r.long) > 4*max+readBufferSize || cap(r.spans) > max/2+64 {
				t.Fatalf("buffers %d/%d/%d", cap(r.body), cap(r.long), cap(r.spans))
			}
		}
	})
}

// BenchmarkReader parses the recorded Asterisk 20 event stream.
func BenchmarkReader(b *testing.B) {
	raw := rawEvents(b, "20")
	n, _ := readAll(b, NewReader(bytes.NewReader(raw)))
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r := NewReader(bytes.NewReader(raw))
		for {
			_, err := r.Next()
			if err != nil {
				break
			}
		}
	}
	b.ReportMetric(float64(len(n))*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
