// Package amitest is a fake Asterisk Manager Interface for tests, in the
// manner of net/http/httptest: a loopback server that answers as Asterisk
// 22 does, with state a test can set up and inspect.
//
// It logs users in (plain Secret or the MD5 Challenge), checks each
// action's write privilege the way manager.c does (the session's write
// classes must share one class with the action's; otherwise "Response:
// Error", "Message: Permission denied" and a RequestNotAllowed security
// event), and keeps channels, the AstDB, PJSIP contacts and endpoints,
// and maintenance mode. What Asterisk 22 does that surprises clients is
// reproduced: PJSIPHangup takes a SIP response code (400–699; anything
// else is logged as "out of range … Defaulting to 603 DECLINE") and only
// ends incoming channels that are not answered yet — an answered channel
// stays up while the action is still answered Success.
//
//	srv := amitest.NewServer(amitest.Config{Username: "pbxguard", Secret: "s3cret", Write: []string{"system", "call"}})
//	defer srv.Close()
//	srv.StartCall(amitest.Channel{Name: "PJSIP/1004-00000005", Exten: "011442079460349", RemoteAddr: "203.0.113.177:5060"})
//	srv.Answer("PJSIP/1004-00000005")
//	// … the code under test connects to srv.Addr() …
//	if srv.HasChannel("PJSIP/1004-00000005") { t.Error("still up") }
package amitest

import (
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

// Banner is the greeting Asterisk 22 sends.
const Banner = "Asterisk Call Manager/11.0.0"

// Privileges is the write class of each action the server knows, as
// Asterisk registers them (main/manager.c, main/db.c, channels/chan_pjsip.c,
// res/res_pjsip/*.c, res/res_pjsip_maintenance.c). An empty list: always allowed.
var Privileges = map[string][]string{
	"Ping": nil, "Events": nil, "Logoff": nil, "Login": nil, "Challenge": nil, "ListCommands": nil,
	"Hangup":               {"system", "call"},
	"PJSIPHangup":          {"system", "call"},
	"Status":               {"system", "call", "reporting"},
	"Getvar":               {"call", "reporting"},
	"Setvar":               {"call"},
	"CoreShowChannels":     {"system", "reporting"},
	"Command":              {"command"},
	"Filter":               {"system"},
	"DBGet":                {"system", "reporting"},
	"DBPut":                {"system"},
	"DBDel":                {"system"},
	"PJSIPShowContacts":    {"system"},
	"PJSIPShowEndpoint":    {"system"},
	"PJSIPShowEndpoints":   {"system"},
	"PJSIPSetMaintenance":  {"system"},
	"PJSIPShowMaintenance": {"system", "reporting"},
}

// Config is the manager.conf user and the server's behaviour.
type Config struct {
	Username, Secret string
	// Write are the user's write classes (manager.conf write =); nil:
	// every class ("all").
	Write []string
	// NoMaintenance answers PJSIPSetMaintenance as an Asterisk without
	// res_pjsip_maintenance does ("Invalid/unknown command").
	NoMaintenance bool
	// Timestamps adds "Timestamp:" to events (manager.conf timestampevents).
	Timestamps bool
}

// Channel is a channel the server has up.
type Channel struct {
	Name       string // "PJSIP/1004-00000005"
	Uniqueid   string // "" : made up
	Linkedid   string // "" : the Uniqueid (the channel starts its call)
	Exten      string
	Context    string // "" : "from-internal"
	CallerID   string
	RemoteAddr string // what CHANNEL(pjsip,remote_addr) answers: "203.0.113.177:5060"
	// Outgoing: the channel was created by Asterisk (the carrier leg); a
	// PJSIPHangup never ends it. Phones' channels are incoming.
	Outgoing bool
	Up       bool // answered
	// Stuck: hang-up actions are answered Success but the channel stays
	// (a hang-up that did not work, whatever the reason).
	Stuck   bool
	Vars    map[string]string
	created time.Time
}

// Contact is a registered PJSIP contact.
type Contact struct {
	AOR, Endpoint string
	URI           string // "sip:1004@198.51.100.22:5060"
	ViaAddr       string
	UserAgent     string
}

// Received is an action the server received.
type Received struct {
	Msg *ami.Message
	At  time.Time
	// Refused: answered Permission denied (not in the user's write classes).
	Refused bool
}

// Server is a running fake AMI.
type Server struct {
	cfg Config
	ln  net.Listener
	wg  sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	conns       map[*session]bool
	channels    []*Channel
	db          map[string]string
	contacts    []Contact
	endpoints   map[string]bool
	maintenance map[string]bool
	received    []Received
	warnings    []string
	hangups     map[string]string // channel → how it was ended ("Hangup 21", "PJSIPHangup 603")
	authAddr    map[string]string // endpoint → "ip:port" of its last SuccessfulAuth (replays)
	loginEvents string            // the Events header of the last successful Login
	seq         int
}

// NewServer starts a server on a loopback port. It panics when it cannot
// listen, as httptest.NewServer does.
func NewServer(cfg Config) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("amitest: listen: %v", err))
	}
	return NewServerListener(ln, cfg)
}

