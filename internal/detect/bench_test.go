package detect

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/event"
)

func readLines(tb testing.TB, paths ...string) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			tb.Fatalf("open %s: %v", p, err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			out = append(out, bytes.Clone(sc.Bytes()))
		}
		f.Close()
	}
	return out
}

func benchDetector(b *testing.B, name string, lines [][]byte) {
	d, err := New(name, Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
	if err != nil {
		b.Fatal(err)
	}
	var ev event.Event
	var size int64
	for _, l := range lines {
		size += int64(len(l)) + 1
		d.Detect(l, &ev) // warm the interning table
	}
	b.ReportAllocs()
	b.ResetTimer()
	matched := 0
	for i := 0; i < b.N; i++ {
		if d.Detect(lines[i%len(lines)], &ev) {
			matched++
		}
	}
	b.SetBytes(size / int64(len(lines)))
	_ = matched
}

// BenchmarkAsterisk: one line per op over the real Asterisk 20 logs (file,
// security and syslog formats; ~60% of the lines are events).
func BenchmarkAsterisk(b *testing.B) {
	dir := corpusDir + "/asterisk-20/log/"
	benchDetector(b, "asterisk", readLines(b, dir+"messages", dir+"security", dir+"syslog-local0.log", dir+"full"))
}

// addrInLine reports whether a appears literally in line as an address
// token (IPv6 in any spelling that parses to a).
func addrInLine(line []byte, a netip.Addr) bool {
	if a.Is4() && bytes.Contains(line, []byte(a.String())) {
		return true
	}
	start := -1
	for i := 0; i <= len(line); i++ {
		if i < len(line) && (isAddrByte(line[i]) && line[i] != '[' && line[i] != ']') {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			tok := line[start:i]
			for k := 0; k < len(tok); k++ {
				if k == 0 || tok[k-1] == ':' {
					if got, ok := parseAddr(tok[k:]); ok && got == a {
						return true
					}
					if got, _, ok := parseHostPort(tok[k:]); ok && got == a {
						return true
					}
				}
			}
			start = -1
		}
	}
	return false
}

func fuzzSeeds(f *testing.F) {
	for _, h := range hostileLines {
		f.Add([]byte(h.line))
	}
	for _, l := range conformanceLines(f, "asterisk", "sshd") {
		f.Add(l)
	}
	for _, lines := range rtCases() {
		for _, l := range lines {
			f.Add([]byte(l))
		}
	}
	f.Add([]byte(jsonLine("Nov 25 04:00:51", "NOTICE", "chan_sip.c", `Registration from '"J" <sip:2002@x>' failed for '203.0.113.5' - Wrong password`)))
	f.Add([]byte("[Nov 25 04:05:01] ERROR[12721] pjproject: \tsip_transport.c Error processing 10 bytes packet from UDP 203.0.113.5:5060 : x:"))
}

// addrWritten: the address appears in the line, or (a [json] line) in its
// unescaped text.
func addrWritten(line []byte, a netip.Addr) bool {
	if addrInLine(line, a) {
		return true
	}
	if len(line) > 0 && line[0] == '{' {
		if u, ok := jsonUnescape(nil, line); ok {
			return addrInLine(u, a)
		}
	}
	return false
}

func fuzzDetector(f *testing.F, name string) {
	fuzzSeeds(f)
	opts := Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }}
	if _, err := New(name, opts); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		// A fresh detector per input: sshd attributes a host-less failure to
		// the address its pid logged earlier, which is another line.
		d, _ := New(name, opts)
		var ev event.Event
		if !d.Detect(line, &ev) {
			return
		}
		if ev.Kind == event.KindNone {
			t.Fatalf("event with kind none: %q", line)
		}
		if ev.Kind == event.InjectionSuspect && ev.Addr.IsValid() {
			t.Fatalf("injection_suspect with an address: %q", line)
		}
		if ev.Addr.IsValid() && !addrWritten(line, ev.Addr) {
			t.Fatalf("address %v not written in the line: %q", ev.Addr, line)
		}
	})
}

