package calls

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// CDR CSV columns, in the order cdr_csv writes them to Master.csv. The last
// two exist only with loguniqueid=yes and loguserfield=yes.
const (
	cdrAccountCode = iota
	cdrSrc
	cdrDst
	cdrDContext
	cdrCLID
	cdrChannel
	cdrDstChannel
	cdrLastApp
	cdrLastData
	cdrStart
	cdrAnswer
	cdrEnd
	cdrDuration
	cdrBillsec
	cdrDisposition
	cdrAMAFlags
	cdrUniqueID
	cdrUserField
	// cdr_csv writes 16 fields, 17 with loguniqueid=yes or
	// loguserfield=yes, 18 with both (cdr.conf [csv]); any other count is
	// not a Master.csv record.
	cdrMinFields = cdrAMAFlags + 1
	cdrMaxFields = cdrUserField + 1
)

// endpointTechs are the channel technologies whose channel name is
// <tech>/<endpoint>-<sequence>: the calls an endpoint (a phone, a trunk)
// places. IAX2 numbers its channels in decimal, the others in 8 hex digits.
var endpointTechs = [...]string{"PJSIP", "SIP", "IAX2"}

// nonEndpointTechs are technologies whose channels are not an endpoint's
// (Local/…, conference and announcer channels): their rows are not calls
// anybody placed, and are ignored rather than rejected.
var nonEndpointTechs = [...]string{"Local", "Message", "Announcer", "CBAnn", "CBRec", "Recorder", "Multicast", "Surrogate", "ConfBridge", "Bridge"}

// EndpointChannel splits a channel name Asterisk gives an endpoint's
// channel, "PJSIP/1004-0000001a", "SIP/2001-00000003" or "IAX2/trunk-1234",
// into its technology and endpoint. It is strict: the endpoint is a plain
// name (letters, digits, "._+@:~-", at most 80 bytes) and the sequence is
// what Asterisk writes (8 lowercase hex digits, IAX2: 1-5 decimal digits),
// so a value carrying anything else (a newline, a comma, a quote, a space)
// is never taken as an endpoint's channel. ok=false otherwise; other
// reports whether the channel is of a technology that is not an endpoint
// (Local/…): such rows are to be ignored, not counted as malformed.
func EndpointChannel(ch string) (tech, endpoint string, ok, other bool) {
	slash := strings.IndexByte(ch, '/')
	if slash <= 0 {
		return "", "", false, false
	}
	tech, rest := ch[:slash], ch[slash+1:]
	for _, t := range nonEndpointTechs {
		if tech == t {
			return tech, "", false, true
		}
	}
	known := false
	for _, t := range endpointTechs {
		if tech == t {
			known = true
			break
		}
	}
	dash := strings.LastIndexByte(rest, '-')
	if !known || dash <= 0 || dash > 80 {
		return "", "", false, false
	}
	endpoint, seq := rest[:dash], rest[dash+1:]
	for i := 0; i < len(endpoint); i++ {
		c := endpoint[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._+@:~-", c) >= 0) {
			return "", "", false, false
		}
	}
	if tech == "IAX2" {
		if len(seq) < 1 || len(seq) > 5 {
			return "", "", false, false
		}
		for i := 0; i < len(seq); i++ {
			if seq[i] < '0' || seq[i] > '9' {
				return "", "", false, false
			}
		}
		return tech, endpoint, true, false
	}
	if len(seq) != 8 {
		return "", "", false, false
	}
	for i := 0; i < len(seq); i++ {
		if c := seq[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", "", false, false
		}
	}
	return tech, endpoint, true, false
}