// NewServerListener serves on ln (e.g. a listener opened inside a network
// namespace).
func NewServerListener(ln net.Listener, cfg Config) *Server {
	s := &Server{cfg: cfg, ln: ln, conns: map[*session]bool{}, db: map[string]string{}, endpoints: map[string]bool{},
		maintenance: map[string]bool{}, hangups: map[string]string{}}
	s.wg.Add(1)
	go s.accept()
	return s
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := make([]*session, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.ln.Close()
	for _, c := range conns {
		c.c.Close()
	}
	s.wg.Wait()
}

// DropConnections closes every connection (the socket dies; the client
// reconnects).
func (s *Server) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.c.Close()
	}
}

// LoggedIn returns the number of logged-in sessions.
func (s *Server) LoggedIn() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.authed {
			n++
		}
	}
	return n
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		se := &session{srv: s, c: c}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[se] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, se)
				s.mu.Unlock()
				c.Close()
			}()
			se.serve()
		}()
	}
}

// session is one manager connection.
type session struct {
	srv       *Server
	c         net.Conn
	wmu       sync.Mutex
	authed    bool // under srv.mu
	events    bool // under srv.mu
	write     []string
	challenge string
}

func (se *session) send(b []byte) error {
	se.wmu.Lock()
	defer se.wmu.Unlock()
	_ = se.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := se.c.Write(b)
	return err
}

