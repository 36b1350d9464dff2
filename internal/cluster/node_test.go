package cluster

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeApplier records what a node applied; allow refuses like an allowlist.
type fakeApplier struct {
	mu      sync.Mutex
	bans    map[netip.Prefix]time.Time
	origins map[netip.Prefix]string
	unbans  []netip.Prefix
	allow   netip.Prefix
}

func newFake() *fakeApplier {
	return &fakeApplier{bans: map[netip.Prefix]time.Time{}, origins: map[netip.Prefix]string{}}
}

func (f *fakeApplier) ApplyRemote(_ context.Context, rs []Remote) ([]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]bool, len(rs))
	for i, r := range rs {
		if f.allow.IsValid() && f.allow.Overlaps(r.Ban.Prefix) {
			continue
		}
		f.bans[r.Ban.Prefix] = r.Until
		f.origins[r.Ban.Prefix] = r.Ban.Origin
		out[i] = true
	}
	return out, nil
}

func (f *fakeApplier) UnbanRemote(_ context.Context, b Ban) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.bans, b.Prefix)
	f.unbans = append(f.unbans, b.Prefix)
	return nil
}

func (f *fakeApplier) get(p netip.Prefix) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.bans[p]
	return u, ok
}

func (f *fakeApplier) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bans)
}

func startServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := StartServer(ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func startNode(t *testing.T, url string, o Options, f Applier) *Node {
	t.Helper()
	o.URLs = []string{url}
	n, err := New(o, f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

// eventually polls cond every 5 ms for at most 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func ban(p string, origin string, at time.Time, d time.Duration) Ban {
	return Ban{Op: OpBan, Prefix: netip.MustParsePrefix(p), Jail: "asterisk", Reason: "test", Origin: origin, At: at, Until: at.Add(d), BanCount: 1}
}

func TestBanReachesOtherNodeNotItself(t *testing.T) {
	s := startServer(t)
	fa, fb := newFake(), newFake()
	a := startNode(t, s.ClientURL(), Options{Node: "a"}, fa)
	b := startNode(t, s.ClientURL(), Options{Node: "b", MaxBanTime: 2 * time.Hour}, fb)
	now := time.Now()
	p := netip.MustParsePrefix("203.0.113.9/32")
	a.Offer(ban(p.String(), "", now, 24*time.Hour))
	eventually(t, "b applies a's ban", func() bool { _, ok := fb.get(p); return ok })
	until, _ := fb.get(p)
	if d := until.Sub(now); d > 2*time.Hour+time.Second || d < 2*time.Hour-time.Minute {
		t.Fatalf("remote ban not capped by max_bantime: lasts %s", d)
	}
	eventually(t, "a sees its own message", func() bool { return a.Stats().Snapshot().Ignored == 1 })
	if fa.count() != 0 {
		t.Fatalf("a applied its own ban: %v", fa.bans)
	}
	if sn := a.Stats().Snapshot(); sn.Published != 1 || sn.Outbox != 0 {
		t.Fatalf("a: published %d, outbox %d; want 1, 0", sn.Published, sn.Outbox)
	}
	sn := b.Stats().Snapshot()
	if sn.Applied != 1 || len(sn.Nodes) != 1 || sn.Nodes[0].Node != "a" || sn.Nodes[0].Bans != 1 {
		t.Fatalf("b's stats: %+v", sn)
	}
	// The unban follows.
	a.Offer(Ban{Op: OpUnban, Prefix: p, Jail: "manual", At: time.Now()})
	eventually(t, "b lifts the ban", func() bool { _, ok := fb.get(p); return !ok })
}

func TestAllowlistedRemoteBanCountedNotApplied(t *testing.T) {
	s := startServer(t)
	fb := newFake()
	fb.allow = netip.MustParsePrefix("198.51.100.0/24")
	a := startNode(t, s.ClientURL(), Options{Node: "a"}, newFake())
	b := startNode(t, s.ClientURL(), Options{Node: "b"}, fb)
	a.Offer(ban("198.51.100.5/32", "", time.Now(), time.Hour))
	a.Offer(ban("203.0.113.5/32", "", time.Now(), time.Hour))
	eventually(t, "b applies the second ban", func() bool { return fb.count() == 1 })
	if sn := b.Stats().Snapshot(); sn.Allowlisted != 1 || sn.Applied != 1 {
		t.Fatalf("allowlisted %d applied %d; want 1 1", sn.Allowlisted, sn.Applied)
	}
}

func TestMinReportersAndAcceptFrom(t *testing.T) {
	s := startServer(t)
	fc := newFake()
	a := startNode(t, s.ClientURL(), Options{Node: "a"}, newFake())
	b := startNode(t, s.ClientURL(), Options{Node: "b"}, newFake())
	x := startNode(t, s.ClientURL(), Options{Node: "x"}, newFake())
	c := startNode(t, s.ClientURL(), Options{Node: "c", MinReporters: 2, AcceptFrom: []string{"a", "b"}}, fc)
	p := netip.MustParsePrefix("203.0.113.20/32")
	a.Offer(ban(p.String(), "", time.Now(), time.Hour))
	x.Offer(ban(p.String(), "", time.Now(), time.Hour)) // not accepted: does not count
	eventually(t, "c rejects x", func() bool { return c.Stats().Snapshot().Rejected[ReasonNotFrom] == 1 })
	eventually(t, "c waits", func() bool { return c.Stats().Snapshot().Waiting == 1 })
	if _, ok := fc.get(p); ok {
		t.Fatal("c applied a ban reported by one accepted node with min_reporters 2")
	}
	b.Offer(ban(p.String(), "", time.Now(), time.Hour))
	eventually(t, "c applies after the second reporter", func() bool { _, ok := fc.get(p); return ok })
}

func TestForgedMessagesRejected(t *testing.T) {
	s := startServer(t)
	fb := newFake()
	b := startNode(t, s.ClientURL(), Options{Node: "b"}, fb)
	eventually(t, "stream", func() bool { return b.Status(context.Background()).Error == "" })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	good, _ := Encode(ban("203.0.113.30/32", "a", time.Now(), time.Hour))
	wide, _ := Encode(ban("203.0.113.31/32", "a", time.Now(), time.Hour))
	wide = []byte(string(wide[:0]) + replaceOnce(string(wide), "203.0.113.31/32", "0.0.0.0/0"))
	ctx := context.Background()
	for subj, data := range map[string][]byte{
		Subject("mallory"): good, // origin a, published on mallory's subject
		Subject("a"):       wide,
		Subject("a") + "x": []byte("{"),
	} {
		if _, err := js.Publish(ctx, subj, data); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "three rejections", func() bool {
		r := b.Stats().Snapshot().Rejected
		return r[ReasonOrigin] == 1 && r[ReasonPrefix] == 1 && r[ReasonSchema] == 1
	})
	if fb.count() != 0 {
		t.Fatalf("forged bans applied: %v", fb.bans)
	}
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	return s
}

func TestCatchUpAppliesOnlyActiveBans(t *testing.T) {
	s := startServer(t)
	a := startNode(t, s.ClientURL(), Options{Node: "a"}, newFake())
	now := time.Now()
	a.Offer(ban("203.0.113.40/32", "", now.Add(-2*time.Hour), time.Hour)) // expired an hour ago
	a.Offer(ban("203.0.113.41/32", "", now.Add(-30*time.Minute), time.Hour))
	eventually(t, "published", func() bool { return a.Stats().Snapshot().Published == 2 })
	fc := newFake()
	c := startNode(t, s.ClientURL(), Options{Node: "c"}, fc)
	eventually(t, "c caught up", func() bool { return fc.count() == 1 && c.Stats().Snapshot().Expired == 1 })
	until, ok := fc.get(netip.MustParsePrefix("203.0.113.41/32"))
	if !ok || !until.Equal(now.Add(30*time.Minute).Truncate(time.Millisecond)) && until.Sub(now.Add(30*time.Minute)).Abs() > time.Millisecond {
		t.Fatalf("c applied %v until %v; want the active ban with its remaining time", fc.bans, until)
	}
}

func TestOutboxWaitsForNATSAndDeduplicates(t *testing.T) {
	dir := t.TempDir()
	// A port nobody listens on yet.
	probe, err := StartServer(ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(interface{ String() string }).String()
	probe.Shutdown()
	probe.WaitForShutdown()
	a := startNode(t, "nats://"+port, Options{Node: "a"}, newFake())
	now := time.Now()
	b1 := ban("203.0.113.50/32", "", now, time.Hour)
	a.Offer(b1)
	a.Offer(b1) // the same ban twice: one message in the stream
	a.Offer(ban("203.0.113.51/32", "", now, time.Hour))
	time.Sleep(300 * time.Millisecond)
	if n := a.OutboxLen(); n != 3 {
		t.Fatalf("outbox holds %d while NATS is down; want 3", n)
	}
	s, err := StartServer(ServerOptions{Listen: port, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	eventually(t, "outbox drained", func() bool { return a.OutboxLen() == 0 })
	eventually(t, "stream holds the messages", func() bool { return a.Status(context.Background()).Messages == 2 })
	time.Sleep(100 * time.Millisecond)
	if st := a.Status(context.Background()); st.Messages != 2 || !st.Connected {
		t.Fatalf("status %+v: want 2 messages (duplicate dropped), connected", st)
	}
}

func TestOutboxBounded(t *testing.T) {
	p := NewPublisher("a", 3, nil, nil)
	for i := range 5 {
		p.Offer(ban("203.0.113.60/32", "", t0.Add(time.Duration(i)*time.Second), time.Hour))
	}
	if p.Len() != 3 || p.stats.outboxDropped.Load() != 2 {
		t.Fatalf("len %d dropped %d; want 3, 2", p.Len(), p.stats.outboxDropped.Load())
	}
	if got := p.take(10)[0].At; !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("oldest kept is %v; the two oldest should have gone", got)
	}
}

// memOutbox is an OutboxStore in memory that counts writes.
type memOutbox struct {
	mu     sync.Mutex
	msgs   [][]byte
	writes int
}

func (m *memOutbox) Replace(_ context.Context, msgs [][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.msgs, m.writes = append([][]byte(nil), msgs...), m.writes+1
	return nil
}

func (m *memOutbox) Load(context.Context) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][]byte(nil), m.msgs...), nil
}

func (m *memOutbox) len() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.msgs) }