// plain reports whether s holds no control byte (a field Asterisk fills
// itself, never with a caller's text).
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// ParseCDR turns one Master.csv record into an ended call. loc is the zone
// the times were written in (cdr.conf usegmtime=no: the PBX's local zone).
//
// The record must be cdr_csv's: 16 to 18 fields, times, numbers,
// disposition and AMA flags as Asterisk writes them, and a channel that is
// an endpoint's ("PJSIP/1004-0000001a", see EndpointChannel). The call is
// attributed to the endpoint named in that channel and to nothing else
// (never to src, the caller ID, which callers choose). Rows for channels
// that are not an endpoint (Local/…) are returned with ok=false and no
// error; any other malformed record is an error (counted by the tracker).
func ParseCDR(rec []string, loc *time.Location) (c Call, ok bool, err error) {
	if len(rec) < cdrMinFields || len(rec) > cdrMaxFields {
		return Call{}, false, fmt.Errorf("cdr: %d fields, want 16 to 18 (accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags[,uniqueid][,userfield])", len(rec))
	}
	if loc == nil {
		loc = time.UTC
	}
	const layout = "2006-01-02 15:04:05"
	start, err := time.ParseInLocation(layout, rec[cdrStart], loc)
	if err != nil {
		return Call{}, false, fmt.Errorf("cdr: start %q is not a time (want %s): %w", rec[cdrStart], layout, err)
	}
	end, err := time.ParseInLocation(layout, rec[cdrEnd], loc)
	if err != nil {
		return Call{}, false, fmt.Errorf("cdr: end %q is not a time (want %s): %w", rec[cdrEnd], layout, err)
	}
	var answer time.Time
	if rec[cdrAnswer] != "" {
		if answer, err = time.ParseInLocation(layout, rec[cdrAnswer], loc); err != nil {
			return Call{}, false, fmt.Errorf("cdr: answer %q is not a time (want %s): %w", rec[cdrAnswer], layout, err)
		}
	}
	if d, err := strconv.Atoi(rec[cdrDuration]); err != nil || d < 0 {
		return Call{}, false, fmt.Errorf("cdr: duration %q is not a number of seconds", rec[cdrDuration])
	}
	billsec, err := strconv.Atoi(rec[cdrBillsec])
	if err != nil || billsec < 0 {
		return Call{}, false, fmt.Errorf("cdr: billsec %q is not a number of seconds", rec[cdrBillsec])
	}
	switch rec[cdrDisposition] {
	case "ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION":
	default:
		return Call{}, false, fmt.Errorf("cdr: disposition %q is not one cdr_csv writes", rec[cdrDisposition])
	}
	switch rec[cdrAMAFlags] {
	case "DOCUMENTATION", "BILLING", "OMIT", "DEFAULT", "Unknown":
	default:
		return Call{}, false, fmt.Errorf("cdr: amaflags %q is not one cdr_csv writes", rec[cdrAMAFlags])
	}
	if len(rec) > cdrUniqueID && (!plain(rec[cdrUniqueID]) || len(rec[cdrUniqueID]) > 150) {
		return Call{}, false, fmt.Errorf("cdr: uniqueid %q is not one Asterisk writes", rec[cdrUniqueID])
	}
	tech, ext, isEndpoint, other := EndpointChannel(rec[cdrChannel])
	if other {
		return Call{}, false, nil
	}
	if !isEndpoint {
		return Call{}, false, fmt.Errorf("cdr: channel %q is not an endpoint's channel (PJSIP/<endpoint>-<8 hex>, SIP/…, IAX2/<endpoint>-<n>): not attributed", rec[cdrChannel])
	}
	c = Call{
		Channel: rec[cdrChannel], Tech: tech, Extension: ext, Dialled: rec[cdrDst],
		Context: rec[cdrDContext], Start: start, Answer: answer, End: end,
		Billsec: billsec, Disposition: rec[cdrDisposition], Source: SourceCDR,
	}
	if len(rec) > cdrUniqueID {
		c.ID = rec[cdrUniqueID]
	}
	return c, dialledOK(c.Dialled), nil
}

// HandleCDR feeds one CDR record to the tracker: it fills in the source
// address the tracker knows for the endpoint (from SetEndpointAddr) and
// returns a CallEnded update.
func (t *Tracker) HandleCDR(rec []string, loc *time.Location) (Update, bool, error) {
	c, ok, err := ParseCDR(rec, loc)
	if err != nil {
		t.stats.BadRows++
		return Update{}, false, err
	}
	if !ok || (c.ID != "" && t.SeenByAMI(c.ID)) {
		return Update{}, false, nil
	}
	if a, ok := t.endpoint[c.Extension]; ok {
		c.SourceAddr = a.addr
	}
	t.stats.Ended++
	return Update{Kind: CallEnded, Call: c}, true, nil
}

// SplitCDRLine splits one CSV record (a Master.csv row of cdr_csv or of
// cel_custom, as a follower in CSV mode hands it on: newlines inside quoted
// fields included) into its fields. It is an error when the text is not
// exactly one well-formed record (a stray or unbalanced quote, a second
// record after the first).
func SplitCDRLine(line string) ([]string, error) {
	r := csv.NewReader(strings.NewReader(line))
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("cdr: %w", err)
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		return nil, errors.New("cdr: more than one CSV record in one (a line split from a record?)")
	}
	return rec, nil
}

// CDRReader reads Master.csv rows from r, one call per Next.
type CDRReader struct {
	r    *csv.Reader
	loc  *time.Location
	line int
	// Skipped counts malformed rows Next skipped.
	Skipped int
}

// NewCDRReader reads CDR CSV from r; loc is the zone of its times.
func NewCDRReader(r io.Reader, loc *time.Location) *CDRReader {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	return &CDRReader{r: cr, loc: loc}
}

// Next returns the next call, skipping malformed rows (counted) and rows
// that are not an endpoint's call. It returns io.EOF at the end.
func (cr *CDRReader) Next() (Call, error) {
	for {
		rec, err := cr.r.Read()
		cr.line++
		if errors.Is(err, io.EOF) {
			return Call{}, io.EOF
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				cr.Skipped++
				continue
			}
			return Call{}, fmt.Errorf("cdr: line %d: %w", cr.line, err)
		}
		c, ok, err := ParseCDR(rec, cr.loc)
		if err != nil {
			cr.Skipped++
			continue
		}
		if ok {
			return c, nil
		}
	}
}
