// Package calls turns AMI events or CDR rows into calls: who placed them
// (the originating endpoint and its source address), what was dialled, and
// when they started, were answered and ended.
//
// The core is pure: the caller hands in a message and the time it arrived
// (or the time the message itself carries, see MessageTime) and gets back at
// most one Update. AMI call events carry no address, so the tracker learns
// each endpoint's address from SuccessfulAuth security events (or from
// SetEndpointAddr, fed by PJSIPShowContacts or Getvar CHANNEL(pjsip,remote_addr)).
package calls

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

// Source says where a call record came from.
type Source uint8

// Sources.
const (
	SourceAMI Source = iota + 1
	SourceCDR
)

// String returns "ami" or "cdr".
func (s Source) String() string {
	switch s {
	case SourceAMI:
		return "ami"
	case SourceCDR:
		return "cdr"
	}
	return "unknown"
}

// Call is one call placed by an endpoint.
type Call struct {
	ID          string     // Linkedid (AMI) or uniqueid (CDR)
	Channel     string     // originating channel, "PJSIP/1004-00000017"
	Tech        string     // "PJSIP", "SIP", "IAX2", …
	Extension   string     // originating endpoint ("1004"), from the channel name or caller ID
	SourceAddr  netip.Addr // where the endpoint authenticated from; invalid when unknown
	Dialled     string     // the extension dialled in the dialplan ("011442079460349")
	Context     string
	Start       time.Time
	Answer      time.Time // zero when not answered
	End         time.Time // zero while live
	Live        bool
	Billsec     int    // CDR only
	Disposition string // CDR/DialStatus: ANSWERED, NO ANSWER, BUSY, FAILED
	Source      Source
}

// UpdateKind says what changed.
type UpdateKind uint8

// Update kinds.
const (
	UpdateNone   UpdateKind = iota
	CallStarted             // the dialled number is known (Newchannel or DialBegin)
	CallAnswered            // the originating channel went Up
	CallEnded               // Hangup of the originating channel, or a CDR row
	EndpointAuth            // an endpoint authenticated from an address (Call holds Extension + SourceAddr)
	// Reset: the tracker forgot every live call (Asterisk shut down, or a
	// new AMI session began with FullyBooted: hang-ups may have been missed).
	Reset
)

// String names the kind.
func (k UpdateKind) String() string {
	switch k {
	case CallStarted:
		return "started"
	case CallAnswered:
		return "answered"
	case CallEnded:
		return "ended"
	case EndpointAuth:
		return "endpoint_auth"
	case Reset:
		return "reset"
	}
	return "none"
}

// Update is the result of one message: a copy of the call as it is now.
type Update struct {
	Kind UpdateKind
	Call Call
	// Service is the security event's service ("PJSIP", "SIP") for EndpointAuth.
	Service string
}

// Config bounds the tracker.
type Config struct {
	// MaxLive bounds the calls tracked at once (0: 10000). Calls beyond it
	// are not tracked (counted in Stats.Dropped).
	MaxLive int
	// MaxEndpoints bounds the endpoint → address table (0: 10000).
	MaxEndpoints int
	// AuthServices are the security-event services whose SuccessfulAuth
	// names a call endpoint (nil: PJSIP, SIP, IAX2).
	AuthServices []string
	// MaxCallAge: a call live for longer is forgotten (its Hangup was
	// missed, e.g. during an AMI reconnect). 0: 4h.
	MaxCallAge time.Duration
}

// Stats counts what the tracker saw.
type Stats struct {
	Messages, Started, Ended, Dropped, BadRows uint64
}

type addrSeen struct {
	addr netip.Addr
	at   time.Time
}

// Tracker follows calls. It is not safe for concurrent use: one goroutine
// feeds it.
type Tracker struct {
	cfg      Config
	calls    map[string]*Call // by Linkedid
	chans    map[string]*Call // originating channel Uniqueid → call
	endpoint map[string]addrSeen
	stats    Stats
	// ended remembers the IDs of the last calls AMI saw end, so that the
	// CDR row written for the same call is not counted twice.
	ended    [1024]string
	endedSet map[string]struct{}
	endedPos int
}

