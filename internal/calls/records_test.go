package calls

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/source"
)

// q quotes a field as Asterisk's cdr_csv and CSV_QUOTE do: in double
// quotes, a quote doubled, everything else (newlines, CR, NUL) raw.
func q(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// cdrRow is a Master.csv row as cdr_csv writes it (loguniqueid=yes,
// loguserfield=yes: 18 fields; duration and billsec unquoted).
func cdrRow(src, dst, clid, channel, uniqueid string) string {
	f := []string{q(""), q(src), q(dst), q("from-internal"), q(clid), q(channel), q("PJSIP/carrier-00000001"), q("Dial"),
		q("PJSIP/carrier,30"), q("2026-11-25 04:00:36"), q("2026-11-25 04:00:36"), q("2026-11-25 04:00:40"), "4", "4",
		q("ANSWERED"), q("DOCUMENTATION"), q(uniqueid), q("")}
	return strings.Join(f, ",") + "\n"
}

// celRow is a cel_custom row of the legacy mapping (20 fields).
func celRow(event, cidName, cidNum, exten, channel, uniqueid string) string {
	f := []string{event, "1795579390.665133", cidName, cidNum, "", "", "", exten, "from-internal", channel, "", "", "3", "",
		uniqueid, uniqueid, "", "", "", ""}
	for i := range f {
		f[i] = q(f[i])
	}
	return strings.Join(f, ",") + "\n"
}

// forgedCDR is the red team's forged row: a satellite call by 1001 that a
// line reader finds inside a quoted field.
const forgedCDR = `,1001,+88216123456,from-internal,x,PJSIP/1001-00000099,x,Dial,x,2026-11-25 04:00:36,2026-11-25 04:00:36,2026-11-25 04:05:36,300,300,ANSWERED,DOCUMENTATION,1795579999.9,x`

// forgedCEL is a CHAN_START of 1002 calling a satellite number.
// Unquoted: cel_custom's CSV_QUOTE would double any quote of the attacker.
const forgedCEL = `CHAN_START,1795579390.665133,Bob,1002,,,,+88216123456,from-internal,PJSIP/1002-00000099,,,3,,1795579999.9,1795579999.9,,,,`

// outcome is what a followed file yields: the (extension, channel) pairs
// calls were attributed to, the records rejected as malformed, and the
// records the follower skipped (over-long) or dropped (cut at EOF).
type outcome struct {
	Calls    []string // "ext channel dialled"
	Rejected int
	Long     int
	Cut      int
}

// followRecords runs the chunks through the CSV follower (the splitter the
// daemon's CDR and CEL followers use) and the record handler, as the daemon
// does; cel selects the CEL path.
func followRecords(t testing.TB, cel bool, chunks ...string) outcome {
	var rs []io.Reader
	for _, c := range chunks {
		rs = append(rs, strings.NewReader(c))
	}
	src := source.NewReader("Master.csv", io.MultiReader(rs...)).WithCSV()
	tr := NewTracker(Config{})
	var o outcome
	err := src.Run(context.Background(), func(l source.Line) error {
		got, err := handleRecord(tr, cel, string(l.Data))
		if err != nil {
			o.Rejected++
		}
		o.Calls = append(o.Calls, got...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	o.Long, o.Cut = int(src.Stats().LongSkipped), int(src.Stats().CutRecords)
	return o
}

// handleRecord is the daemon's per-record path (fraud.Monitor.HandleCDRLine
// / HandleCELLine without the engine).
func handleRecord(tr *Tracker, cel bool, line string) ([]string, error) {
	rec, err := SplitCDRLine(line)
	if err != nil {
		return nil, err
	}
	if cel {
		m, at, ok, err := CELMessage(rec)
		if err != nil || !ok {
			return nil, err
		}
		if u, ok := tr.Handle(m, at); ok && u.Kind == CallStarted {
			return []string{u.Call.Extension + " " + u.Call.Channel + " " + u.Call.Dialled}, nil
		}
		return nil, nil
	}
	u, ok, err := tr.HandleCDR(rec, time.UTC)
	if err != nil || !ok {
		return nil, err
	}
	return []string{u.Call.Extension + " " + u.Call.Channel + " " + u.Call.Dialled}, nil
}

// lineOutcome is what reading the same bytes line by line (the old
// followers) attributed: it shows a case really is hostile.
func lineOutcome(cel bool, data string) []string {
	tr := NewTracker(Config{})
	var calls []string
	for _, line := range strings.Split(data, "\n") {
		got, _ := handleRecord(tr, cel, strings.TrimSuffix(line, "\r"))
		calls = append(calls, got...)
	}
	return calls
}

func TestHostileRecords(t *testing.T) {
	genuine := cdrRow("1003", "2125550142", `"Carol" <1003>`, "PJSIP/1003-0000000a", "1795579243.2")
	cut := cdrRow("1005", "2125550143", "Eve\nline two", "PJSIP/1005-0000000c", "1795579250.1")
	cutAt := strings.Index(cut, "\n") + 1 // inside the quoted clid, right after its newline
	big := strings.Repeat("9", 9<<10)
	for _, tt := range []struct {
		name   string
		cel    bool
		chunks []string
		want   outcome
		forged string // what a line reader would wrongly attribute (checked to be there)
	}{
		{name: "newline in dst forges a satellite call by 1001",
			chunks: []string{cdrRow("+15551230000", "5551234567\n"+forgedCDR+"\n", "", "PJSIP/carrier-0000005e", "1795579200.1")},
			want:   outcome{Calls: []string{"carrier PJSIP/carrier-0000005e 5551234567\n" + forgedCDR + "\n"}},
			forged: "1001 PJSIP/1001-00000099 +88216123456"},
		{name: "newline in a CEL CHAN_START caller-ID name forges 1002", cel: true,
			chunks: []string{celRow("CHAN_START", "Mallory\n"+forgedCEL+"\n", "+15551230000", "2125550100", "PJSIP/carrier-0000005f", "1795579300.1")},
			want:   outcome{Calls: []string{"carrier PJSIP/carrier-0000005f 2125550100"}},
			forged: "1002 PJSIP/1002-00000099 +88216123456"},
		{name: "newline in caller ID (clid) of a CDR",
			chunks: []string{cdrRow("1003", "2125550142", "x\n"+forgedCDR+"\n", "PJSIP/1003-0000000a", "1795579243.2")},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 2125550142"}},
			forged: "1001 PJSIP/1001-00000099 +88216123456"},
		{name: "doubled quotes stay data",
			chunks: []string{cdrRow("1003", `555"",PJSIP/1001-00000099,"`+"\n"+`"`, "", "PJSIP/1003-0000000a", "1.1")},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a " + `555"",PJSIP/1001-00000099,"` + "\n" + `"`}}},
		{name: "undoubled quote (not cdr_csv): rejected, the next record still read",
			chunks: []string{`"","1003","555"1001","from-internal","","PJSIP/1001-00000099","","Dial","","2026-11-25 04:00:36","","2026-11-25 04:00:40",4,0,"NO ANSWER","DOCUMENTATION","1.1",""` + "\n" + genuine},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 2125550142"}, Rejected: 1}},
		{name: "CR LF inside a field and at the end",
			chunks: []string{strings.TrimSuffix(cdrRow("1003", "555\r\n"+forgedCDR+"\r\n", "", "PJSIP/1003-0000000a", "1.1"), "\n") + "\r\n"},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 555\n" + forgedCDR + "\n"}},
			forged: "1001 PJSIP/1001-00000099 +88216123456"},
		{name: "NUL and control bytes in dst are data",
			chunks: []string{cdrRow("1003", "555\x00\x01\x1b[2J\x7f", "", "PJSIP/1003-0000000a", "1.1")},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 555\x00\x01\x1b[2J\x7f"}}},
		{name: "control byte in the channel: rejected",
			chunks: []string{cdrRow("1001", "2125550142", "", "PJSIP/1001\x00-00000001", "1.1")},
			want:   outcome{Rejected: 1}},
		{name: "9 KB dst with a forged record inside",
			chunks: []string{cdrRow("1003", big+"\n"+forgedCDR+"\n"+big, "", "PJSIP/1003-0000000a", "1.1")},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a " + big + "\n" + forgedCDR + "\n" + big}},
			forged: "1001 PJSIP/1001-00000099 +88216123456"},
		{name: "70 KB record skipped whole, never re-read as lines",
			chunks: []string{cdrRow("1003", strings.Repeat(big, 8)+"\n"+forgedCDR+"\n", "", "PJSIP/1003-0000000a", "1.1"), genuine},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 2125550142"}, Long: 1},
			forged: "1001 PJSIP/1001-00000099 +88216123456"},
		{name: "too few fields (15)",
			chunks: []string{`"","1001","+88216123456","from-internal","","PJSIP/1001-00000099","","Dial","","2026-11-25 04:00:36","","2026-11-25 04:00:40",4,0,"NO ANSWER"` + "\n"},
			want:   outcome{Rejected: 1}},
		{name: "too many fields (19)",
			chunks: []string{strings.TrimSuffix(cdrRow("1001", "+88216123456", "", "PJSIP/1001-00000099", "1.1"), "\n") + `,"extra"` + "\n"},
			want:   outcome{Rejected: 1}},
		{name: "channel of another extension: attributed to the channel's, never to src",
			chunks: []string{cdrRow("1001", "+88216123456", `"Alice" <1001>`, "PJSIP/1002-00000001", "1.1")},
			want:   outcome{Calls: []string{"1002 PJSIP/1002-00000001 +88216123456"}}},
		{name: "empty channel: no fallback to src",
			chunks: []string{cdrRow("1001", "+88216123456", "", "", "1.1")},
			want:   outcome{Rejected: 1}},
		{name: "malformed channels rejected",
			chunks: []string{
				cdrRow("1001", "+88216123456", "", "PJSIP/1001 x-00000001", "1.1"),
				cdrRow("1001", "+88216123456", "", "PJSIP/1001,1-00000001", "1.2"),
				cdrRow("1001", "+88216123456", "", "PJSIP/1001-0000001", "1.3"),
				cdrRow("1001", "+88216123456", "", "PJSIP/1001-0000001G", "1.4"),
				cdrRow("1001", "+88216123456", "", "DAHDI/1-1", "1.5"),
				cdrRow("1001", "+88216123456", "", "PJSIP/-00000001", "1.6"),
			},
			want: outcome{Rejected: 6}},
		{name: "Local channel ignored, not rejected; IAX2 and SIP attributed",
			chunks: []string{
				cdrRow("1001", "+88216123456", "", "Local/1001@from-internal-00000001;1", "1.1"),
				cdrRow("2001", "2125550142", "", "SIP/2001-0000000b", "1.2"),
				cdrRow("trunk", "2125550142", "", "IAX2/trunk-4711", "1.3"),
			},
			want: outcome{Calls: []string{"2001 SIP/2001-0000000b 2125550142", "trunk IAX2/trunk-4711 2125550142"}}},
		{name: "cut record at EOF waits, never read",
			chunks: []string{genuine, cut[:cutAt]},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 2125550142"}, Cut: 1}},
		{name: "cut record completed later: read once, whole",
			chunks: []string{genuine, cut[:cutAt], cut[cutAt:]},
			want:   outcome{Calls: []string{"1003 PJSIP/1003-0000000a 2125550142", "1005 PJSIP/1005-0000000c 2125550143"}}},
		{name: "record with quotes closed but no line end at EOF is not complete",
			chunks: []string{strings.TrimSuffix(genuine, "\n")},
			want:   outcome{Cut: 1}},
		{name: "an unclosed quote holds what follows (bounded), never a line of it", // a non-Asterisk writer
			chunks: []string{`"","1003","555` + "\n" + forgedCDR + "\n"},
			want:   outcome{Cut: 1},
			forged: "1001 PJSIP/1001-00000099 +88216123456"},
		{name: "CEL with 19 and 21 fields rejected", cel: true,
			chunks: []string{
				strings.TrimSuffix(celRow("CHAN_START", "x", "1002", "+88216123456", "PJSIP/1002-00000001", "1.1"), `,""`+"\n") + "\n",
				strings.TrimSuffix(celRow("CHAN_START", "x", "1002", "+88216123456", "PJSIP/1002-00000001", "1.2"), "\n") + `,""` + "\n",
			},
			want: outcome{Rejected: 2}},
		{name: "CEL channel carrying a newline rejected", cel: true,
			chunks: []string{celRow("CHAN_START", "x", "1002", "+88216123456", "PJSIP/1002\n-00000001", "1.1")},
			want:   outcome{Rejected: 1}},
		{name: "CEL uniqueid with a control byte rejected", cel: true,
			chunks: []string{celRow("CHAN_START", "x", "1002", "+88216123456", "PJSIP/1002-00000001", "1.1\x1b")},
			want:   outcome{Rejected: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := followRecords(t, tt.cel, tt.chunks...)
			if !slices.Equal(got.Calls, tt.want.Calls) || got.Rejected != tt.want.Rejected || got.Long != tt.want.Long || got.Cut != tt.want.Cut {
				t.Errorf("got %s\nwant %s", show(got), show(tt.want))
			}
			if tt.forged != "" && !slices.Contains(lineOutcome(tt.cel, strings.Join(tt.chunks, "")), tt.forged) {
				t.Errorf("the case does not forge %q for a line reader: not a test of record reading", tt.forged)
			}
		})
	}
}

func show(o outcome) string {
	var b strings.Builder
	for _, c := range o.Calls {
		fmt.Fprintf(&b, "%.120q ", c)
	}
	fmt.Fprintf(&b, "rejected=%d long=%d cut=%d", o.Rejected, o.Long, o.Cut)
	return b.String()
}

// allowedPairs lists the "ext channel" pairs of the complete, well-formed
// records a fuzz stream holds.
func fuzzStream(dst, name string, cutAt uint16) (part1, part2 string, allowed []string, last string) {
	a := cdrRow("1003", dst, name, "PJSIP/1003-0000000a", "1.1")
	b := cdrRow("1004", name, dst, "PJSIP/1004-0000000b", "1.2")
	c := cdrRow("1005", dst, name, "PJSIP/1005-0000000c", "1.3")
	at := int(cutAt) % len(c) // c cut before its final '\n': incomplete until part2
	return a + b + c[:at], c[at:], []string{"1003 PJSIP/1003-0000000a", "1004 PJSIP/1004-0000000b"}, "1005 PJSIP/1005-0000000c"
}

func pair(call string) string {
	f := strings.SplitN(call, " ", 3)
	return f[0] + " " + f[1]
}

// FuzzCDR: attacker text (newlines, quotes, CR, NUL, 9 KB) in the dialled
// number and caller ID of genuine rows, and a row cut at EOF, never yield
// an (extension, channel) pair other than those of the complete genuine
// records, and every genuine record yields exactly its own.
func FuzzCDR(f *testing.F) {
	f.Add("5551234567\n"+forgedCDR+"\n", "Alice", uint16(10))
	f.Add(`"`, "\n\"\n,", uint16(300))
	f.Add("\r\n\x00", strings.Repeat("\n"+forgedCDR, 60), uint16(0))
	f.Fuzz(func(t *testing.T, dst, name string, cutAt uint16) {
		part1, part2, allowed, last := fuzzStream(dst, name, cutAt)
		checkFuzz(t, false, part1, part2, allowed, last, dialledOK(dst) && dialledOK(name))
	})
}

// FuzzCEL: the same through CEL CHAN_START rows (caller-ID name and
// dialled extension are the caller's text).
func FuzzCEL(f *testing.F) {
	f.Add("Mallory\n"+forgedCEL+"\n", "2125550100", uint16(10))
	f.Add(`""`, "\"\r\n", uint16(7))
	f.Fuzz(func(t *testing.T, name, exten string, cutAt uint16) {
		a := celRow("CHAN_START", name, "1003", exten, "PJSIP/1003-0000000a", "1.1")
		b := celRow("CHAN_START", exten, "1004", name, "PJSIP/1004-0000000b", "1.2")
		c := celRow("CHAN_START", name, "1005", exten, "PJSIP/1005-0000000c", "1.3")
		at := int(cutAt) % len(c)
		checkFuzz(t, true, a+b+c[:at], c[at:], []string{"1003 PJSIP/1003-0000000a", "1004 PJSIP/1004-0000000b"}, "1005 PJSIP/1005-0000000c",
			dialledOK(exten) && dialledOK(name))
	})
}

func checkFuzz(t *testing.T, cel bool, part1, part2 string, allowed []string, last string, allDialled bool) {
	t.Helper()
	long := len(part1)+len(part2) > 3*source.MaxLine/2 // a record may exceed the bound: skipped, not attributed
	// Cut at EOF: the third record is never read.
	o := followRecords(t, cel, part1)
	for _, c := range o.Calls {
		if !slices.Contains(allowed, pair(c)) {
			t.Fatalf("cut stream attributed %.100q (allowed %q)", c, allowed)
		}
	}
	if o.Rejected != 0 {
		t.Fatalf("a genuine record rejected: %s", show(o))
	}
	// Completed: the third record is read once, whole.
	o = followRecords(t, cel, part1, part2)
	seen := map[string]int{}
	for _, c := range o.Calls {
		p := pair(c)
		if !slices.Contains(allowed, p) && p != last {
			t.Fatalf("attributed %.100q (allowed %q and %q)", c, allowed, last)
		}
		seen[p]++
	}
	for _, p := range append(allowed, last) {
		if seen[p] > 1 || (allDialled && !long && o.Long == 0 && seen[p] != 1) {
			t.Fatalf("%s attributed %d times: %s", p, seen[p], show(o))
		}
	}
	if o.Rejected != 0 || o.Cut != 0 {
		t.Fatalf("genuine records rejected or cut: %s", show(o))
	}
}
