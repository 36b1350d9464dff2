package migrate

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/detect"
	"github.com/pbxguard/pbxguard/internal/event"
	"github.com/pbxguard/pbxguard/internal/jail"
)

func TestFail2banDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		perm bool
		bad  bool
	}{
		{"600", 10 * time.Minute, false, false},
		{"10m", 10 * time.Minute, false, false},
		{"1h", time.Hour, false, false},
		{"1h 30m", 90 * time.Minute, false, false},
		{"1d12h", 36 * time.Hour, false, false},
		{"1w", 7 * 24 * time.Hour, false, false},
		{"2mo", 60 * 24 * time.Hour, false, false},
		{"1y", 365 * 24 * time.Hour, false, false},
		{"5 minutes", 5 * time.Minute, false, false},
		{"3 days", 72 * time.Hour, false, false},
		{"30s", 30 * time.Second, false, false},
		{"-1", 0, true, false},
		{"-5", 0, true, false},
		{"", 0, false, true},
		{"1 fortnight", 0, false, true},
		{"abc", 0, false, true},
		{"18446744074", 0, false, true},
	} {
		d, perm, err := Fail2banDuration(c.in)
		if (err != nil) != c.bad || d != c.want || perm != c.perm {
			t.Errorf("%q: %v %v %v, want %v %v bad=%v", c.in, d, perm, err, c.want, c.perm, c.bad)
		}
	}
}

