package dashboard

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/store"
)

const xss = `<script>alert(1)</script>"'&`

func seed(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	addBan(t, st, "203.0.113.66", time.Now())
	return st
}

func addBan(t *testing.T, st *store.Store, addr string, at time.Time) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	p := netip.PrefixFrom(a, 32)
	ctx := context.Background()
	if err := st.AddBans(ctx, []store.Ban{{Prefix: p, Addr: a, Jail: "asterisk", Reason: "5 failures: auth_failure×5", Since: at, Until: at.Add(time.Hour), Count: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddEvidence(ctx, []store.Evidence{{Prefix: p, Addr: a, Jail: "asterisk", At: at, Until: at.Add(time.Hour), Reason: "r",
		Events: []store.EvidenceEvent{{Time: at, Kind: "auth_failure", Account: xss, Counted: true, Source: "/var/log/asterisk/messages", Line: 84,
			Raw: "NOTICE from '" + xss + "' failed for '" + addr + ":5060'"}}}}); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	r, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

func TestPagesEscapeAndActions(t *testing.T) {
	st := seed(t)
	var mu sync.Mutex
	var unbanned []netip.Prefix
	s, err := New(Options{Store: st, Token: "s3cret", Poll: 10 * time.Millisecond, Unban: func(_ context.Context, p netip.Prefix) error {
		mu.Lock()
		unbanned = append(unbanned, p)
		mu.Unlock()
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}

	for _, path := range []string{"/", "/bans", "/ban?addr=203.0.113.66"} {
		code, body := get(t, c, srv.URL+path)
		if code != 200 || !strings.Contains(body, "203.0.113.66") {
			t.Fatalf("%s: %d\n%s", path, code, body)
		}
		if strings.Contains(body, "<script>alert") {
			t.Fatalf("%s: attacker text rendered as markup:\n%s", path, body)
		}
	}
	_, body := get(t, c, srv.URL+"/ban?addr=203.0.113.66")
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") || !strings.Contains(body, "/var/log/asterisk/messages:84") {
		t.Fatalf("evidence page: %s", body)
	}

	// Unban without the token: refused.
	r, _ := c.PostForm(srv.URL+"/unban", url.Values{"prefix": {"203.0.113.66/32"}})
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("unban without login: %d", r.StatusCode)
	}
	// Wrong token: no session.
	c.PostForm(srv.URL+"/login", url.Values{"token": {"nope"}})
	if _, body := get(t, c, srv.URL+"/bans"); strings.Contains(body, `name="csrf"`) {
		t.Fatal("wrong token gave a session")
	}
	c.PostForm(srv.URL+"/login", url.Values{"token": {"s3cret"}})
	_, body = get(t, c, srv.URL+"/bans")
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatalf("logged in, no csrf in the page:\n%s", body)
	}
	csrf := body[i+len(`name="csrf" value="`):]
	csrf = csrf[:strings.IndexByte(csrf, '"')]
	// Logged in but no CSRF token (what a cross-site form would send): refused.
	r, _ = c.PostForm(srv.URL+"/unban", url.Values{"prefix": {"203.0.113.66/32"}})
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("unban without csrf: %d", r.StatusCode)
	}
	r, _ = c.PostForm(srv.URL+"/unban", url.Values{"prefix": {"203.0.113.66/32"}, "csrf": {csrf}})
	mu.Lock()
	got := unbanned
	mu.Unlock()
	if r.StatusCode != 200 || len(got) != 1 || got[0].String() != "203.0.113.66/32" {
		t.Fatalf("unban with token and csrf: %d, unbanned %v", r.StatusCode, got)
	}

	// The event stream sends a ban made after it opened.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events?after=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	addBan(t, st, "198.51.100.7", time.Now())
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			if !strings.Contains(sc.Text(), `"addr":"198.51.100.7"`) {
				t.Fatalf("event: %s", sc.Text())
			}
			return
		}
	}
	t.Fatalf("no ban event: %v", sc.Err())
}

func TestNonLoopbackNeedsTLSAndToken(t *testing.T) {
	st := seed(t)
	if _, err := New(Options{Store: st, Listen: "0.0.0.0:9470"}); err == nil || !strings.Contains(err.Error(), "token_file") {
		t.Fatalf("0.0.0.0 without TLS/token: %v", err)
	}
	if _, err := New(Options{Store: st, Listen: "127.0.0.1:9470"}); err != nil {
		t.Fatal(err)
	}
}

