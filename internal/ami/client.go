package ami

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Synthetic events the Client puts into its event stream on state changes.
// They carry the header Address (the manager's address) and, for
// Disconnected, Reason. Consumers that keep state from events (a call
// tracker) should resynchronise on Reconnected (e.g. CoreShowChannels).
const (
	EventDisconnected = "pbxguard.Disconnected"
	EventReconnected  = "pbxguard.Reconnected"
)

// Client errors, for errors.Is (always returned wrapped with context).
var (
	ErrClosed       = errors.New("client closed")
	ErrTimeout      = errors.New("timed out")
	ErrDisconnected = errors.New("connection lost")
	ErrAuth         = errors.New("login refused")
	ErrNotConnected = errors.New("not connected")
)

// ActionError is returned with the response when Asterisk answers an
// action with "Response: Error".
type ActionError struct {
	Action  string // the action's name
	Message string // Asterisk's Message header ("No such channel", "Permission denied")
}

func (e *ActionError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "(no message)"
	}
	hint := ""
	if strings.Contains(strings.ToLower(msg), "permission denied") {
		hint = " (give the manager.conf user the write class this action needs, e.g. write = system,call; see docs/fraud.md)"
	}
	return fmt.Sprintf("ami: %s: Asterisk answered Error: %s%s", e.Action, msg, hint)
}

// Config configures a Client. Addr, Username and Secret are required.
type Config struct {
	Addr     string      // host:port of the manager (AMI default port 5038, TLS 5039)
	TLS      *tls.Config // nil: plain TCP; ServerName defaults to Addr's host
	Username string
	Secret   string
	UseMD5   bool // Challenge/MD5 login: the secret never crosses the wire
	// Events is the Login "Events" value: "on" (default), "off", or event
	// classes such as "system,call,security".
	Events string
	// Filters are sent after login as Action: Filter, Operation: Add,
	// Filter: <each> (e.g. "Event: Hangup", "!Event: VarSet").
	Filters []string
	// PingInterval between keepalive Pings (default 20s; negative: none).
	// A Ping left unanswered for Timeout drops the connection.
	PingInterval time.Duration
	// Timeout bounds each action, the connect and the login (default 5s).
	Timeout time.Duration
	// Backoff is the min and max delay between reconnect attempts
	// (default 500ms, 30s); it doubles after each failed attempt and each
	// session shorter than the max, with jitter (50–100% of the delay).
	Backoff [2]time.Duration
	// EventBuffer is the capacity of the event channel (default 4096).
	// When it is full the oldest event is dropped and counted.
	EventBuffer int
	// MaxMessageSize bounds one AMI message (default 1 MiB).
	MaxMessageSize int
	Logger         *slog.Logger // nil: discard
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Addr == "" {
		return cfg, errors.New("ami: no manager address (set it as host:port, e.g. 127.0.0.1:5038)")
	}
	if _, port, err := net.SplitHostPort(cfg.Addr); err != nil || port == "" {
		return cfg, fmt.Errorf("ami: manager address %q is not host:port (try 127.0.0.1:5038)", cfg.Addr)
	}
	if cfg.Username == "" {
		return cfg, errors.New("ami: no username (the [section] name of a user in manager.conf)")
	}
	if strings.ContainsAny(cfg.Username+cfg.Secret+cfg.Events, "\r\n") {
		return cfg, errors.New("ami: username, secret and events must not contain line breaks")
	}
	if cfg.Events == "" {
		cfg.Events = "on"
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = 20 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Backoff[0] <= 0 {
		cfg.Backoff[0] = 500 * time.Millisecond
	}
	if cfg.Backoff[1] <= 0 {
		cfg.Backoff[1] = 30 * time.Second
	}
	if cfg.Backoff[1] < cfg.Backoff[0] {
		cfg.Backoff[1] = cfg.Backoff[0]
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 4096
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, f := range cfg.Filters {
		if strings.ContainsAny(f, "\r\n") {
			return cfg, fmt.Errorf("ami: filter %q contains a line break", f)
		}
	}
	return cfg, nil
}

// Stats are the Client's counters since it was created.
type Stats struct {
	Connected      bool
	Connects       uint64 // successful logins
	Disconnects    uint64
	Events         uint64 // events put into the channel
	EventsDropped  uint64 // oldest events dropped because the channel was full
	Malformed      uint64 // messages skipped by the reader (garbage, oversized)
	LastError      string // why the last connection or attempt ended
	ServerBanner   string // "Asterisk Call Manager/9.0.0"
	PendingActions int
}

// Client is a connection to an Asterisk manager that logs in, keeps the
// connection alive with Pings, reconnects with backoff, correlates actions
// and responses by ActionID and delivers events on one channel that
// survives reconnects. All methods are safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	main   *Subscription // the stream of Events()
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	ids    atomic.Uint64

	mu      sync.Mutex
	cur     *conn
	up      chan struct{} // closed while cur != nil
	closed  bool
	lastErr error
	banner  string

	smu        sync.RWMutex
	subs       []*Subscription
	subsClosed bool

	connects, disconnects, malformed atomic.Uint64
}

// conn is one TCP/TLS session.
type conn struct {
	nc   net.Conn
	r    *Reader
	wmu  sync.Mutex
	once sync.Once
	dead chan struct{} // closed when the read loop has ended

	mu      sync.Mutex
	pending map[string]*call
	gone    bool
	err     error
}

// call is one action waiting for its response (and, for lists, its events).
type call struct {
	name   string
	list   bool
	resp   *Message
	events []*Message
	err    error
	done   chan struct{}
}

func newClient(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "ami", "addr", cfg.Addr),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		up:     make(chan struct{}),
	}
	c.main = c.Subscribe(cfg.EventBuffer, nil)
	return c, nil
}