// NewTracker returns an empty tracker.
func NewTracker(cfg Config) *Tracker {
	if cfg.MaxLive <= 0 {
		cfg.MaxLive = 10000
	}
	if cfg.MaxEndpoints <= 0 {
		cfg.MaxEndpoints = 10000
	}
	if cfg.MaxCallAge <= 0 {
		cfg.MaxCallAge = 4 * time.Hour
	}
	if cfg.AuthServices == nil {
		cfg.AuthServices = []string{"PJSIP", "SIP", "IAX2"}
	}
	return &Tracker{
		cfg:      cfg,
		calls:    make(map[string]*Call),
		chans:    make(map[string]*Call),
		endpoint: make(map[string]addrSeen),
		endedSet: make(map[string]struct{}),
	}
}

// expire forgets calls older than MaxCallAge.
func (t *Tracker) expire(now time.Time) {
	for uid, c := range t.chans {
		if now.Sub(c.Start) > t.cfg.MaxCallAge {
			delete(t.chans, uid)
			delete(t.calls, c.ID)
		}
	}
}

func (t *Tracker) rememberEnded(id string) {
	if id == "" {
		return
	}
	if old := t.ended[t.endedPos]; old != "" {
		delete(t.endedSet, old)
	}
	t.ended[t.endedPos] = id
	t.endedSet[id] = struct{}{}
	t.endedPos = (t.endedPos + 1) % len(t.ended)
}

// SeenByAMI reports whether AMI already reported the call with this ID
// (a Linkedid, which is the uniqueid of its CDR row): live now, or ended
// recently. Asterisk writes the CDR row at hang-up, and a followed
// Master.csv can hand the row on before the AMI Hangup event arrives: the
// row of a call AMI still has live is the same call.
func (t *Tracker) SeenByAMI(id string) bool {
	if _, ok := t.endedSet[id]; ok {
		return true
	}
	c, ok := t.calls[id]
	return ok && c.Source == SourceAMI
}

// Stats returns the counters.
func (t *Tracker) Stats() Stats { return t.stats }

// SetEndpointAddr records that endpoint ext was last seen at addr (from
// PJSIPShowContacts, a Getvar of CHANNEL(pjsip,remote_addr), or a log).
func (t *Tracker) SetEndpointAddr(ext string, addr netip.Addr, at time.Time) {
	if ext == "" || !addr.IsValid() {
		return
	}
	if _, ok := t.endpoint[ext]; !ok && len(t.endpoint) >= t.cfg.MaxEndpoints {
		return
	}
	t.endpoint[ext] = addrSeen{addr.Unmap(), at}
}

// EndpointAddr returns the address endpoint ext last authenticated from.
func (t *Tracker) EndpointAddr(ext string) (netip.Addr, bool) {
	a, ok := t.endpoint[ext]
	return a.addr, ok
}

// Live returns copies of the live calls (of every extension when ext is
// ""), oldest first.
func (t *Tracker) Live(ext string) []Call {
	var out []Call
	for _, c := range t.calls {
		if c.Live && (ext == "" || c.Extension == ext) {
			out = append(out, *c)
		}
	}
	slices.SortFunc(out, func(a, b Call) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return strings.Compare(a.Channel, b.Channel)
	})
	return out
}

// Handle feeds one AMI message received at now. It returns the update the
// message caused, ok=false when it changed nothing a caller cares about.
func (t *Tracker) Handle(m *ami.Message, now time.Time) (Update, bool) {
	t.stats.Messages++
	switch m.Event() {
	case "Newchannel":
		return t.newchannel(m, now)
	case "DialBegin":
		return t.dialBegin(m, now)
	case "DialEnd":
		if c := t.chans[m.Get("Uniqueid")]; c != nil {
			switch m.Get("DialStatus") {
			case "ANSWER":
				c.Disposition = "ANSWERED"
			case "BUSY":
				c.Disposition = "BUSY"
			case "NOANSWER", "CANCEL":
				c.Disposition = "NO ANSWER"
			case "CONGESTION", "CHANUNAVAIL":
				c.Disposition = "FAILED"
			}
		}
	case "Newstate":
		return t.newstate(m, now)
	case "Hangup":
		return t.hangup(m, now)
	case "SuccessfulAuth":
		return t.successfulAuth(m, now)
	case "Shutdown", "FullyBooted":
		t.calls = make(map[string]*Call)
		t.chans = make(map[string]*Call)
		return Update{Kind: Reset}, true
	}
	if t.stats.Messages%1024 == 0 {
		t.expire(now)
	}
	return Update{}, false
}