func TestINIParse(t *testing.T) {
	c := newINI()
	src := "[DEFAULT]\nmaxretry = 5 ; inline comment\nfilter = %(__name__)s\n[sshd]\nignoreip = 192.0.2.1\n    192.0.2.2\nlogpath: /var/log/auth.log # comment\n"
	if err := c.parse(strings.NewReader(src), "jail.local"); err != nil {
		t.Fatal(err)
	}
	if v, _ := c.get("sshd", "maxretry"); v != "5" {
		t.Errorf("maxretry %q", v)
	}
	if v, _ := c.get("sshd", "filter"); v != "sshd" {
		t.Errorf("filter %q", v)
	}
	if v, _ := c.get("sshd", "ignoreip"); v != "192.0.2.1\n192.0.2.2" {
		t.Errorf("ignoreip %q", v)
	}
	if v, _ := c.get("sshd", "logpath"); v != "/var/log/auth.log" {
		t.Errorf("logpath %q", v)
	}
	for _, bad := range []string{"maxretry = 3\n", "[sshd\n", "[sshd]\nno equals sign\n"} {
		if err := newINI().parse(strings.NewReader(bad), "x"); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

// TestImportTestdata: a Debian-shaped /etc/fail2ban (jail.conf, jail.d,
// jail.local) with asterisk, sshd and recidive, ignoreip with CIDRs and a
// host name, bantime = -1, bantime.increment = true.
func TestImportTestdata(t *testing.T) {
	files, c, err := LoadFail2ban("testdata/fail2ban")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 || !strings.HasSuffix(files[0], "jail.conf") || !strings.HasSuffix(files[1], "defaults-debian.conf") || !strings.HasSuffix(files[2], "jail.local") {
		t.Fatalf("files read (fail2ban's order): %v", files)
	}
	im, err := Convert(files, c)
	if err != nil {
		t.Fatal(err)
	}
	var allow []string
	for _, p := range im.Allowlist {
		allow = append(allow, p.String())
	}
	if got := strings.Join(allow, " "); got != "127.0.0.0/8 ::1/128 198.51.100.0/24 203.0.113.250/32 2001:db8:1::/48" {
		t.Errorf("allowlist %s", got)
	}
	if notes := strings.Join(im.Notes, "\n"); !strings.Contains(notes, `"monitor.example.net"`) || strings.Contains(notes, "nginx-http-auth") {
		t.Errorf("notes: %q", im.Notes)
	}
	byName := map[string]Jail{}
	for _, j := range im.Jails {
		byName[j.Name] = j
	}
	if len(im.Jails) != 2 {
		t.Fatalf("jails: %+v", im.Jails)
	}
	ssh, ast := byName["sshd"], byName["asterisk"]
	if !ssh.Enabled || ssh.Detector != "sshd" || ssh.MaxRetry != 3 || ssh.FindTime != 10*time.Minute || ssh.BanTime != time.Hour || ssh.Permanent || ssh.Increment != 2 || ssh.MaxBan != 5*7*24*time.Hour || !ssh.Journal || len(ssh.Files) != 0 {
		t.Errorf("sshd: %+v", ssh)
	}
	if !ast.Enabled || ast.Detector != "asterisk" || ast.MaxRetry != 4 || ast.FindTime != 90*time.Minute || !ast.Permanent || len(ast.Files) != 0 {
		t.Errorf("asterisk: %+v", ast)
	}
	var b bytes.Buffer
	if err := im.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	y := b.String()
	for _, want := range []string{"bantime: permanent", "maxbantime: 5w", "findtime: 1h30m", "# fail2ban: recidive", `- "2001:db8:1::/48"`, "# NOTE: ignoreip \"monitor.example.net\""} {
		if !strings.Contains(y, want) {
			t.Errorf("YAML lacks %q:\n%s", want, y)
		}
	}
}

// importYAML converts an in-memory jail.local and returns the parsed
// pbxguard configuration: the import must pass config check.
func importYAML(t *testing.T, local string) (*config.Config, string) {
	t.Helper()
	c := newINI()
	if err := c.parse(strings.NewReader(local), "jail.local"); err != nil {
		t.Fatal(err)
	}
	im, err := Convert([]string{"jail.local"}, c)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := im.WriteYAML(&b); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b.Bytes(), config.Options{HostPrefixes: func() []netip.Prefix { return nil }})
	if err != nil {
		t.Fatalf("config check refuses the import: %v\n%s", err, b.String())
	}
	return cfg, b.String()
}

// f2bSim is fail2ban's jail logic, written from its documentation: an
// address is banned when maxretry failures fall within findtime of the
// latest one; failures of a banned address are ignored until the ban
// ends; with bantime.increment the n-th ban lasts bantime × 2^(n-1)
// (factor 1), capped at bantime.maxtime.
type f2bSim struct {
	maxretry  int
	findtime  time.Duration
	bantime   time.Duration
	increment bool
	maxtime   time.Duration
	fails     map[netip.Addr][]time.Time
	until     map[netip.Addr]time.Time
	count     map[netip.Addr]int
}

func (s *f2bSim) observe(a netip.Addr, at time.Time) (time.Duration, bool) {
	if at.Before(s.until[a]) {
		return 0, false
	}
	var keep []time.Time
	for _, f := range append(s.fails[a], at) {
		if at.Sub(f) < s.findtime {
			keep = append(keep, f)
		}
	}
	s.fails[a] = keep
	if len(keep) < s.maxretry {
		return 0, false
	}
	d := s.bantime
	if s.increment {
		d = s.bantime << min(s.count[a], 20)
		if s.maxtime > 0 && d > s.maxtime {
			d = s.maxtime
		}
	}
	s.count[a]++
	s.fails[a] = nil
	s.until[a] = at.Add(d)
	return d, true
}

type histMap map[netip.Addr]int

func (h histMap) PriorBans(a netip.Addr) int { return h[a] }

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

// TestImportBehavesLikeFail2ban replays one sshd log through the imported
// jail (pbxguard's detector and jail) and through fail2ban's jail logic
// with the original settings: the same addresses are banned at the same
// lines for the same durations.
func TestImportBehavesLikeFail2ban(t *testing.T) {
	cfg, y := importYAML(t, "[DEFAULT]\nignoreip = 127.0.0.1/8 198.51.100.0/24\nbantime.increment = true\nbantime.maxtime = 6h\n[sshd]\nenabled = true\nmaxretry = 3\nfindtime = 10m\nbantime = 1h\nlogpath = /var/log/auth.log\n")
	var jc config.Jail
	for _, j := range cfg.Jails {
		if j.Name == "sshd" {
			jc = j
		}
	}
	if jc.Name == "" || len(jc.Files) != 1 || jc.Files[0] != "/var/log/auth.log" {
		t.Fatalf("sshd jail: %+v\n%s", jc, y)
	}
	clk := &clock{}
	hist := histMap{}
	j, err := jail.New(jail.Config{Name: jc.Name, MaxRetry: jc.MaxRetry, FindTime: jc.FindTime, BanTime: jc.BanTime,
		MaxBanTime: jc.MaxBanTime, Increment: jc.Increment, Weights: jc.Weights, IPv6Prefix: 128, MaxTracked: jc.MaxTracked},
		jail.NewAllowlist(cfg.Allowlist), hist, clk)
	if err != nil {
		t.Fatal(err)
	}
	sim := &f2bSim{maxretry: 3, findtime: 10 * time.Minute, bantime: time.Hour, increment: true, maxtime: 6 * time.Hour,
		fails: map[netip.Addr][]time.Time{}, until: map[netip.Addr]time.Time{}, count: map[netip.Addr]int{}}

	// The log: attackers with different rhythms, over two days.
	start := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	type line struct {
		at   time.Time
		addr string
	}
	var log []line
	add := func(addr string, offsets ...time.Duration) {
		for _, o := range offsets {
			log = append(log, line{start.Add(o), addr})
		}
	}
	m := time.Minute
	add("203.0.113.5", 0, 1*m, 2*m, 3*m, 130*m, 131*m, 132*m, 400*m, 401*m, 402*m, 900*m, 901*m, 902*m, 1500*m, 1501*m, 1502*m) // repeat offender: 1h, 2h, 4h, 6h (cap), 6h
	add("203.0.113.6", 0, 5*m, 11*m, 17*m, 23*m)                                                                                // slow: never 3 within 10m
	add("203.0.113.7", 10*m, 10*m+30*time.Second, 19*m+59*time.Second)                                                          // 3 inside 10m: banned
	add("198.51.100.9", 0, 1*m, 2*m, 3*m, 4*m)                                                                                  // allowlisted office
	add("2001:db8::66", 30*m, 31*m, 32*m, 95*m, 96*m, 97*m)                                                                     // banned 1h at 32m; 95..97 after the ban ends → banned 2h
	sort.SliceStable(log, func(a, b int) bool { return log[a].at.Before(log[b].at) })

	det, err := detect.New("sshd", detect.Options{Location: time.UTC, Now: func() time.Time { return clk.t }})
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for i, l := range log {
		clk.t = l.at
		text := fmt.Sprintf("%s vm sshd[%d]: Failed password for root from %s port 4%03d ssh2", l.at.Format(time.Stamp), 100+i, l.addr, i)
		var ev event.Event
		if !det.Detect([]byte(text), &ev) {
			t.Fatalf("not detected: %s", text)
		}
		if d, ok := j.Observe(&ev); ok {
			hist[d.Addr]++
			got = append(got, fmt.Sprintf("%s %s %s", l.at.Format("15:04:05"), d.Addr, d.Duration))
		}
		a := netip.MustParseAddr(l.addr)
		if a.Is4() && netip.MustParsePrefix("198.51.100.0/24").Contains(a) {
			continue // fail2ban's ignoreip
		}
		if d, ok := sim.observe(a, l.at); ok {
			want = append(want, fmt.Sprintf("%s %s %s", l.at.Format("15:04:05"), a, d))
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(want) != 8 {
		t.Fatalf("pbxguard (imported) bans:\n%s\nfail2ban semantics:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