// Dial connects and logs in once, and returns a Client that from then on
// reconnects by itself. The error of a failed first attempt says what to
// check (address, TLS, credentials, manager.conf permit/deny).
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	cn, err := c.connect(ctx, false)
	if err != nil {
		c.cancel()
		return nil, err
	}
	go c.run(cn)
	return c, nil
}

// New returns a Client that connects in the background and keeps trying
// (with backoff) until Close; use it when Asterisk may start after us.
// Actions wait for the connection up to their timeout. Only an invalid
// Config is an error.
func New(cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	go c.run(nil)
	return c, nil
}

// Events returns the event channel. It survives reconnects (with
// EventDisconnected / EventReconnected markers in between) and is closed
// by Close.
func (c *Client) Events() <-chan *Message { return c.main.ch }

// Stats returns the Client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	s := Stats{Connected: c.cur != nil, ServerBanner: c.banner}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
	}
	cur := c.cur
	c.mu.Unlock()
	if cur != nil {
		cur.mu.Lock()
		s.PendingActions = len(cur.pending)
		cur.mu.Unlock()
	}
	s.Connects = c.connects.Load()
	s.Disconnects = c.disconnects.Load()
	s.Events = c.main.delivered.Load()
	s.EventsDropped = c.main.dropped.Load()
	s.Malformed = c.malformed.Load()
	return s
}

// Close logs off, ends the connection and every goroutine of the Client,
// fails waiting actions with ErrClosed and closes the event channel. It is
// idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	cn := c.cur
	c.mu.Unlock()
	if cn != nil {
		// Best effort: a polite Logoff, without waiting for the Goodbye.
		m := NewAction("Logoff", "ActionID", c.nextID())
		_ = cn.write(m.appendWire(nil), 500*time.Millisecond)
	}
	c.cancel()
	<-c.done
	return nil
}

func (c *Client) nextID() string {
	return "pbxguard-" + strconv.FormatUint(c.ids.Add(1), 10)
}