// msg renders "Key: Value" pairs as one message.
func msg(kv ...string) []byte {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		b.WriteString(kv[i] + ": " + kv[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

func (se *session) reply(a *ami.Message, response string, kv ...string) {
	out := []string{"Response", response}
	if id := a.ActionID(); id != "" {
		out = append(out, "ActionID", id)
	}
	_ = se.send(msg(append(out, kv...)...))
}

func (se *session) errorf(a *ami.Message, format string, args ...any) {
	se.reply(a, "Error", "Message", fmt.Sprintf(format, args...))
}

// list answers a with an event list: the ack, the events, the complete event.
func (se *session) list(a *ami.Message, ack, complete string, items [][]string) {
	id := a.ActionID()
	var b []byte
	b = append(b, msg("Response", "Success", "ActionID", id, "EventList", "start", "Message", ack)...)
	for _, it := range items {
		b = append(b, msg(append(it, "ActionID", id)...)...)
	}
	b = append(b, msg("Event", complete, "ActionID", id, "EventList", "Complete", "ListItems", strconv.Itoa(len(items)))...)
	_ = se.send(b)
}

func (se *session) serve() {
	if se.send([]byte(Banner+"\r\n")) != nil {
		return
	}
	r := ami.NewReader(se.c)
	for {
		a, err := r.Next()
		if err != nil {
			var pe *ami.ParseError
			if errors.As(err, &pe) {
				continue
			}
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
		if !se.handle(a) {
			return
		}
	}
}

func (se *session) allowed(action string) (known, ok bool) {
	need, known := Privileges[action]
	if !known {
		return false, false
	}
	if len(need) == 0 || se.write == nil {
		return true, true
	}
	for _, c := range need {
		if slices.Contains(se.write, c) || slices.Contains(se.write, "all") {
			return true, true
		}
	}
	return true, false
}

func (se *session) handle(a *ami.Message) bool {
	s := se.srv
	name := a.Get("Action")
	s.mu.Lock()
	authed := se.authed
	s.mu.Unlock()
	if !authed {
		switch {
		case strings.EqualFold(name, "Challenge"):
			if a.Get("AuthType") != "MD5" {
				se.errorf(a, "Must specify AuthType")
				return true
			}
			se.challenge = strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
			se.reply(a, "Success", "Challenge", se.challenge)
			return true
		case strings.EqualFold(name, "Login"):
			ok := a.Get("Username") == s.cfg.Username
			if a.Get("AuthType") == "MD5" {
				sum := md5.Sum([]byte(se.challenge + s.cfg.Secret))
				ok = ok && se.challenge != "" && strings.EqualFold(a.Get("Key"), hex.EncodeToString(sum[:]))
			} else {
				ok = ok && a.Get("Secret") == s.cfg.Secret
			}
			if !ok {
				se.errorf(a, "Authentication failed")
				return false
			}
			s.mu.Lock()
			se.authed = true
			s.loginEvents = a.Get("Events")
			se.events = !strings.EqualFold(a.Get("Events"), "off")
			se.write = s.cfg.Write
			s.mu.Unlock()
			se.reply(a, "Success", "Message", "Authentication accepted")
			s.emit(se, "Event", "FullyBooted", "Privilege", "system,all", "Uptime", "100", "LastReload", "100", "Status", "Fully Booted")
			return true
		case strings.EqualFold(name, "Logoff"):
			se.reply(a, "Goodbye", "Message", "Thanks for all the fish.")
			return false
		}
		s.record(a, true)
		se.errorf(a, "Permission denied")
		return true
	}
	known, ok := se.allowed(name)
	if name == "PJSIPSetMaintenance" && s.cfg.NoMaintenance {
		known = false
	}
	if !known {
		s.record(a, false)
		se.errorf(a, "Invalid/unknown command: %s. Use Action: ListCommands to show available commands.", name)
		return true
	}
	s.record(a, !ok)
	if !ok {
		se.errorf(a, "Permission denied")
		s.emit(nil, "Event", "RequestNotAllowed", "Privilege", "security,all", "Severity", "Error", "Service", "AMI",
			"EventVersion", "1", "AccountID", s.cfg.Username, "SessionID", fmt.Sprintf("%p", se),
			"LocalAddress", "IPV4/TCP/"+s.Addr(), "RemoteAddress", "IPV4/TCP/"+se.c.RemoteAddr().String(),
			"RequestType", name, "Module", "AMI")
		return true
	}
	switch name {
	case "Ping":
		se.reply(a, "Success", "Ping", "Pong", "Timestamp", fmt.Sprintf("%d.000000", time.Now().Unix()))
	case "Logoff":
		se.reply(a, "Goodbye", "Message", "Thanks for all the fish.")
		return false
	case "Events":
		s.mu.Lock()
		se.events = !strings.EqualFold(a.Get("EventMask"), "off")
		s.mu.Unlock()
		se.reply(a, "Success", "Events", a.Get("EventMask"))
	case "Filter":
		se.reply(a, "Success", "Message", "Filter Added Successfully")
	case "Hangup", "PJSIPHangup":
		se.hangup(a, name)
	case "Status":
		se.errorf(a, "amitest: Status is not served")
	case "Getvar":
		se.getvar(a)
	case "Setvar":
		se.reply(a, "Success", "Message", "Variable Set")
	case "CoreShowChannels":
		se.coreShowChannels(a)
	case "Command":
		se.reply(a, "Success", "Message", "Command output follows", "Output", "")
	case "DBPut":
		s.mu.Lock()
		s.db[a.Get("Family")+"/"+a.Get("Key")] = a.Get("Val")
		s.mu.Unlock()
		se.reply(a, "Success", "Message", "Updated database successfully")
	case "DBGet":
		s.mu.Lock()
		v, found := s.db[a.Get("Family")+"/"+a.Get("Key")]
		s.mu.Unlock()
		if !found {
			se.errorf(a, "Database entry not found")
			break
		}
		se.list(a, "Result will follow", "DBGetComplete", [][]string{{"Event", "DBGetResponse", "Family", a.Get("Family"), "Key", a.Get("Key"), "Val", v}})
	case "DBDel":
		k := a.Get("Family") + "/" + a.Get("Key")
		s.mu.Lock()
		_, found := s.db[k]
		delete(s.db, k)
		s.mu.Unlock()
		if !found {
			se.errorf(a, "Database entry not found")
			break
		}
		se.reply(a, "Success", "Message", "Key deleted successfully")
	case "PJSIPShowContacts":
		se.showContacts(a)
	case "PJSIPShowEndpoint":
		se.showEndpoint(a)
	case "PJSIPShowEndpoints":
		s.mu.Lock()
		var items [][]string
		for _, ep := range sortedKeys(s.endpoints) {
			items = append(items, []string{"Event", "EndpointList", "ObjectType", "endpoint", "ObjectName", ep})
		}
		s.mu.Unlock()
		if len(items) == 0 {
			se.errorf(a, "No endpoints found")
			break
		}
		se.list(a, "A listing of Endpoints follows, presented as EndpointList events", "EndpointListComplete", items)
	case "PJSIPSetMaintenance":
		ep, st := a.Get("Endpoint"), strings.ToLower(a.Get("State"))
		if st != "on" && st != "off" {
			se.errorf(a, "State must be 'on' or 'off'")
			break
		}
		s.mu.Lock()
		known := s.endpoints[ep]
		if known {
			s.maintenance[ep] = st == "on"
		}
		s.mu.Unlock()
		if !known {
			se.errorf(a, "Endpoint '%s' not found", ep)
			break
		}
		se.reply(a, "Success", "Message", "Maintenance mode "+st+" for endpoint "+ep)
	default:
		se.errorf(a, "amitest: %s is not served", name)
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// hangup answers Hangup and PJSIPHangup as ast_manager_hangup_helper does.
func (se *session) hangup(a *ami.Message, name string) {
	s := se.srv
	chName := a.Get("Channel")
	if chName == "" {
		se.errorf(a, "No channel specified")
		return
	}
	cause := a.Get("Cause")
	s.mu.Lock()
	ch := s.channel(chName)
	if ch == nil {
		s.mu.Unlock()
		se.errorf(a, "No such channel")
		return
	}
	if name == "PJSIPHangup" {
		code, err := strconv.Atoi(cause)
		if err != nil || code < 400 || code > 699 {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: Response code %s is out of range 400 -> 699. Defaulting to 603 DECLINE", chName, cause))
			code = 603
		}
		if ch.Outgoing || ch.Up || ch.Stuck || !strings.HasPrefix(ch.Name, "PJSIP/") {
			state := "CONFIRMED"
			if !ch.Up {
				state = "CALLING"
			}
			s.warnings = append(s.warnings, fmt.Sprintf("%s: Not an incoming channel or invalid state '%s'", chName, state))
			s.mu.Unlock()
			se.reply(a, "Success", "Message", "Channel Hungup") // what Asterisk answers, though nothing happened
			return
		}
		s.mu.Unlock()
		s.end(chName, "PJSIPHangup "+strconv.Itoa(code), 21)
		se.reply(a, "Success", "Message", "Channel Hungup")
		return
	}
	stuck := ch.Stuck
	s.mu.Unlock()
	if stuck {
		se.reply(a, "Success", "Message", "Channel Hungup")
		return
	}
	q850, err := strconv.Atoi(cause)
	if err != nil || q850 <= 0 {
		q850 = 16
	}
	s.end(chName, "Hangup "+strconv.Itoa(q850), q850)
	se.reply(a, "Success", "Message", "Channel Hungup")
}

func (se *session) getvar(a *ami.Message) {
	s := se.srv
	v := a.Get("Variable")
	if v == "" {
		se.errorf(a, "No variable specified")
		return
	}
	val := ""
	if chName := a.Get("Channel"); chName != "" {
		s.mu.Lock()
		ch := s.channel(chName)
		if ch != nil {
			if v == "CHANNEL(pjsip,remote_addr)" {
				val = ch.RemoteAddr
			} else {
				val = ch.Vars[v]
			}
		}
		s.mu.Unlock()
		if ch == nil {
			se.errorf(a, "No such channel")
			return
		}
	}
	se.reply(a, "Success", "Variable", v, "Value", val)
}

func (se *session) coreShowChannels(a *ami.Message) {
	s := se.srv
	s.mu.Lock()
	var items [][]string
	for _, ch := range s.channels {
		state, desc := "4", "Ring"
		if ch.Up {
			state, desc = "6", "Up"
		}
		d := time.Since(ch.created).Truncate(time.Second)
		items = append(items, []string{"Event", "CoreShowChannel", "Channel", ch.Name, "ChannelState", state, "ChannelStateDesc", desc,
			"CallerIDNum", ch.CallerID, "Context", ch.Context, "Exten", ch.Exten, "Priority", "1",
			"Uniqueid", ch.Uniqueid, "Linkedid", ch.Linkedid, "Application", "Dial",
			"Duration", fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)})
	}
	s.mu.Unlock()
	se.list(a, "Channels will follow", "CoreShowChannelsComplete", items)
}

func (se *session) showContacts(a *ami.Message) {
	s := se.srv
	s.mu.Lock()
	var items [][]string
	for i, c := range s.contacts {
		items = append(items, []string{"Event", "ContactList", "ObjectType", "contact", "ObjectName", fmt.Sprintf("%s;@%08x", c.AOR, i),
			"ViaAddr", c.ViaAddr, "Endpoint", c.Endpoint, "Uri", c.URI, "UserAgent", c.UserAgent, "Status", "NonQualified", "RoundtripUsec", "N/A"})
	}
	s.mu.Unlock()
	if len(items) == 0 {
		se.errorf(a, "No Contacts found\n")
		return
	}
	se.list(a, "A listing of Contacts follows, presented as ContactList events", "ContactListComplete", items)
}

func (se *session) showEndpoint(a *ami.Message) {
	s := se.srv
	ep := a.Get("Endpoint")
	if ep == "" {
		se.errorf(a, "PJSIPShowEndpoint requires an endpoint name\n")
		return
	}
	ep = strings.TrimPrefix(strings.TrimPrefix(ep, "PJSIP/"), "pjsip/")
	s.mu.Lock()
	known := s.endpoints[ep]
	items := [][]string{{"Event", "EndpointDetail", "ObjectType", "endpoint", "ObjectName", ep}}
	for _, c := range s.contacts {
		if c.Endpoint == ep {
			items = append(items, []string{"Event", "ContactStatusDetail", "AOR", c.AOR, "URI", c.URI, "UserAgent", c.UserAgent,
				"ViaAddress", c.ViaAddr, "Status", "NonQualified", "RoundtripUsec", "N/A", "EndpointName", ep})
		}
	}
	s.mu.Unlock()
	if !known {
		se.errorf(a, "Unable to retrieve endpoint %s\n", ep)
		return
	}
	se.list(a, "Following are Events for each object associated with the Endpoint", "EndpointDetailComplete", items)
}

// channel finds a channel by name (s.mu held).
func (s *Server) channel(name string) *Channel {
	for _, c := range s.channels {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (s *Server) record(a *ami.Message, refused bool) {
	s.mu.Lock()
	s.received = append(s.received, Received{Msg: a, At: time.Now(), Refused: refused})
	s.mu.Unlock()
}

// Emit sends an event ("Event", "Name", "Key", "Value", …) to every
// logged-in session that has events on.
func (s *Server) Emit(kv ...string) { s.emit(nil, kv...) }

// EmitMessage sends m (an event) to every logged-in session with events on.
// A replayed stream keeps the server's state: Newchannel puts a channel up
// (its CHANNEL(pjsip,remote_addr) is the address of its endpoint's last
// SuccessfulAuth), Newstate 6 answers it, Hangup ends it (a channel a
// hang-up action ended already stays ended, and HungUpBy keeps saying how).
func (s *Server) EmitMessage(m *ami.Message) {
	s.observe(m)
	kv := make([]string, 0, 2*len(m.Headers))
	for _, h := range m.Headers {
		kv = append(kv, h.Key, h.Value)
	}
	s.emit(nil, kv...)
}

func (s *Server) emit(only *session, kv ...string) {
	if s.cfg.Timestamps {
		kv = append(kv, "Timestamp", fmt.Sprintf("%d.%06d", time.Now().Unix(), time.Now().Nanosecond()/1000))
	}
	b := msg(kv...)
	s.mu.Lock()
	var to []*session
	for c := range s.conns {
		if c.authed && c.events && (only == nil || c == only) {
			to = append(to, c)
		}
	}
	s.mu.Unlock()
	for _, c := range to {
		_ = c.send(b)
	}
}

// StartCall puts a channel up (state Ring) and sends its Newchannel event.
func (s *Server) StartCall(ch Channel) {
	s.mu.Lock()
	s.seq++
	if ch.Uniqueid == "" {
		ch.Uniqueid = fmt.Sprintf("%d.%d", time.Now().Unix(), s.seq)
	}
	if ch.Linkedid == "" {
		ch.Linkedid = ch.Uniqueid
	}
	if ch.Context == "" {
		ch.Context = "from-internal"
	}
	ch.created = time.Now()
	c := ch
	s.channels = append(s.channels, &c)
	if ep, ok := endpointOf(ch.Name); ok {
		s.endpoints[ep] = true
	}
	s.mu.Unlock()
	state, desc := "4", "Ring"
	if ch.Up {
		state, desc = "6", "Up"
	}
	s.Emit("Event", "Newchannel", "Privilege", "call,all", "Channel", ch.Name, "ChannelState", state, "ChannelStateDesc", desc,
		"CallerIDNum", ch.CallerID, "Context", ch.Context, "Exten", ch.Exten, "Priority", "1",
		"Uniqueid", ch.Uniqueid, "Linkedid", ch.Linkedid)
}

// Answer marks a channel answered and sends its Newstate (Up).
func (s *Server) Answer(name string) bool {
	s.mu.Lock()
	ch := s.channel(name)
	if ch != nil {
		ch.Up = true
	}
	s.mu.Unlock()
	if ch == nil {
		return false
	}
	s.Emit("Event", "Newstate", "Privilege", "call,all", "Channel", name, "ChannelState", "6", "ChannelStateDesc", "Up",
		"Exten", ch.Exten, "Uniqueid", ch.Uniqueid, "Linkedid", ch.Linkedid)
	return true
}

// EndCall hangs a channel up from the far side (normal clearing).
func (s *Server) EndCall(name string) bool { return s.end(name, "remote", 16) }

func (s *Server) end(name, how string, cause int) bool {
	s.mu.Lock()
	i := slices.IndexFunc(s.channels, func(c *Channel) bool { return c.Name == name })
	if i < 0 {
		s.mu.Unlock()
		return false
	}
	ch := s.channels[i]
	s.channels = slices.Delete(s.channels, i, i+1)
	s.hangups[name] = how
	s.mu.Unlock()
	s.Emit("Event", "Hangup", "Privilege", "call,all", "Channel", name, "Uniqueid", ch.Uniqueid, "Linkedid", ch.Linkedid,
		"Exten", ch.Exten, "Cause", strconv.Itoa(cause), "Cause-txt", "")
	return true
}

// HasChannel reports whether the channel is still up.
func (s *Server) HasChannel(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.channel(name) != nil
}

// Channels returns the names of the channels up.
func (s *Server) Channels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.channels))
	for i, c := range s.channels {
		out[i] = c.Name
	}
	return out
}

// HungUpBy says how a channel was ended ("Hangup 21", "PJSIPHangup 403",
// "remote"), "" while it is up or unknown.
func (s *Server) HungUpBy(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hangups[name]
}

// AddContact registers a contact (and its endpoint).
func (s *Server) AddContact(c Contact) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.AOR == "" {
		c.AOR = c.Endpoint
	}
	s.contacts = append(s.contacts, c)
	s.endpoints[c.Endpoint] = true
}

// AddEndpoint makes an endpoint known (PJSIPShowEndpoint, maintenance).
func (s *Server) AddEndpoint(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endpoints[name] = true
}

// Maintenance reports whether the endpoint is in maintenance mode.
func (s *Server) Maintenance(ep string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maintenance[ep]
}

// DB returns the AstDB value of family/key.
func (s *Server) DB(family, key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.db[family+"/"+key]
	return v, ok
}

// SetDB writes family/key (as `database put` on the CLI would).
func (s *Server) SetDB(family, key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.db[family+"/"+key] = val
}

// Received returns the actions received so far (logins excluded).
func (s *Server) Received() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.received)
}

// ReceivedNamed returns the received actions of one name.
func (s *Server) ReceivedNamed(action string) []*ami.Message {
	var out []*ami.Message
	for _, r := range s.Received() {
		if r.Msg.Get("Action") == action {
			out = append(out, r.Msg)
		}
	}
	return out
}

// LoginEvents returns the Events header of the last successful Login
// (the event classes the client asked for: "system,call,security", "off").
func (s *Server) LoginEvents() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loginEvents
}

