// Package dashboard is pbxguard's local web page: server-rendered
// (html/template, so every value is escaped), assets embedded (no CDN,
// works offline), new bans pushed with server-sent events, and actions
// (unban) only with the token, by POST with a CSRF token. It reads the
// store; actions go through the daemon (Options.Unban), so the allowlist
// and the kernel stay the daemon's business.
package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

//go:embed assets
var assets embed.FS

// Options configure the dashboard.
type Options struct {
	Listen string // host:port
	Store  *store.Store
	// Token, when set, allows actions (after a login with it); "" = read-only.
	Token    string
	CertFile string // TLS, required (with Token) off loopback
	KeyFile  string
	// Unban lifts the bans covering a prefix (the daemon's Unban).
	Unban  func(ctx context.Context, p netip.Prefix) error
	Logger *slog.Logger
	// Poll is how often the event stream looks for new bans [1s].
	Poll time.Duration
	// Health, when set, is the daemon's state shown on the overview
	// (kernel in sync, store, AMI and the other workers).
	Health func() Health
}

// Health is what the overview says of the daemon's protection.
type Health struct {
	KernelChecked  bool // false for a backend that cannot be checked (dry-run)
	KernelInSync   bool
	OutOfSyncSince time.Time
	Missing        []string
	KernelError    string
	StoreOK        bool
	StoreSince     time.Time
	StoreError     string
	Workers        []WorkerHealth
}

// WorkerHealth is one worker (the AMI connection, the sensor, …).
type WorkerHealth struct {
	Name  string
	Up    bool
	Since time.Time
	Error string
}

// Server is the dashboard's handler.
type Server struct {
	opts    Options
	tmpl    *template.Template
	key     []byte // CSRF HMAC key, random per start
	mu      sync.Mutex
	session map[string]time.Time
}

// New makes the handler. Off loopback it requires TLS and a token.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("dashboard: no store")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Listen != "" && !loopback(opts.Listen) && (opts.Token == "" || opts.CertFile == "" || opts.KeyFile == "") {
		return nil, fmt.Errorf("dashboard: listen %s is not loopback: set dashboard.token_file, cert_file and key_file (or listen on 127.0.0.1)", opts.Listen)
	}
	t, err := template.New("").Funcs(template.FuncMap{
		"ts": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	}).ParseFS(assets, "assets/*.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: templates: %w", err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	return &Server{opts: opts, tmpl: t, key: key, session: map[string]time.Time{}}, nil
}

func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// Handler routes the pages.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.overview)
	mux.HandleFunc("GET /bans", s.bans)
	mux.HandleFunc("GET /ban", s.ban)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /unban", s.unban)
	mux.HandleFunc("GET /feed.txt", s.feed)
	return headers(mux)
}