// run is the supervisor: it owns the current connection, pings it, and
// reconnects with backoff. It closes the event channels when it ends.
func (c *Client) run(cn *conn) {
	defer close(c.done)
	defer c.closeSubscriptions()
	backoff := c.cfg.Backoff[0]
	wasUp := false
	for {
		if cn == nil {
			var err error
			cn, err = c.connect(c.ctx, wasUp)
			if err != nil {
				if c.ctx.Err() != nil {
					return
				}
				c.setLastErr(err)
				wait := jitter(backoff)
				c.log.Warn("AMI connect failed", "err", err, "retry_in", wait)
				if !sleep(c.ctx, wait) {
					return
				}
				backoff = min(backoff*2, c.cfg.Backoff[1])
				continue
			}
		}
		wasUp = true
		upSince := time.Now()
		c.setConn(cn)
		c.log.Info("AMI connected", "banner", cn.r.Banner())
		err := c.supervise(cn)
		c.clearConn(cn, err)
		cn = nil
		if c.ctx.Err() != nil || c.isClosed() { // the Logoff of Close can end the session first
			return
		}
		c.disconnects.Add(1)
		c.log.Warn("AMI connection lost", "err", err)
		c.deliver(c.disconnectedEvent(err))
		// A session that lasted is retried at once (after the minimum
		// delay); one that keeps dropping right after login backs off.
		if time.Since(upSince) >= c.cfg.Backoff[1] {
			backoff = c.cfg.Backoff[0]
		}
		if !sleep(c.ctx, jitter(backoff)) {
			return
		}
		backoff = min(backoff*2, c.cfg.Backoff[1])
	}
}

// supervise pings cn until it dies or the client closes; it returns why
// the connection ended, after its read loop has exited.
func (c *Client) supervise(cn *conn) error {
	var tick <-chan time.Time
	if c.cfg.PingInterval > 0 {
		t := time.NewTicker(c.cfg.PingInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-cn.dead:
			return cn.error()
		case <-c.ctx.Done():
			cn.shutdown(ErrClosed)
			<-cn.dead
			return ErrClosed
		case <-tick:
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
			_, err := c.roundTrip(ctx, cn, NewAction("Ping"), false)
			cancel()
			if err != nil && c.ctx.Err() == nil && !errors.Is(err, ErrDisconnected) {
				cn.shutdown(fmt.Errorf("keepalive Ping failed: %w", err))
			}
		}
	}
}

func (c *Client) setConn(cn *conn) {
	c.mu.Lock()
	c.cur = cn
	c.banner = cn.r.Banner()
	close(c.up)
	c.mu.Unlock()
}

func (c *Client) clearConn(cn *conn, err error) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.up = make(chan struct{})
	}
	if !errors.Is(err, ErrClosed) {
		c.lastErr = err
	}
	c.mu.Unlock()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) setLastErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Client) disconnectedEvent(err error) *Message {
	return &Message{Headers: []Header{{"Event", EventDisconnected}, {"Address", c.cfg.Addr}, {"Reason", err.Error()}}}
}

