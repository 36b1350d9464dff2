package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/source"
)

// testLogCommands returns the test-log command: what pbxguard makes of a
// log file, like fail2ban-regex for fail2ban users.
func testLogCommands() []*cobra.Command {
	var o testLogOpts
	cmd := &cobra.Command{
		Use:   "test-log [flags] FILE...",
		Short: "Show what pbxguard detects in log files (- reads stdin)",
		Long: `test-log runs a detector over log files and reports what it found.

Formats:
  text    lines, matched lines, events per kind, top addresses, lines/s
  json    {"lines":N,"matched":M,"by_addr":{"ADDR":n},"by_kind":{"kind":n},"seconds":S}
  events  one JSON object per event: file, line, time, addr, port, detector, kind, account
  addrs   one "ADDR COUNT" line per address (failures only)

by_addr and addrs count only failure kinds (the ones a jail counts);
by_kind counts every kind, including auth_success, challenge_sent and
injection_suspect (an event whose address could not be trusted).`,
		Example: `  pbxguard test-log /var/log/asterisk/messages
  pbxguard test-log --detector auto --format json /var/log/asterisk/security /var/log/auth.log
  journalctl -u asterisk -o short | pbxguard test-log -`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErr("test-log: name at least one log file (or - for stdin)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTestLog(cmd.OutOrStdout(), cmd.ErrOrStderr(), cmd.InOrStdin(), o, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.detector, "detector", "asterisk", "detector: "+strings.Join(detect.Names(), ", "))
	f.StringVar(&o.detector, "filter", "asterisk", "alias of --detector")
	_ = f.MarkHidden("filter")
	f.StringVar(&o.format, "format", "text", "output: text, json, events or addrs")
	addJSONFlag(cmd, &o.format)
	f.BoolVar(&o.missed, "missed", false, "also print lines that look like failures but matched nothing")
	f.StringVar(&o.input, "input", "auto", "input: log, pcap (a capture, read through the SIP sensor), or auto (pcap when the file starts like one)")
	f.UintSliceVar(&o.sipPorts, "sip-port", []uint{5060}, "the PBX's SIP ports in a pcap input (UDP and TCP)")
	return []*cobra.Command{cmd}
}

type testLogOpts struct {
	detector string
	format   string
	missed   bool
	input    string
	sipPorts []uint
}

// testLogResult accumulates counts over all files.
type testLogResult struct {
	lines   int64
	matched int64
	byKind  [event.NumKinds]int64
	byAddr  map[netip.Addr]int64
	missed  int64
}

func runTestLog(stdout, stderr io.Writer, stdin io.Reader, o testLogOpts, files []string) error {
	if o.format == "pcap" { // the spelling of the first documentation: input pcap, output text
		o.format, o.input = "text", "pcap"
	}
	switch o.format {
	case "text", "json", "events", "addrs":
	default:
		return usageErr("test-log: --format %q: use text, json, events or addrs", o.format)
	}
	switch o.input {
	case "", "auto", "log", "pcap":
	default:
		return usageErr("test-log: --input %q: use auto, log or pcap", o.input)
	}
	det, err := detect.New(o.detector, detect.Options{})
	if err != nil {
		return usageErr("test-log: --detector %q: use one of %s", o.detector, strings.Join(detect.Names(), ", "))
	}
	// Open everything first: an unreadable file is a usage error before any output.
	readers := make([]io.Reader, len(files))
	for i, name := range files {
		if name == "-" {
			readers[i] = stdin
			continue
		}
		fh, err := os.Open(name)
		if err != nil {
			return usageErr("test-log: %v (check the path and that you may read it)", err)
		}
		if st, err := fh.Stat(); err == nil && st.IsDir() {
			fh.Close()
			return usageErr("test-log: %s is a directory: name the log files in it", name)
		}
		defer fh.Close()
		readers[i] = fh
	}
	// Captures go through the SIP sensor, each file by its own (the
	// sensor pairs requests with answers within one capture).
	pcaps := make([]*bufio.Reader, len(readers))
	for i, r := range readers {
		if o.input == "log" {
			continue
		}
		br := bufio.NewReaderSize(r, 1<<16)
		readers[i] = br
		if o.input == "pcap" || isPcap(br) {
			pcaps[i] = br
		}
	}

	out := bufio.NewWriterSize(stdout, 256<<10)
	defer out.Flush()
	res := &testLogResult{byAddr: make(map[netip.Addr]int64, 1024)}
	start := time.Now()
	var buf []byte
	// Counting only (json, addrs, text without --missed) with the asterisk
	// detector: split the input over the cores, one detector per chunk.
	// (The detector's only state between lines is its header form and the
	// few lines after a packet dump or a newline-cut field; a chunk starts
	// at a line start with that state fresh, so a dump that straddles a
	// chunk boundary may count differently than in sequential mode.)
	parallel := o.format != "events" && !o.missed && o.detector == "asterisk" && runtime.GOMAXPROCS(0) > 1
	for i, r := range readers {
		var err error
		if pcaps[i] != nil {
			err = scanPcap(pcaps[i], files[i], o, res, out)
		} else if parallel {
			err = countParallel(r, o, res)
		} else {
			// one detector per file: a detector locks to its source's
			// header form and carries per-source state.
			if i > 0 {
				det, _ = detect.New(o.detector, detect.Options{})
			}
			err = scanSequential(r, files[i], det, o, res, out, stderr)
		}
		if err != nil {
			return failErr(fmt.Errorf("test-log: reading %s: %w", files[i], err))
		}
	}
	secs := time.Since(start).Seconds()
	switch o.format {
	case "json":
		writeTestLogJSON(out, res, secs)
	case "addrs":
		for _, a := range sortedAddrs(res.byAddr) {
			buf = a.AppendTo(buf[:0])
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, res.byAddr[a], 10)
			buf = append(buf, '\n')
			out.Write(buf)
		}
	case "text":
		writeTestLogText(out, res, secs, det.Name(), o.missed)
	}
	return nil
}

// scanSequential reads r line by line in order (events and --missed need
// the order; stateful detectors need one detector for the whole stream).
func scanSequential(r io.Reader, name string, det detect.Detector, o testLogOpts, res *testLogResult, out *bufio.Writer, stderr io.Writer) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var ev event.Event
	var buf []byte
	var lineNo int64
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than 1 MiB: Asterisk and sshd never write one.
			// Count it and skip it: a cut line ends in attacker text, and
			// the parsers trust the end of a line.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return err
			}
			lineNo++
			res.lines++
			if err == io.EOF {
				return nil
			}
			continue
		}
		if len(line) > 0 {
			lineNo++
			res.lines++
			if det.Detect(line, &ev) {
				res.add(&ev)
				if o.format == "events" {
					buf = appendEventJSON(buf[:0], name, lineNo, det.Name(), &ev)
					out.Write(buf)
				}
			} else if o.missed && looksLikeFailure(line) {
				res.missed++
				buf = append(buf[:0], "missed "...)
				buf = append(buf, name...)
				buf = append(buf, ':')
				buf = strconv.AppendInt(buf, lineNo, 10)
				buf = append(buf, ": "...)
				buf = appendEscaped(buf, bytes.TrimRight(line, "\r\n"))
				buf = append(buf, '\n')
				if o.format == "text" {
					out.Write(buf)
				} else {
					stderr.Write(buf)
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (res *testLogResult) add(ev *event.Event) {
	res.matched++
	res.byKind[ev.Kind]++
	if ev.Kind.IsFailure() && ev.Addr.IsValid() {
		res.byAddr[ev.Addr]++
	}
}

func (res *testLogResult) merge(o *testLogResult) {
	res.lines += o.lines
	res.matched += o.matched
	res.missed += o.missed
	for k, n := range o.byKind {
		res.byKind[k] += n
	}
	for a, n := range o.byAddr {
		res.byAddr[a] += n
	}
}

// appendEscaped appends line with control bytes (a log line may carry an
// attacker's ESC sequences) written as \xNN, tab as \t and the backslash
// doubled, so that --missed output cannot drive the terminal.
func appendEscaped(buf, line []byte) []byte {
	const hex = "0123456789abcdef"
	for _, c := range line {
		switch {
		case c == '\\':
			buf = append(buf, '\\', '\\')
		case c == '\t':
			buf = append(buf, '\\', 't')
		case c < 0x20 || c == 0x7f:
			buf = append(buf, '\\', 'x', hex[c>>4], hex[c&15])
		default:
			buf = append(buf, c)
		}
	}
	return buf
}

// chunkSize is the unit of work of countParallel; memory is bounded by
// (workers + 2) chunks whatever the file size.
const chunkSize = 1 << 20

// countParallel counts events in r with one detector per worker
// (source.ParallelChunks); a line longer than a chunk is counted and
// skipped.
func countParallel(r io.Reader, o testLogOpts, res *testLogResult) error {
	workers := min(runtime.GOMAXPROCS(0), 4)
	locals := make([]*testLogResult, workers)
	for i := range locals {
		locals[i] = &testLogResult{byAddr: make(map[netip.Addr]int64, 1024)}
	}
	evs := make([]event.Event, workers)
	err := source.ParallelChunks(r, workers, chunkSize, func(w int, chunk []byte) {
		local, ev := locals[w], &evs[w]
		det, _ := detect.New(o.detector, detect.Options{})
		source.EachLine(chunk, func(line []byte) {
			local.lines++
			if det.Detect(line, ev) {
				local.add(ev)
			}
		})
	}, func() { res.lines++ })
	for _, l := range locals {
		res.merge(l)
	}
	return err
}

// looksLikeFailure is the --missed heuristic: words servers use when they
// refuse someone.
var failureWords = []string{"fail", "Fail", "reject", "Reject", "denied", "Denied", "invalid", "Invalid", "not allowed", "SecurityEvent", "Wrong password", "ACL"}

func looksLikeFailure(line []byte) bool {
	for _, w := range failureWords {
		if bytes.Contains(line, []byte(w)) {
			return true
		}
	}
	return false
}

func sortedAddrs(m map[netip.Addr]int64) []netip.Addr {
	addrs := make([]netip.Addr, 0, len(m))
	for a := range m {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	return addrs
}

func writeTestLogJSON(w *bufio.Writer, res *testLogResult, secs float64) {
	b := make([]byte, 0, 64+len(res.byAddr)*32)
	b = append(b, `{"lines":`...)
	b = strconv.AppendInt(b, res.lines, 10)
	b = append(b, `,"matched":`...)
	b = strconv.AppendInt(b, res.matched, 10)
	b = append(b, `,"by_addr":{`...)
	for i, a := range sortedAddrs(res.byAddr) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = a.AppendTo(b)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, res.byAddr[a], 10)
	}
	b = append(b, `},"by_kind":{`...)
	first := true
	for k, n := range res.byKind {
		if n == 0 {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, event.Kind(k).String()...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, n, 10)
	}
	b = append(b, `},"seconds":`...)
	b = strconv.AppendFloat(b, secs, 'f', 3, 64)
	b = append(b, "}\n"...)
	w.Write(b)
}

func writeTestLogText(w *bufio.Writer, res *testLogResult, secs float64, det string, missed bool) {
	fmt.Fprintf(w, "detector:  %s\n", det)
	fmt.Fprintf(w, "lines:     %d\n", res.lines)
	fmt.Fprintf(w, "matched:   %d\n", res.matched)
	if missed {
		fmt.Fprintf(w, "missed:    %d (lines that look like failures but matched nothing)\n", res.missed)
	}
	fmt.Fprintln(w, "by kind:")
	for k, n := range res.byKind {
		if n > 0 {
			note := ""
			if !event.Kind(k).IsFailure() {
				note = "  (not counted against the address)"
			}
			fmt.Fprintf(w, "  %-18s %d%s\n", event.Kind(k).String(), n, note)
		}
	}
	addrs := sortedAddrs(res.byAddr)
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		switch x, y := res.byAddr[a], res.byAddr[b]; {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return 0
	})
	fmt.Fprintf(w, "addresses: %d with failures\n", len(addrs))
	for i, a := range addrs {
		if i == 10 {
			fmt.Fprintf(w, "  … %d more (--format addrs lists them all)\n", len(addrs)-10)
			break
		}
		fmt.Fprintf(w, "  %-40s %d\n", a, res.byAddr[a])
	}
	rate := 0.0
	if secs > 0 {
		rate = float64(res.lines) / secs
	}
	fmt.Fprintf(w, "time:      %.3f s (%.0f lines/s)\n", secs, rate)
}

// appendEventJSON writes one event as a JSON line without allocating.
func appendEventJSON(b []byte, file string, line int64, det string, ev *event.Event) []byte {
	b = append(b, `{"file":`...)
	b = appendJSONString(b, file)
	b = append(b, `,"line":`...)
	b = strconv.AppendInt(b, line, 10)
	b = append(b, `,"time":"`...)
	b = ev.Time.AppendFormat(b, time.RFC3339)
	b = append(b, '"')
	if ev.Addr.IsValid() {
		b = append(b, `,"addr":"`...)
		b = ev.Addr.AppendTo(b)
		b = append(b, '"')
	}
	if ev.Port != 0 {
		b = append(b, `,"port":`...)
		b = strconv.AppendUint(b, uint64(ev.Port), 10)
	}
	b = append(b, `,"detector":`...)
	b = appendJSONString(b, det)
	b = append(b, `,"kind":"`...)
	b = append(b, ev.Kind.String()...)
	b = append(b, '"')
	if ev.Account != "" {
		b = append(b, `,"account":`...)
		b = appendJSONString(b, ev.Account)
	}
	b = append(b, "}\n"...)
	return b
}

// appendJSONString quotes s for JSON; invalid UTF-8 becomes U+FFFD (account
// names are attacker text).
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