// SplitChannel splits "PJSIP/1004-00000017" into tech "PJSIP" and endpoint
// "1004". It returns ok=false for local and bridge channels.
func SplitChannel(ch string) (tech, endpoint string, ok bool) {
	slash := strings.IndexByte(ch, '/')
	if slash <= 0 {
		return "", "", false
	}
	tech, rest := ch[:slash], ch[slash+1:]
	if i := strings.LastIndexByte(rest, '-'); i > 0 {
		rest = rest[:i]
	}
	switch tech {
	case "Local", "Message", "Announcer", "CBAnn", "CBRec", "Recorder", "Multicast", "Surrogate", "ConfBridge":
		return tech, rest, false
	}
	return tech, rest, rest != ""
}

func dialledOK(exten string) bool {
	return exten != "" && exten != "s" && exten != "h" && exten != "i" && exten != "t"
}

func (t *Tracker) newchannel(m *ami.Message, now time.Time) (Update, bool) {
	uid, lid := m.Get("Uniqueid"), m.Get("Linkedid")
	if uid == "" || (lid != "" && lid != uid) {
		return Update{}, false // only the channel that starts a call counts
	}
	if _, dup := t.chans[uid]; dup || t.SeenByAMI(uid) {
		return Update{}, false // the same call from a second source (AMI and CEL both followed)
	}
	ch := m.Get("Channel")
	tech, ext, ok := SplitChannel(ch)
	if !ok {
		return Update{}, false
	}
	if len(t.calls) >= t.cfg.MaxLive {
		t.stats.Dropped++
		return Update{}, false
	}
	if ext == "" {
		ext = m.Get("CallerIDNum")
	}
	c := &Call{
		ID: uid, Channel: ch, Tech: tech, Extension: ext, Context: m.Get("Context"),
		Start: now, Live: true, Source: SourceAMI,
	}
	if a, ok := t.endpoint[ext]; ok {
		c.SourceAddr = a.addr
	}
	t.calls[uid] = c
	t.chans[uid] = c
	if exten := m.Get("Exten"); dialledOK(exten) {
		c.Dialled = exten
		t.stats.Started++
		return Update{Kind: CallStarted, Call: *c}, true
	}
	return Update{}, false
}

func (t *Tracker) dialBegin(m *ami.Message, _ time.Time) (Update, bool) {
	c := t.chans[m.Get("Uniqueid")]
	if c == nil || c.Dialled != "" {
		return Update{}, false
	}
	d := m.Get("DestExten")
	if !dialledOK(d) {
		d = m.Get("DialString")
		if i := strings.IndexByte(d, '@'); i >= 0 {
			d = d[:i]
		}
		if i := strings.IndexByte(d, '/'); i >= 0 {
			d = d[i+1:]
		}
	}
	if !dialledOK(d) {
		return Update{}, false
	}
	c.Dialled = d
	t.stats.Started++
	return Update{Kind: CallStarted, Call: *c}, true
}

func (t *Tracker) newstate(m *ami.Message, now time.Time) (Update, bool) {
	c := t.chans[m.Get("Uniqueid")]
	if c == nil || m.Get("ChannelState") != "6" || !c.Answer.IsZero() {
		return Update{}, false
	}
	c.Answer = now
	if c.Dialled == "" {
		return Update{}, false
	}
	return Update{Kind: CallAnswered, Call: *c}, true
}