// connect dials, reads the banner, logs in, sends the filters and starts
// the read loop. On error nothing of the attempt is left running. With
// reconnect, the Reconnected marker goes out before the first event of the
// new session.
func (c *Client) connect(ctx context.Context, reconnect bool) (*conn, error) {
	addr, to := c.cfg.Addr, c.cfg.Timeout
	dctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	var nc net.Conn
	var err error
	if c.cfg.TLS != nil {
		d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: c.cfg.TLS}
		nc, err = d.DialContext(dctx, "tcp", addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, dialError(addr, c.cfg.TLS != nil, to, err)
	}
	// Abort the handshake when ctx ends.
	stop := context.AfterFunc(dctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	r := NewReaderSize(nc, c.cfg.MaxMessageSize)
	_ = nc.SetDeadline(time.Now().Add(to))
	if err := c.login(nc, r); err != nil {
		stop()
		nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ami: connect to %s: %w", addr, ctx.Err())
		}
		return nil, err
	}
	if !stop() { // ctx ended just as the login completed
		nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ami: connect to %s: %w", addr, ctx.Err())
		}
		return nil, fmt.Errorf("ami: %s: %w: the login took longer than %v", addr, ErrTimeout, to)
	}
	_ = nc.SetDeadline(time.Time{})
	cn := &conn{nc: nc, r: r, dead: make(chan struct{}), pending: map[string]*call{}}
	if reconnect {
		c.deliver(&Message{Headers: []Header{{"Event", EventReconnected}, {"Address", c.cfg.Addr}}})
	}
	go c.readLoop(cn)
	for _, f := range c.cfg.Filters {
		fctx, fcancel := context.WithTimeout(ctx, to)
		_, err := c.roundTrip(fctx, cn, NewAction("Filter", "Operation", "Add", "Filter", f), false)
		fcancel()
		if err != nil {
			cn.shutdown(err)
			<-cn.dead
			err = fmt.Errorf("ami: filter %q refused: %w (Filter needs write = system in manager.conf)", f, err)
			if reconnect {
				c.deliver(c.disconnectedEvent(err))
			}
			return nil, err
		}
	}
	c.connects.Add(1)
	return cn, nil
}

func dialError(addr string, useTLS bool, to time.Duration, err error) error {
	var hint string
	var tlsErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &tlsErr) || useTLS && strings.Contains(err.Error(), "tls:"):
		hint = "the TLS handshake failed: check manager.conf [general] tlsenable/tlsbindaddr/tlscertfile and that the CA and server name in our TLS config match the certificate"
	case errors.Is(err, context.DeadlineExceeded):
		hint = fmt.Sprintf("no answer within %v: a firewall dropping the packets, or the wrong host", to)
		err = fmt.Errorf("%w: %w", ErrTimeout, err)
	case strings.Contains(err.Error(), "refused"):
		hint = "nothing listens there: check that Asterisk runs and manager.conf [general] has enabled = yes with this port/bindaddr"
	default:
		hint = "check the address and that manager.conf [general] has enabled = yes with this port/bindaddr"
	}
	return fmt.Errorf("ami: connect to %s: %w (%s)", addr, err, hint)
}

// login runs the banner and Login exchange synchronously on a fresh
// connection (the read loop is not running yet).
func (c *Client) login(nc net.Conn, r *Reader) error {
	addr, to := c.cfg.Addr, c.cfg.Timeout
	banner, err := r.ReadBanner()
	if err != nil {
		return handshakeError(addr, "waiting for the AMI greeting", to, err)
	}
	login := NewAction("Login", "ActionID", c.nextID(), "Username", c.cfg.Username)
	if c.cfg.UseMD5 {
		ch := NewAction("Challenge", "ActionID", c.nextID(), "AuthType", "MD5")
		resp, err := syncAction(nc, r, ch, &c.malformed)
		if err != nil {
			return handshakeError(addr, "MD5 challenge", to, err)
		}
		challenge := resp.Get("Challenge")
		if !strings.EqualFold(resp.Response(), "Success") || challenge == "" {
			return fmt.Errorf("ami: %s (%s) refused the MD5 challenge: %s (set UseMD5 to false, or check the manager.conf user)", addr, banner, resp.Get("Message"))
		}
		sum := md5.Sum([]byte(challenge + c.cfg.Secret))
		login.Add("AuthType", "MD5").Add("Key", hex.EncodeToString(sum[:]))
	} else {
		login.Add("Secret", c.cfg.Secret)
	}
	login.Add("Events", c.cfg.Events)
	resp, err := syncAction(nc, r, login, &c.malformed)
	if err != nil {
		return handshakeError(addr, "login", to, err)
	}
	if !strings.EqualFold(resp.Response(), "Success") {
		return fmt.Errorf("ami: %w: %s answered %q to Login as %q (check the username and secret in manager.conf, and that the user's permit/deny lines allow this host; Asterisk's security log says which)",
			ErrAuth, addr, resp.Get("Message"), c.cfg.Username)
	}
	return nil
}

