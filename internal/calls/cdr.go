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
	cdrMinFields = cdrAMAFlags + 1
)

// ParseCDR turns one Master.csv record into an ended call. loc is the zone
// the times were written in (cdr.conf usegmtime=no: the PBX's local zone).
// Rows for channels that are not an endpoint (Local/…) are returned with
// ok=false and no error.
func ParseCDR(rec []string, loc *time.Location) (c Call, ok bool, err error) {
	if len(rec) < cdrMinFields {
		return Call{}, false, fmt.Errorf("cdr: %d fields, want at least %d (accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,answer,end,duration,billsec,disposition,amaflags)", len(rec), cdrMinFields)
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
	billsec, err := strconv.Atoi(rec[cdrBillsec])
	if err != nil || billsec < 0 {
		return Call{}, false, fmt.Errorf("cdr: billsec %q is not a number of seconds", rec[cdrBillsec])
	}
	tech, ext, isEndpoint := SplitChannel(rec[cdrChannel])
	if !isEndpoint {
		return Call{}, false, nil
	}
	if ext == "" {
		ext = rec[cdrSrc]
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

// SplitCDRLine splits one Master.csv line (as a file follower hands it
// on) into its fields.
func SplitCDRLine(line string) ([]string, error) {
	r := csv.NewReader(strings.NewReader(line))
	r.FieldsPerRecord = -1
	rec, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("cdr: %w", err)
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