func (t *Tracker) hangup(m *ami.Message, now time.Time) (Update, bool) {
	uid := m.Get("Uniqueid")
	c := t.chans[uid]
	if c == nil {
		return Update{}, false
	}
	delete(t.chans, uid)
	delete(t.calls, c.ID)
	t.rememberEnded(c.ID)
	c.End, c.Live = now, false
	if c.Disposition == "" {
		if c.Answer.IsZero() {
			c.Disposition = "NO ANSWER"
		} else {
			c.Disposition = "ANSWERED"
		}
	}
	t.stats.Ended++
	if c.Dialled == "" {
		return Update{}, false
	}
	return Update{Kind: CallEnded, Call: *c}, true
}

func (t *Tracker) successfulAuth(m *ami.Message, now time.Time) (Update, bool) {
	svc := m.Get("Service")
	okSvc := false
	for _, s := range t.cfg.AuthServices {
		if strings.EqualFold(s, svc) {
			okSvc = true
			break
		}
	}
	if !okSvc {
		return Update{}, false
	}
	acct := m.Get("AccountID")
	addr, ok := ParseSecurityAddr(m.Get("RemoteAddress"))
	if acct == "" || !ok {
		return Update{}, false
	}
	t.SetEndpointAddr(acct, addr, now)
	return Update{Kind: EndpointAuth, Service: svc, Call: Call{Extension: acct, SourceAddr: addr.Unmap(), Start: now, Source: SourceAMI}}, true
}

// ParseSecurityAddr reads a security event address, "IPV4/UDP/203.0.113.159/5062"
// or "IPV6/UDP/2001:db8::1/5060".
func ParseSecurityAddr(s string) (netip.Addr, bool) {
	// family / transport / address / port
	i := strings.IndexByte(s, '/')
	if i < 0 {
		return netip.Addr{}, false
	}
	fam := s[:i]
	rest := s[i+1:]
	j := strings.IndexByte(rest, '/')
	if j < 0 {
		return netip.Addr{}, false
	}
	rest = rest[j+1:]
	k := strings.LastIndexByte(rest, '/')
	if k < 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.Trim(rest[:k], "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	switch fam {
	case "IPV4":
		if !a.Unmap().Is4() {
			return netip.Addr{}, false
		}
	case "IPV6":
	default:
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// MessageTime returns the time an AMI message carries, for replaying a
// recorded stream on a fake clock: the Timestamp header (timestampevents=yes),
// a security event's EventTV, a CEL EventTime, a Cdr's EndTime or StartTime,
// or the creation second encoded in a Newchannel Uniqueid. ok=false when the
// message carries none. loc is the zone of the local-time fields (CEL, Cdr).
func MessageTime(m *ami.Message, loc *time.Location) (time.Time, bool) {
	if ts := m.Get("Timestamp"); ts != "" {
		if t, ok := epoch(ts, true); ok {
			return t, true
		}
	}
	if tv := m.Get("EventTV"); tv != "" {
		if t, err := time.Parse("2006-01-02T15:04:05.000-0700", tv); err == nil {
			return t, true
		}
	}
	if loc == nil {
		loc = time.UTC
	}
	switch m.Event() {
	case "CEL":
		if t, err := time.ParseInLocation("2006-01-02 15:04:05", m.Get("EventTime"), loc); err == nil {
			return t, true
		}
	case "Cdr":
		for _, k := range []string{"EndTime", "StartTime"} {
			if t, err := time.ParseInLocation("2006-01-02 15:04:05", m.Get(k), loc); err == nil {
				return t, true
			}
		}
	case "Newchannel":
		if t, ok := epoch(m.Get("Uniqueid"), false); ok {
			return t, true
		}
	}
	return time.Time{}, false
}

// epoch reads "1795579390.6" (seconds[.fraction]) — for a Uniqueid the part
// after the dot is a sequence number, not a fraction, so only seconds count.
func epoch(s string, fraction bool) (time.Time, bool) {
	sec := s
	frac := ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		sec, frac = s[:i], s[i+1:]
	}
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || n < 946684800 { // before 2000: not a timestamp
		return time.Time{}, false
	}
	t := time.Unix(n, 0).UTC()
	if fraction && len(frac) == 6 { // Timestamp: 1795579390.123456
		if us, err := strconv.Atoi(frac); err == nil {
			t = t.Add(time.Duration(us) * time.Microsecond)
		}
	}
	return t, true
}