func handshakeError(addr, step string, to time.Duration, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotAMI):
		return fmt.Errorf("ami: %s: %w (is this the manager port? Asterisk's default is 5038, 5039 with TLS)", addr, err)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("ami: %s: %w: no answer within %v while %s (is this the manager port, and is Asterisk responsive?)", addr, ErrTimeout, to, step)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("ami: %s closed the connection while %s: %w (manager.conf permit/deny or a TLS/plain mismatch?)", addr, step, err)
	}
	return fmt.Errorf("ami: %s: %s: %w", addr, step, err)
}

// syncAction writes m and reads until the response with m's ActionID;
// used only before the read loop runs.
func syncAction(w io.Writer, r *Reader, m *Message, malformed *atomic.Uint64) (*Message, error) {
	id := m.ActionID()
	if _, err := w.Write(m.appendWire(nil)); err != nil {
		return nil, err
	}
	for range 1000 {
		resp, err := r.Next()
		var pe *ParseError
		if errors.As(err, &pe) {
			malformed.Add(1)
			continue
		}
		if err != nil {
			return nil, err
		}
		if !resp.IsEvent() && resp.ActionID() == id {
			return resp, nil
		}
	}
	return nil, fmt.Errorf("%w: no response to %s among 1000 messages", ErrMalformed, m.Get("Action"))
}

// readLoop reads messages until the connection fails, dispatching
// responses to waiting actions and events to the channel.
func (c *Client) readLoop(cn *conn) {
	var err error
	for {
		var m *Message
		m, err = cn.r.Next()
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				if n := c.malformed.Add(1); n <= 10 || n%1000 == 0 {
					c.log.Warn("AMI message skipped", "err", err, "skipped_total", n)
				}
				continue
			}
			break
		}
		c.dispatch(cn, m)
	}
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("%w: %s closed the connection", ErrDisconnected, c.cfg.Addr)
	} else {
		err = fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	cn.shutdown(err)
	c.mu.Lock()
	closing := c.closed
	c.mu.Unlock()
	cn.mu.Lock()
	cn.gone = true
	cerr := cn.err
	if closing {
		cerr = ErrClosed // the Logoff of Close made the server hang up
	}
	for id, cl := range cn.pending {
		cl.err = cerr
		close(cl.done)
		delete(cn.pending, id)
	}
	cn.mu.Unlock()
	close(cn.dead)
}

func (c *Client) dispatch(cn *conn, m *Message) {
	isEvent := m.IsEvent()
	if id := m.ActionID(); id != "" {
		cn.mu.Lock()
		if cl := cn.pending[id]; cl != nil {
			switch {
			case !isEvent && cl.resp == nil:
				cl.resp = m
				if !cl.list || !listStart(m) {
					delete(cn.pending, id)
					close(cl.done)
				}
				cn.mu.Unlock()
				return
			case isEvent && cl.list:
				cl.events = append(cl.events, m)
				if len(cl.events) >= maxListEvents {
					cl.err = fmt.Errorf("%w: event list longer than %d events", ErrTooLarge, maxListEvents)
				}
				if listEnd(m) || cl.err != nil {
					delete(cn.pending, id)
					close(cl.done)
				}
				cn.mu.Unlock()
				return
			}
		}
		cn.mu.Unlock()
	}
	if isEvent {
		c.deliver(m)
	}
}

// maxListEvents bounds the events one ActionList collects.
const maxListEvents = 200000