// Refused returns the number of actions refused for want of privilege.
func (s *Server) Refused() int {
	n := 0
	for _, r := range s.Received() {
		if r.Refused {
			n++
		}
	}
	return n
}

// Warnings returns what Asterisk would have logged (PJSIPHangup's "out
// of range" and "Not an incoming channel" warnings).
func (s *Server) Warnings() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.warnings)
}

func (s *Server) observe(m *ami.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := m.Get("Channel")
	switch m.Event() {
	case "SuccessfulAuth":
		if a, port, ok := ami.ParseRemoteAddress(m.Get("RemoteAddress")); ok {
			if s.authAddr == nil {
				s.authAddr = map[string]string{}
			}
			s.authAddr[m.Get("AccountID")] = net.JoinHostPort(a.String(), strconv.Itoa(int(port)))
		}
	case "Newchannel":
		if name == "" || s.channel(name) != nil || s.hangups[name] != "" {
			return
		}
		ch := &Channel{Name: name, Uniqueid: m.Get("Uniqueid"), Linkedid: m.Get("Linkedid"), Exten: m.Get("Exten"),
			Context: m.Get("Context"), CallerID: m.Get("CallerIDNum"), Up: m.Get("ChannelState") == "6", created: time.Now()}
		ch.Outgoing = ch.Linkedid != "" && ch.Linkedid != ch.Uniqueid
		if ep, ok := endpointOf(name); ok {
			s.endpoints[ep] = true
			ch.RemoteAddr = s.authAddr[ep]
		}
		s.channels = append(s.channels, ch)
	case "Newstate":
		if ch := s.channel(name); ch != nil && m.Get("ChannelState") == "6" {
			ch.Up = true
		}
	case "Hangup":
		if i := slices.IndexFunc(s.channels, func(c *Channel) bool { return c.Name == name }); i >= 0 {
			s.channels = slices.Delete(s.channels, i, i+1)
			if s.hangups[name] == "" {
				s.hangups[name] = "remote"
			}
		}
	}
}

// endpointOf returns the endpoint of "PJSIP/1004-00000005".
func endpointOf(ch string) (string, bool) {
	tech, rest, ok := strings.Cut(ch, "/")
	if !ok || tech != "PJSIP" {
		return "", false
	}
	if i := strings.LastIndexByte(rest, '-'); i > 0 {
		rest = rest[:i]
	}
	return rest, rest != ""
}