// TestFeed: the active bans as a plain list, only with the token; an
// unchanged list answers 304 to its ETag; ?jail= filters.
func TestFeed(t *testing.T) {
	st := seed(t) // 203.0.113.66, jail asterisk
	ctx := context.Background()
	now := time.Now()
	if err := st.AddBans(ctx, []store.Ban{
		{Prefix: netip.MustParsePrefix("2001:db8:5::/64"), Addr: netip.MustParseAddr("2001:db8:5::1"), Jail: "sshd", Reason: "r", Since: now, Until: now.Add(time.Hour), Count: 1},
		{Prefix: netip.MustParsePrefix("198.51.100.9/32"), Addr: netip.MustParseAddr("198.51.100.9"), Jail: "sshd", Reason: "over", Since: now.Add(-2 * time.Hour), Until: now.Add(-time.Hour), Count: 1},
	}); err != nil {
		t.Fatal(err)
	}
	ask := func(s *Server, path, auth, etag string) (int, string, string) {
		req := httptest.NewRequest("GET", path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, req)
		return w.Code, w.Body.String(), w.Header().Get("ETag")
	}
	open, err := New(Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	if code, _, _ := ask(open, "/feed.txt", "", ""); code != http.StatusForbidden {
		t.Errorf("no token configured: %d, want 403", code)
	}
	s, err := New(Options{Store: st, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Basic czNjcmV0"} {
		if code, body, _ := ask(s, "/feed.txt", auth, ""); code != http.StatusUnauthorized || strings.Contains(body, "203.0.113.66") {
			t.Errorf("auth %q: %d %q, want 401 and no list", auth, code, body)
		}
	}
	code, body, etag := ask(s, "/feed.txt", "Bearer s3cret", "")
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if code != http.StatusOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "# pbxguard active bans: 2,") ||
		lines[1] != "2001:db8:5::/64" || lines[2] != "203.0.113.66" || etag == "" {
		t.Fatalf("feed %d %q (etag %q)", code, body, etag)
	}
	if code, body, _ := ask(s, "/feed.txt", "Bearer s3cret", etag); code != http.StatusNotModified || body != "" {
		t.Errorf("unchanged list with its ETag: %d %q, want 304", code, body)
	}
	if code, body, _ := ask(s, "/feed.txt?jail=sshd", "Bearer s3cret", ""); code != http.StatusOK || !strings.HasSuffix(body, "\n2001:db8:5::/64\n") || strings.Contains(body, "203.0.113.66") {
		t.Errorf("jail=sshd: %d %q", code, body)
	}
	addBan(t, st, "192.0.2.44", time.Now())
	if code, body, _ := ask(s, "/feed.txt", "Bearer s3cret", etag); code != http.StatusOK || !strings.Contains(body, "\n192.0.2.44\n") {
		t.Errorf("after a new ban, the old ETag: %d %q, want 200 with it", code, body)
	}
}

// TestOverviewHealth: the overview says whether the kernel, the store and
// the AMI connection are doing their job, escaped.
func TestOverviewHealth(t *testing.T) {
	st := seed(t)
	since := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	h := Health{KernelChecked: true, OutOfSyncSince: since, Missing: []string{"table inet pbxguard"}, KernelError: "no such file or directory",
		StoreOK: true, Workers: []WorkerHealth{{Name: "ami", Since: since, Error: "dial tcp 127.0.0.1:5038: " + xss}, {Name: "sensor", Up: true, Since: since}}}
	s, err := New(Options{Store: st, Health: func() Health { return h }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	_, body := get(t, srv.Client(), srv.URL+"/")
	for _, want := range []string{
		"OUT OF SYNC since 2026-12-05 09:00:00Z", "missing: table inet pbxguard", "last error: no such file or directory",
		"Store: <span class=\"ok\">writing", "ami: <strong class=\"bad\">DOWN since 2026-12-05 09:00:00Z</strong>: dial tcp 127.0.0.1:5038: &lt;script&gt;",
		"sensor: <span class=\"ok\">up since",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Error("a worker's error reached the page unescaped")
	}
	h = Health{KernelChecked: true, KernelInSync: true, StoreSince: since, StoreError: "disk full"}
	_, body = get(t, srv.Client(), srv.URL+"/")
	if !strings.Contains(body, "in sync with the store") || !strings.Contains(body, "FAILING since 2026-12-05 09:00:00Z</strong>: disk full") {
		t.Errorf("in sync, store failing: %s", body)
	}
}