func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// Serve listens until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	srv := &http.Server{Addr: s.opts.Listen, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	s.opts.Logger.Info("dashboard listening", "addr", ln.Addr().String(), "actions", s.opts.Token != "")
	if s.opts.CertFile != "" {
		err = srv.ServeTLS(ln, s.opts.CertFile, s.opts.KeyFile)
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type page struct {
	Title    string
	Now      time.Time
	Bans     []store.Ban
	Recent   []store.HistoryEntry
	Top      []count
	Inc      []store.Incident
	Evidence []store.Evidence
	Addr     string
	Active   *store.Ban
	CanAct   bool
	LoggedIn bool
	CSRF     string
	Msg      string
	Filter   string
	LastID   int64
	Health   *Health
}

type count struct {
	Key string
	N   int
}

func (s *Server) base(r *http.Request, title string) page {
	p := page{Title: title, Now: time.Now(), CanAct: s.opts.Token != ""}
	if sid, ok := s.sessionOf(r); ok {
		p.LoggedIn, p.CSRF = true, s.csrf(sid)
	}
	p.Msg = r.URL.Query().Get("msg")
	return p
}

func (s *Server) render(w http.ResponseWriter, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := s.tmpl.ExecuteTemplate(w, name, p); err != nil {
		s.opts.Logger.Error("dashboard: rendering", "page", name, "err", err)
	}
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := s.base(r, "Overview")
	if s.opts.Health != nil {
		h := s.opts.Health()
		p.Health = &h
	}
	var err error
	if p.Bans, err = s.opts.Store.ActiveBans(ctx, p.Now); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sort.Slice(p.Bans, func(i, j int) bool { return p.Bans[i].Since.After(p.Bans[j].Since) })
	if len(p.Bans) > 50 {
		p.Bans = p.Bans[:50]
	}
	p.Recent, _ = s.opts.Store.History(ctx, store.HistoryFilter{Since: p.Now.Add(-24 * time.Hour)})
	by := map[string]int{}
	for _, h := range p.Recent {
		by[h.Addr.String()]++
		p.LastID = max(p.LastID, h.ID)
	}
	if last, _ := s.opts.Store.History(ctx, store.HistoryFilter{Limit: 1}); len(last) > 0 {
		p.LastID = last[0].ID
	}
	for k, n := range by {
		p.Top = append(p.Top, count{k, n})
	}
	sort.Slice(p.Top, func(i, j int) bool {
		return p.Top[i].N > p.Top[j].N || p.Top[i].N == p.Top[j].N && p.Top[i].Key < p.Top[j].Key
	})
	if len(p.Top) > 10 {
		p.Top = p.Top[:10]
	}
	p.Inc, _ = s.opts.Store.Incidents(ctx, p.Now.Add(-7*24*time.Hour), 10)
	s.render(w, "overview.html", p)
}

func (s *Server) bans(w http.ResponseWriter, r *http.Request) {
	p := s.base(r, "Bans")
	all, err := s.opts.Store.ActiveBans(r.Context(), p.Now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.Filter = r.URL.Query().Get("q")
	for _, b := range all {
		if p.Filter == "" || strings.Contains(b.Addr.String(), p.Filter) || strings.Contains(b.Jail, p.Filter) || strings.Contains(b.Reason, p.Filter) {
			p.Bans = append(p.Bans, b)
		}
	}
	sort.Slice(p.Bans, func(i, j int) bool { return p.Bans[i].Since.After(p.Bans[j].Since) })
	s.render(w, "bans.html", p)
}

func (s *Server) ban(w http.ResponseWriter, r *http.Request) {
	p := s.base(r, "Ban evidence")
	addr, err := netip.ParseAddr(r.URL.Query().Get("addr"))
	if err != nil {
		http.Error(w, "addr: not an address", http.StatusBadRequest)
		return
	}
	addr = addr.Unmap()
	p.Addr = addr.String()
	act, _ := s.opts.Store.ActiveBans(r.Context(), p.Now)
	for i := range act {
		if act[i].Prefix.Contains(addr) {
			p.Active = &act[i]
		}
	}
	if p.Evidence, err = s.opts.Store.EvidenceFor(r.Context(), addr, 10); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.render(w, "ban.html", p)
}

// banEvent is what the event stream sends for a new ban.
type banEvent struct {
	ID     int64  `json:"id"`
	Addr   string `json:"addr"`
	Prefix string `json:"prefix"`
	Jail   string `json:"jail"`
	Reason string `json:"reason"`
	At     string `json:"at"`
	Until  string `json:"until"`
}

// events streams new ban history rows (id > Last-Event-ID or ?after=).
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	var after int64
	fmt.Sscan(r.Header.Get("Last-Event-ID"), &after)
	if after == 0 {
		fmt.Sscan(r.URL.Query().Get("after"), &after)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	tick := time.NewTicker(s.opts.Poll)
	defer tick.Stop()
	for {
		hs, err := s.opts.Store.History(r.Context(), store.HistoryFilter{Limit: 200})
		if err == nil {
			for i := len(hs) - 1; i >= 0; i-- {
				h := hs[i]
				if h.ID <= after {
					continue
				}
				after = h.ID
				b, _ := json.Marshal(banEvent{ID: h.ID, Addr: h.Addr.String(), Prefix: h.Prefix.String(), Jail: h.Jail, Reason: h.Reason,
					At: h.At.UTC().Format("2006-01-02 15:04:05Z"), Until: h.Until.UTC().Format("2006-01-02 15:04:05Z")})
				fmt.Fprintf(w, "id: %d\nevent: ban\ndata: %s\n\n", h.ID, b) // JSON has no raw newline
			}
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

const cookieName = "pbxguard_session"

func (s *Server) sessionOf(r *http.Request) (string, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.session[c.Value]
	if !ok || time.Now().After(exp) {
		return "", false
	}
	return c.Value, true
}

func (s *Server) csrf(sid string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(sid))
	return hex.EncodeToString(m.Sum(nil))
}

// sameOrigin refuses cross-site posts that browsers label as such.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" && o != "null" && !strings.HasSuffix(o, "://"+r.Host) {
		return false
	}
	return true
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token == "" {
		http.Error(w, "read-only dashboard: set dashboard.token_file to allow actions", http.StatusForbidden)
		return
	}
	if !sameOrigin(r) {
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	tok := r.PostFormValue("token")
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) != 1 {
		http.Redirect(w, r, "/?msg=wrong+token", http.StatusSeeOther)
		return
	}
	b := make([]byte, 32)
	rand.Read(b)
	sid := hex.EncodeToString(b)
	s.mu.Lock()
	s.session[sid] = time.Now().Add(12 * time.Hour)
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: s.opts.CertFile != "", MaxAge: 12 * 3600})
	http.Redirect(w, r, "/?msg=actions+enabled", http.StatusSeeOther)
}