func TestOutboxSavedWhileNATSDownAndSentAfterRestart(t *testing.T) {
	// A port nobody listens on yet.
	probe, err := StartServer(ServerOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Shutdown()
	probe.WaitForShutdown()
	saved := &memOutbox{}
	o := Options{Node: "a", URLs: []string{"nats://" + addr}, OutboxStore: saved}
	n, err := New(o, newFake())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx) }()
	now := time.Now()
	n.Offer(ban("203.0.113.90/32", "", now, time.Hour))
	n.Offer(ban("203.0.113.91/32", "", now, time.Hour))
	eventually(t, "outbox saved while NATS is down", func() bool { return saved.len() == 2 })
	cancel() // the daemon stops with the two still waiting
	<-done
	if saved.len() != 2 {
		t.Fatalf("saved outbox holds %d after stop; want 2", saved.len())
	}

	// Next start: NATS is back; the saved bans go out and the store is cleared.
	s, err := StartServer(ServerOptions{Listen: addr, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	fb := newFake()
	startNode(t, s.ClientURL(), Options{Node: "b"}, fb)
	a2 := startNode(t, s.ClientURL(), Options{Node: "a", OutboxStore: saved}, newFake())
	eventually(t, "b gets the saved bans", func() bool { return fb.count() == 2 })
	eventually(t, "saved outbox cleared", func() bool { return saved.len() == 0 })
	if a2.Stats().Snapshot().Published != 2 {
		t.Fatalf("published %d", a2.Stats().Snapshot().Published)
	}
}

func TestOutboxNotWrittenWhenNATSIsUp(t *testing.T) {
	s := startServer(t)
	saved := &memOutbox{}
	a := startNode(t, s.ClientURL(), Options{Node: "a", OutboxStore: saved}, newFake())
	for i := range 50 {
		a.Offer(ban("203.0.113.100/32", "", time.Now().Add(time.Duration(i)*time.Millisecond), time.Hour))
	}
	eventually(t, "published", func() bool { return a.Stats().Snapshot().Published == 50 })
	saved.mu.Lock()
	defer saved.mu.Unlock()
	if saved.writes != 0 {
		t.Fatalf("the outbox was written %d times while NATS was up: the happy path must not touch the disk", saved.writes)
	}
}

// TestNodeCannotPublishAsAnother: with the documented permissions, node a
// shares bans with b, and a connection with a's credentials cannot put a
// message on b's subject.
func TestNodeCannotPublishAsAnother(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true,
		Users: []*server.User{
			{Username: "a", Password: "pa", Permissions: NodePermissions("a", DefaultStream)},
			{Username: "b", Password: "pb", Permissions: NodePermissions("b", DefaultStream)},
		}}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	fb := newFake()
	a := startNode(t, s.ClientURL(), Options{Node: "a", User: "a", Password: "pa"}, newFake())
	b := startNode(t, s.ClientURL(), Options{Node: "b", User: "b", Password: "pb"}, fb)
	a.Offer(ban("203.0.113.110/32", "", time.Now(), time.Hour))
	eventually(t, "b applies a's ban under the permissions", func() bool { return fb.count() == 1 })

	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("a", "pa"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	forged, _ := Encode(ban("203.0.113.111/32", "b", time.Now(), time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := js.Publish(ctx, Subject("b"), forged); err == nil {
		t.Fatal("a's credentials published on b's subject")
	}
	// And a cannot delete the stream.
	if err := js.DeleteStream(ctx, DefaultStream); err == nil {
		t.Fatal("a's credentials deleted the stream")
	}
	time.Sleep(100 * time.Millisecond)
	if _, ok := fb.get(netip.MustParsePrefix("203.0.113.111/32")); ok {
		t.Fatal("the forged ban was applied")
	}
	if st := b.Status(context.Background()); st.Messages != 1 {
		t.Fatalf("stream holds %d messages; want only a's ban", st.Messages)
	}
}

// TestResumeSkipsBansExpiredWhileAway: a node that was stopped resumes its
// durable consumer where it stopped; of the bans published meanwhile it
// applies only those still active, with their remaining time.
func TestResumeSkipsBansExpiredWhileAway(t *testing.T) {
	s := startServer(t)
	a := startNode(t, s.ClientURL(), Options{Node: "a"}, newFake())
	fc := newFake()
	c, err := New(Options{Node: "c", URLs: []string{s.ClientURL()}}, fc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	a.Offer(ban("203.0.113.120/32", "", time.Now(), time.Hour))
	eventually(t, "c applies the first ban", func() bool { return fc.count() == 1 })
	eventually(t, "c's ack reaches the server", func() bool {
		st := c.Status(context.Background())
		return st.Error == "" && st.Lag == 0
	})
	cancel()
	<-done

	now := time.Now()
	a.Offer(ban("203.0.113.121/32", "", now, 300*time.Millisecond)) // over before c is back
	a.Offer(ban("203.0.113.122/32", "", now, time.Hour))
	eventually(t, "published", func() bool { return a.Stats().Snapshot().Published == 3 })
	time.Sleep(400 * time.Millisecond)
	fc2 := newFake()
	c2 := startNode(t, s.ClientURL(), Options{Node: "c"}, fc2)
	p122 := netip.MustParsePrefix("203.0.113.122/32")
	eventually(t, "c catches up", func() bool {
		_, ok := fc2.get(p122)
		return ok && c2.Stats().Snapshot().Expired == 1
	})
	if _, ok := fc2.get(netip.MustParsePrefix("203.0.113.121/32")); ok {
		t.Fatalf("c applied the ban that ended while it was away: %v", fc2.bans)
	}
	// Delivery is at least once: an ack still in flight when c stopped
	// may bring the first ban back once more, never anything older.
	if sn := c2.Stats().Snapshot(); sn.Received < 2 || sn.Received > 3 {
		t.Fatalf("c received %d messages after resuming; want the 2 it missed (3 if its last ack was in flight)", sn.Received)
	}
}