// FuzzAsteriskStream: the input is a stream of lines read by one detector
// (multi-line state: packet dumps, cut fields, the header-form lock). Every
// event's address is written in its own line.
func FuzzAsteriskStream(f *testing.F) {
	for _, lines := range rtCases() {
		f.Add([]byte(strings.Join(lines, "\n")))
	}
	f.Add([]byte("[Nov 25 04:05:01] ERROR[1] pjproject: Error processing 3 bytes packet from UDP 203.0.113.5:5060 : x:\nab\n[Nov 25 04:05:01] NOTICE[1] acl.c: SIP ACL: Rejecting '192.0.2.1' due to a failure to pass ACL 'a'"))
	opts := Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }}
	f.Fuzz(func(t *testing.T, stream []byte) {
		d, _ := New("asterisk", opts)
		var ev event.Event
		for _, line := range bytes.Split(stream, []byte("\n")) {
			if !d.Detect(line, &ev) {
				continue
			}
			if ev.Kind == event.KindNone || ev.Kind == event.InjectionSuspect && ev.Addr.IsValid() {
				t.Fatalf("bad event %+v: %q", ev, line)
			}
			if ev.Addr.IsValid() && !addrWritten(line, ev.Addr) {
				t.Fatalf("address %v not written in the line: %q", ev.Addr, line)
			}
		}
	})
}

func FuzzAsterisk(f *testing.F) { fuzzDetector(f, "asterisk") }

// BenchmarkSSHD: one line per op over fail2ban's sshd sample log lines.
func BenchmarkSSHD(b *testing.B) {
	var lines [][]byte
	needConformance(b)
	for _, l := range readLines(b, conformanceDir+"/sshd") {
		if len(l) > 0 && l[0] != '#' {
			lines = append(lines, l)
		}
	}
	benchDetector(b, "sshd", lines)
}

// BenchmarkAuto: the auto detector over Asterisk and sshd lines mixed.
func BenchmarkAuto(b *testing.B) {
	dir := corpusDir + "/asterisk-20/log/"
	benchDetector(b, "auto", append(readLines(b, dir+"messages", dir+"security"), conformanceLines(b, "sshd")...))
}

func FuzzSSHD(f *testing.F) { fuzzDetector(f, "sshd") }
func FuzzAuto(f *testing.F) { fuzzDetector(f, "auto") }

// TestZeroAllocs: after warm-up (the interning table has seen the
// accounts), detecting allocates nothing, for every detector.
func TestZeroAllocs(t *testing.T) {
	dir := corpusDir + "/asterisk-20/log/"
	lines := append(readLines(t, dir+"messages", dir+"security", dir+"syslog-local0.log"), conformanceLines(t, "sshd")...)
	for _, h := range hostileLines {
		lines = append(lines, []byte(h.line))
	}
	for _, c := range rtCases() { // multi-line state: dumps, cut fields
		for _, l := range c {
			lines = append(lines, []byte(l))
		}
	}
	for _, name := range []string{"asterisk", "sshd", "auto"} {
		d, _ := New(name, Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
		var ev event.Event
		for _, l := range lines {
			d.Detect(l, &ev)
		}
		allocs := testing.AllocsPerRun(5, func() {
			for _, l := range lines {
				d.Detect(l, &ev)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per pass over %d lines", name, allocs, len(lines))
		}
	}
}

// BenchmarkAsteriskPerSource: like BenchmarkAsterisk, but each log file is
// read by its own detector (a detector locks to its source's header form),
// the files interleaved line by line.
func BenchmarkAsteriskPerSource(b *testing.B) {
	dir := corpusDir + "/asterisk-20/log/"
	var srcs [][][]byte
	var dets []Detector
	var size, n int64
	for _, f := range []string{"messages", "security", "syslog-local0.log", "full"} {
		ls := readLines(b, dir+f)
		d, _ := New("asterisk", Options{Location: time.UTC, Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }})
		var ev event.Event
		for _, l := range ls {
			size += int64(len(l)) + 1
			n++
			d.Detect(l, &ev)
		}
		srcs = append(srcs, ls)
		dets = append(dets, d)
	}
	var ev event.Event
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := i % len(srcs)
		ls := srcs[s]
		dets[s].Detect(ls[(i/len(srcs))%len(ls)], &ev)
	}
	b.SetBytes(size / n)
}
