package daemon

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// FuzzControlRequest: any request line gets an answer, never a panic, and
// nothing allowlisted ever reaches the backend.
func FuzzControlRequest(f *testing.F) {
	st, err := store.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	fw := newFakeBackend()
	allowed := allowlist("127.0.0.0/8", "198.51.100.0/24", "2001:db8:1::/48")
	gate := firewall.WithAllowlist(fw, firewall.PrefixDenier([]netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}))
	d, err := New(Options{Store: st, Backend: gate, Allowed: allowed})
	if err != nil {
		f.Fatal(err)
	}
	s := &controlServer{d: d, log: slog.New(slog.DiscardHandler)}
	for _, seed := range []string{
		`{"cmd":"status"}`, `{"cmd":"bans"}`,
		`{"cmd":"ban","prefix":"203.0.113.66","for":"1h"}`,
		`{"cmd":"ban","prefix":"198.51.0.0/16"}`,
		`{"cmd":"ban","prefix":"::ffff:198.51.100.7"}`,
		`{"cmd":"unban","prefix":"203.0.113.0/24"}`,
		`{"cmd":"ban","prefix":"2001:db8::/32","for":"-5s"}`,
		`{"cmd":"nope"}`, `not json`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req Request
		var resp Response
		if json.Unmarshal(data, &req) == nil {
			resp = s.do(req)
		}
		if resp.OK && req.Cmd == "ban" && len(resp.Bans) != 1 {
			t.Fatalf("ban answered %+v", resp)
		}
		fw.mu.Lock()
		defer fw.mu.Unlock()
		for p := range fw.set {
			if _, hit := allowed(p); hit {
				t.Fatalf("allowlisted %s reached the backend (request %q)", p, data)
			}
		}
		if len(fw.set) > 1000 { // keep the fake small
			fw.set = map[netip.Prefix]time.Time{}
		}
	})
}