// listStart reports a response that announces an event list: "EventList:
// start", or on old versions only "Message: … will follow".
func listStart(m *Message) bool {
	if el := m.Get("EventList"); el != "" {
		return strings.EqualFold(el, "start")
	}
	return strings.EqualFold(m.Response(), "Success") && strings.HasSuffix(strings.ToLower(m.Get("Message")), "will follow")
}

// listEnd reports the event that ends an event list.
func listEnd(m *Message) bool {
	switch el := m.Get("EventList"); {
	case strings.EqualFold(el, "Complete"), strings.EqualFold(el, "Cancelled"):
		return true
	case el == "":
		return strings.HasSuffix(m.Event(), "Complete")
	}
	return false
}

// deliver puts m into every subscription that wants it (markers go to
// all), dropping a subscription's oldest event when its channel is full.
// It never blocks, so a slow consumer cannot stall the read loop (and with
// it the responses to actions and keepalives).
func (c *Client) deliver(m *Message) {
	marker := strings.HasPrefix(m.Event(), "pbxguard.")
	c.smu.RLock()
	defer c.smu.RUnlock()
	for _, s := range c.subs {
		if s.match == nil || marker || s.match(m) {
			s.put(m, c.log)
		}
	}
}

// Subscription is one event stream of a Client. Events() is the first;
// Subscribe adds more, so that several consumers (the jails, the call
// tracker) share one AMI session.
type Subscription struct {
	c                  *Client
	ch                 chan *Message
	match              func(*Message) bool
	closed             bool
	delivered, dropped atomic.Uint64
}

// Subscribe returns a new event stream with its own buffer (drop-oldest
// when full, like Events()). match selects the events it wants (nil: all);
// it runs on the read loop, so it must be cheap and must not call the
// Client. The pbxguard.* markers are always delivered. A subscription sees
// the events that arrive after Subscribe returns: subscribe right after
// New (which logs in in the background) to see a session from its start.
// Its channel is closed by Subscription.Close or Client.Close.
func (c *Client) Subscribe(buffer int, match func(*Message) bool) *Subscription {
	if buffer <= 0 {
		buffer = c.cfg.EventBuffer
	}
	s := &Subscription{c: c, ch: make(chan *Message, buffer), match: match}
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.subsClosed {
		s.closed = true
		close(s.ch)
		return s
	}
	c.subs = append(c.subs, s)
	return s
}

// C is the subscription's channel.
func (s *Subscription) C() <-chan *Message { return s.ch }

// Dropped is the number of events dropped because the channel was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription and closes its channel.
func (s *Subscription) Close() {
	c := s.c
	c.smu.Lock()
	defer c.smu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for i, x := range c.subs {
		if x == s {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			break
		}
	}
	close(s.ch)
}

func (c *Client) closeSubscriptions() {
	c.smu.Lock()
	defer c.smu.Unlock()
	for _, s := range c.subs {
		s.closed = true
		close(s.ch)
	}
	c.subs = nil
	c.subsClosed = true
}

func (s *Subscription) put(m *Message, log *slog.Logger) {
	for {
		select {
		case s.ch <- m:
			s.delivered.Add(1)
			return
		default:
		}
		select {
		case <-s.ch:
			if n := s.dropped.Add(1); n == 1 || n%1000 == 0 {
				log.Warn("AMI event buffer full: dropping the oldest events (consumer too slow?)", "dropped_total", n, "buffer", cap(s.ch))
			}
		default:
		}
	}
}

func (cn *conn) shutdown(err error) {
	cn.once.Do(func() {
		cn.mu.Lock()
		cn.err = err
		cn.mu.Unlock()
		cn.nc.Close()
	})
}

func (cn *conn) error() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err
}