func (s *Server) unban(w http.ResponseWriter, r *http.Request) {
	sid, ok := s.sessionOf(r)
	if s.opts.Token == "" || !ok {
		http.Error(w, "unban refused: log in with the dashboard token first (dashboard.token_file)", http.StatusForbidden)
		return
	}
	if !sameOrigin(r) || !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(s.csrf(sid))) {
		http.Error(w, "unban refused: bad or missing CSRF token (reload the page)", http.StatusForbidden)
		return
	}
	p, err := parseTarget(r.PostFormValue("prefix"))
	if err != nil || s.opts.Unban == nil {
		http.Error(w, "unban: "+fmt.Sprint(err), http.StatusBadRequest)
		return
	}
	if err := s.opts.Unban(r.Context(), p); err != nil {
		http.Error(w, "unban failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	s.opts.Logger.Info("dashboard: unbanned", "prefix", p)
	http.Redirect(w, r, "/bans?msg=unbanned+"+p.String(), http.StatusSeeOther)
}

func parseTarget(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// feed serves the active bans as a plain blocklist, one address or CIDR a
// line (what fail2ban, CrowdSec lists or another firewall can pull):
// `Authorization: Bearer <token>` is required; ?jail=J (repeatable)
// restricts it; an ETag lets a poller skip an unchanged list.
func (s *Server) feed(w http.ResponseWriter, r *http.Request) {
	if s.opts.Token == "" {
		http.Error(w, "the feed needs a token: set dashboard.token_file", http.StatusForbidden)
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pbxguard feed"`)
		http.Error(w, "unauthorized: send Authorization: Bearer <dashboard token>", http.StatusUnauthorized)
		return
	}
	now := time.Now()
	all, err := s.opts.Store.ActiveBans(r.Context(), now)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	jails := r.URL.Query()["jail"]
	lines := make([]string, 0, len(all))
	for _, b := range all {
		if len(jails) > 0 && !slices.Contains(jails, b.Jail) {
			continue
		}
		if b.Prefix.IsSingleIP() {
			lines = append(lines, b.Prefix.Addr().String())
		} else {
			lines = append(lines, b.Prefix.Masked().String())
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	body := strings.Join(lines, "\n")
	if body != "" {
		body += "\n"
	}
	sum := sha256.Sum256([]byte(body))
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "# pbxguard active bans: %d, %s\n", len(lines), now.UTC().Format(time.RFC3339))
	io.WriteString(w, body)
}