func (cn *conn) write(b []byte, to time.Duration) error {
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.nc.SetWriteDeadline(time.Now().Add(to))
	if _, err := cn.nc.Write(b); err != nil {
		err = fmt.Errorf("write: %w", err)
		cn.shutdown(err)
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	return nil
}

// waitConn returns the current connection, waiting for one until ctx ends.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		closed, cn, up, last := c.closed, c.cur, c.up, c.lastErr
		c.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if cn != nil {
			return cn, nil
		}
		select {
		case <-up:
		case <-c.ctx.Done():
			return nil, ErrClosed
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%w to %s (last error: %v): %w", ErrNotConnected, c.cfg.Addr, last, ctx.Err())
			}
			return nil, fmt.Errorf("%w to %s: %w", ErrNotConnected, c.cfg.Addr, ctx.Err())
		}
	}
}

// do sends an action and waits for its response (and list events).
func (c *Client) do(ctx context.Context, action *Message, list bool) (*call, error) {
	if action == nil || action.Get("Action") == "" {
		return nil, errors.New("ami: the message has no Action header")
	}
	if err := action.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	cn, err := c.waitConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("ami: %s: %w", action.Get("Action"), err)
	}
	return c.roundTrip(ctx, cn, action, list)
}

func (c *Client) roundTrip(ctx context.Context, cn *conn, action *Message, list bool) (*call, error) {
	name := action.Get("Action")
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ami: %s not sent: %w", name, err)
	}
	limit := c.cfg.Timeout
	if dl, ok := ctx.Deadline(); ok {
		limit = time.Until(dl).Round(time.Millisecond)
	}
	id := c.nextID()
	m := &Message{Headers: make([]Header, 0, len(action.Headers)+1)}
	m.Headers = append(m.Headers, action.Headers...)
	m.Set("ActionID", id)
	cl := &call{name: name, list: list, done: make(chan struct{})}
	cn.mu.Lock()
	if cn.gone {
		cn.mu.Unlock()
		return nil, fmt.Errorf("ami: %s: %w", name, ErrDisconnected)
	}
	cn.pending[id] = cl
	cn.mu.Unlock()
	unregister := func() {
		cn.mu.Lock()
		delete(cn.pending, id)
		cn.mu.Unlock()
	}
	// The write gets the full Timeout whatever is left of ctx: a write cut
	// short would leave half an action on the wire and cost the connection.
	if err := cn.write(m.appendWire(nil), c.cfg.Timeout); err != nil {
		unregister()
		return nil, fmt.Errorf("ami: %s: %w", name, err)
	}
	select {
	case <-cl.done:
		if cl.err != nil {
			return cl, fmt.Errorf("ami: %s (ActionID %s): %w", name, id, cl.err)
		}
		if strings.EqualFold(cl.resp.Response(), "Error") {
			return cl, &ActionError{Action: name, Message: cl.resp.Get("Message")}
		}
		return cl, nil
	case <-c.ctx.Done():
		unregister()
		return nil, fmt.Errorf("ami: %s: %w", name, ErrClosed)
	case <-ctx.Done():
		unregister()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("ami: %s (ActionID %s): %w: no complete response from %s within %v", name, id, ErrTimeout, c.cfg.Addr, limit)
		}
		return nil, fmt.Errorf("ami: %s: %w", name, ctx.Err())
	}
}

// Action sends action (an ActionID is added; one already there is
// replaced) and waits for its response, at most Config.Timeout. When
// Asterisk answers "Response: Error" the response is returned together
// with an *ActionError.
func (c *Client) Action(ctx context.Context, action *Message) (*Message, error) {
	cl, err := c.do(ctx, action, false)
	if cl == nil {
		return nil, err
	}
	return cl.resp, err
}

// ActionList sends an action answered by an event list (CoreShowChannels,
// PJSIPShowContacts, DBGet, …) and returns the response and the list's
// events up to and including the one with "EventList: Complete". The
// list's events do not appear on Events(). The whole list must arrive
// within Config.Timeout.
func (c *Client) ActionList(ctx context.Context, action *Message) (*Message, []*Message, error) {
	cl, err := c.do(ctx, action, true)
	if cl == nil {
		return nil, nil, err
	}
	return cl.resp, cl.events, err
}
