// Package store keeps pbxguard's state in one SQLite file (pure-Go driver,
// WAL): active bans with their expiry, ban history (for increments), source
// offsets and journal cursors, and incidents.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pbxguard/pbxguard/internal/source"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// FileName is the database's name inside the state directory.
const FileName = "pbxguard.db"

// historyWindow is how far back ban history counts for increments.
const historyWindow = 90 * 24 * time.Hour

const schema = `
CREATE TABLE IF NOT EXISTS bans (
	prefix TEXT PRIMARY KEY,
	addr   TEXT NOT NULL,
	jail   TEXT NOT NULL,
	reason TEXT NOT NULL,
	since  INTEGER NOT NULL,
	until  INTEGER NOT NULL,
	count  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bans_until ON bans(until);
CREATE TABLE IF NOT EXISTS ban_history (
	id     INTEGER PRIMARY KEY,
	prefix TEXT NOT NULL,
	addr   TEXT NOT NULL,
	jail   TEXT NOT NULL,
	reason TEXT NOT NULL,
	at     INTEGER NOT NULL,
	until  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ban_history_addr ON ban_history(addr);
CREATE INDEX IF NOT EXISTS ban_history_at ON ban_history(at);
CREATE TABLE IF NOT EXISTS positions (
	source  TEXT PRIMARY KEY,
	path    TEXT NOT NULL,
	inode   INTEGER NOT NULL,
	size    INTEGER NOT NULL,
	offset  INTEGER NOT NULL,
	cursor  TEXT NOT NULL,
	checksum INTEGER NOT NULL,
	updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
	id      INTEGER PRIMARY KEY,
	time    INTEGER NOT NULL,
	kind    TEXT NOT NULL,
	subject TEXT NOT NULL,
	detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_time ON incidents(time);
`

// Ban is one active ban.
type Ban struct {
	Prefix netip.Prefix // what is in the kernel (a /32, /128, or a wider IPv6 prefix)
	Addr   netip.Addr   // the address that earned it
	Jail   string       // jail name, or "manual"
	Reason string
	Since  time.Time
	Until  time.Time
	Count  int // how many times this address has been banned, this one included
}

// Forever is the Until of a permanent ban. The bans table stores it as
// the largest int64 (9223372036854775807 ns, 2262-04-11T23:47:16Z): no
// other ban ends that late (ban durations are capped far below), it sorts
// after every real end (so "until > now" keeps it active and the
// longest-ban-wins upsert keeps it), and it never expires.
var Forever = time.Unix(0, math.MaxInt64)

// Permanent is what Remaining returns for a permanent ban: the largest
// duration, the same value as firewall.Permanent (no kernel timeout) and
// jail/config's permanent bantime.
const Permanent time.Duration = math.MaxInt64

// Permanent reports whether the ban never ends.
func (b Ban) Permanent() bool { return !b.Until.Before(Forever) }

// untilNanos is Until as stored: Forever (or later) is the sentinel.
func untilNanos(t time.Time) int64 {
	if !t.Before(Forever) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// Remaining is the time left at now (0 when expired, Permanent for a
// permanent ban).
func (b Ban) Remaining(now time.Time) time.Duration {
	if b.Permanent() {
		return Permanent
	}
	if d := b.Until.Sub(now); d > 0 {
		return d
	}
	return 0
}

// Position is where a source stopped reading: the source's own position
// (source.Position, one type for both) under the source's key.
type Position struct {
	Source string // the source's key (jail and path, or jail and "journal")
	source.Position
}

// Incident is a generic record for findings (toll fraud and the like).
type Incident struct {
	ID      int64
	Time    time.Time
	Kind    string
	Subject string
	Detail  string // JSON
}

// Store is the open database. It is safe for concurrent use.
type Store struct {
	db   *sql.DB
	path string

	mu    sync.Mutex
	prior map[netip.Addr]int // ban history counts within historyWindow

	recovered  string // where a corrupt database was moved at Open ("" = it was fine)
	corruptErr error
}

// RecoveredFrom is where Open moved a corrupt database before starting a
// fresh one ("" when it did not).
func (s *Store) RecoveredFrom() string { return s.recovered }

// Open opens (creating if needed) the database in stateDir. A database
// that SQLite finds corrupt (not a database, malformed, failing its quick
// check) does not stop pbxguard: it is moved aside with its -wal and -shm
// files (pbxguard.db.corrupt-<UTC time>) and a fresh one is started;
// RecoveredFrom then names the moved file (the daemon says so loudly and
// rebuilds the active bans from the kernel). Any other error (permissions,
// a full disk) is returned: such a file is not touched.
func Open(stateDir string) (*Store, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("store: state directory: %w (create it or set state_dir)", err)
	}
	path := filepath.Join(stateDir, FileName)
	s, err := open(path)
	if err == nil || !Corrupt(err) {
		return s, err
	}
	moved, merr := moveAside(path, time.Now())
	if merr != nil {
		return nil, fmt.Errorf("%w; moving the corrupt file aside failed too: %w (move %s away by hand)", err, merr, path)
	}
	s, err2 := open(path)
	if err2 != nil {
		return nil, fmt.Errorf("store: %s was corrupt (%w), moved to %s; a fresh one fails too: %w", path, err, moved, err2)
	}
	s.recovered = moved
	s.corruptErr = err
	return s, nil
}

// CorruptError is how the database was found corrupt at Open.
func (s *Store) CorruptError() error { return s.corruptErr }

// Corrupt reports whether err says the database file is damaged
// (SQLITE_CORRUPT, SQLITE_NOTADB, or a failed quick check).
func Corrupt(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errQuickCheck) {
		return true
	}
	var coded interface{ Code() int }
	if errors.As(err, &coded) {
		switch coded.Code() & 0xff {
		case 11, 26: // SQLITE_CORRUPT, SQLITE_NOTADB
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "file is not a database") || strings.Contains(msg, "database disk image is malformed")
}

var errQuickCheck = errors.New("quick check failed")

// moveAside renames path and its -wal and -shm to path.corrupt-<time>.
func moveAside(path string, now time.Time) (string, error) {
	to := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	for _, sfx := range []string{"-wal", "-shm"} {
		if err := os.Rename(path+sfx, to+sfx); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return to, err
		}
	}
	return to, nil
}

func open(path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and this keeps the
	// pragmas on the one connection that exists.
	db.SetMaxOpenConns(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, schema+evidenceSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: creating schema: %w (is it a pbxguard database, and writable?)", path, err)
	}
	var check string
	if err := db.QueryRowContext(ctx, "PRAGMA quick_check(1)").Scan(&check); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: %s: checking it: %w", path, err)
	}
	if check != "ok" {
		db.Close()
		return nil, fmt.Errorf("store: %s: %w: %s", path, errQuickCheck, check)
	}
	s := &Store{db: db, path: path, prior: map[netip.Addr]int{}}
	if err := s.loadHistory(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Path is the database file.
func (s *Store) Path() string { return s.path }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) loadHistory(ctx context.Context) error {
	since := time.Now().Add(-historyWindow).UnixNano()
	rows, err := s.db.QueryContext(ctx, `SELECT addr, COUNT(*) FROM ban_history WHERE at >= ? GROUP BY addr`, since)
	if err != nil {
		return fmt.Errorf("store: reading ban history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		var n int
		if err := rows.Scan(&a, &n); err != nil {
			return fmt.Errorf("store: reading ban history: %w", err)
		}
		if addr, err := netip.ParseAddr(a); err == nil {
			s.prior[addr] = n
		}
	}
	return rows.Err()
}

// PriorBans is how many times addr was banned in the last 90 days (the
// jail's History, for increments).
func (s *Store) PriorBans(addr netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.prior[addr]
}

// AddBans records bans (active, and in history) in one transaction. A ban
// for a prefix already active only ever extends it: the active row keeps
// the later end (MAX of both untils); its jail, reason, address and since
// are those of the ban that ends later (on a tie, the one already there),
// its count the higher. History records every ban as given. Only
// RemoveBans (unban) shortens a ban.
func (s *Store) AddBans(ctx context.Context, bans []Ban) error {
	if len(bans) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	up, err := tx.PrepareContext(ctx, `INSERT INTO bans(prefix, addr, jail, reason, since, until, count) VALUES(?,?,?,?,?,?,?)
		ON CONFLICT(prefix) DO UPDATE SET
		addr   = CASE WHEN excluded.until > bans.until THEN excluded.addr ELSE bans.addr END,
		jail   = CASE WHEN excluded.until > bans.until THEN excluded.jail ELSE bans.jail END,
		reason = CASE WHEN excluded.until > bans.until THEN excluded.reason ELSE bans.reason END,
		since  = CASE WHEN excluded.until > bans.until THEN excluded.since ELSE bans.since END,
		until  = MAX(bans.until, excluded.until),
		count  = MAX(bans.count, excluded.count)`)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer up.Close()
	hist, err := tx.PrepareContext(ctx, `INSERT INTO ban_history(prefix, addr, jail, reason, at, until) VALUES(?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer hist.Close()
	for _, b := range bans {
		addr := b.Addr
		if !addr.IsValid() {
			addr = b.Prefix.Addr()
		}
		if _, err := up.ExecContext(ctx, b.Prefix.String(), addr.String(), b.Jail, b.Reason, b.Since.UnixNano(), untilNanos(b.Until), b.Count); err != nil {
			return fmt.Errorf("store: saving ban %s: %w", b.Prefix, err)
		}
		if _, err := hist.ExecContext(ctx, b.Prefix.String(), addr.String(), b.Jail, b.Reason, b.Since.UnixNano(), untilNanos(b.Until)); err != nil {
			return fmt.Errorf("store: saving ban history %s: %w", b.Prefix, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	s.mu.Lock()
	for _, b := range bans {
		addr := b.Addr
		if !addr.IsValid() {
			addr = b.Prefix.Addr()
		}
		s.prior[addr]++
	}
	s.mu.Unlock()
	return nil
}

// RemoveBans deletes active bans (history stays). Absent ones are not an error.
func (s *Store) RemoveBans(ctx context.Context, prefixes []netip.Prefix) error {
	if len(prefixes) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	del, err := tx.PrepareContext(ctx, `DELETE FROM bans WHERE prefix = ?`)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer del.Close()
	for _, p := range prefixes {
		if _, err := del.ExecContext(ctx, p.String()); err != nil {
			return fmt.Errorf("store: removing ban %s: %w", p, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// ActiveBans returns the bans that have not expired at now, oldest first.
func (s *Store) ActiveBans(ctx context.Context, now time.Time) ([]Ban, error) {
	return s.queryBans(ctx, `SELECT prefix, addr, jail, reason, since, until, count FROM bans WHERE until > ? ORDER BY since, rowid`, now.UnixNano())
}

// Ban returns the active ban of prefix, if any.
func (s *Store) Ban(ctx context.Context, p netip.Prefix) (Ban, bool, error) {
	bans, err := s.queryBans(ctx, `SELECT prefix, addr, jail, reason, since, until, count FROM bans WHERE prefix = ?`, p.String())
	if err != nil || len(bans) == 0 {
		return Ban{}, false, err
	}
	return bans[0], true, nil
}

// ExpireBans deletes the bans whose time is up at now and returns them.
func (s *Store) ExpireBans(ctx context.Context, now time.Time) ([]Ban, error) {
	bans, err := s.queryBans(ctx, `SELECT prefix, addr, jail, reason, since, until, count FROM bans WHERE until <= ?`, now.UnixNano())
	if err != nil || len(bans) == 0 {
		return nil, err
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM bans WHERE until <= ?`, now.UnixNano()); err != nil {
		return nil, fmt.Errorf("store: expiring bans: %w", err)
	}
	return bans, nil
}

func (s *Store) queryBans(ctx context.Context, q string, args ...any) ([]Ban, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: reading bans: %w", err)
	}
	defer rows.Close()
	var out []Ban
	for rows.Next() {
		var p, a string
		var since, until int64
		var b Ban
		if err := rows.Scan(&p, &a, &b.Jail, &b.Reason, &since, &until, &b.Count); err != nil {
			return nil, fmt.Errorf("store: reading bans: %w", err)
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			continue // not ours; never crash on a bad row
		}
		b.Prefix = pfx
		b.Addr, _ = netip.ParseAddr(a)
		b.Since = time.Unix(0, since)
		b.Until = time.Unix(0, until)
		out = append(out, b)
	}
	return out, rows.Err()
}

// PruneHistory deletes ban history older than before.
func (s *Store) PruneHistory(ctx context.Context, before time.Time) (int64, error) {
	r, err := s.db.ExecContext(ctx, `DELETE FROM ban_history WHERE at < ?`, before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("store: pruning history: %w", err)
	}
	return r.RowsAffected()
}

// SavePositions writes source positions in one transaction.
func (s *Store) SavePositions(ctx context.Context, ps []Position) error {
	if len(ps) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO positions(source, path, inode, size, offset, cursor, checksum, updated) VALUES(?,?,?,?,?,?,?,?)
		ON CONFLICT(source) DO UPDATE SET path=excluded.path, inode=excluded.inode, size=excluded.size,
		offset=excluded.offset, cursor=excluded.cursor, checksum=excluded.checksum, updated=excluded.updated`)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer st.Close()
	now := time.Now().UnixNano()
	for _, p := range ps {
		if _, err := st.ExecContext(ctx, p.Source, p.Path, int64(p.Inode), p.Size, p.Offset, p.Cursor, int64(p.Check), now); err != nil {
			return fmt.Errorf("store: saving position of %s: %w", p.Source, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// Positions returns every saved position by source key.
func (s *Store) Positions(ctx context.Context) (map[string]Position, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT source, path, inode, size, offset, cursor, checksum FROM positions`)
	if err != nil {
		return nil, fmt.Errorf("store: reading positions: %w", err)
	}
	defer rows.Close()
	out := map[string]Position{}
	for rows.Next() {
		var p Position
		var inode, check int64
		if err := rows.Scan(&p.Source, &p.Path, &inode, &p.Size, &p.Offset, &p.Cursor, &check); err != nil {
			return nil, fmt.Errorf("store: reading positions: %w", err)
		}
		p.Inode = uint64(inode)
		p.Check = uint64(check)
		out[p.Source] = p
	}
	return out, rows.Err()
}

// AddIncident records an incident and returns its id.
func (s *Store) AddIncident(ctx context.Context, in Incident) (int64, error) {
	if in.Kind == "" {
		return 0, errors.New("store: incident without a kind")
	}
	if in.Time.IsZero() {
		in.Time = time.Now()
	}
	if in.Detail == "" {
		in.Detail = "{}"
	}
	r, err := s.db.ExecContext(ctx, `INSERT INTO incidents(time, kind, subject, detail) VALUES(?,?,?,?)`,
		in.Time.UnixNano(), in.Kind, in.Subject, in.Detail)
	if err != nil {
		return 0, fmt.Errorf("store: saving incident: %w", err)
	}
	return r.LastInsertId()
}

// Incidents returns incidents at or after since, newest first, at most limit (0 = all).
func (s *Store) Incidents(ctx context.Context, since time.Time, limit int) ([]Incident, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, time, kind, subject, detail FROM incidents WHERE time >= ? ORDER BY time DESC, id DESC LIMIT ?`,
		since.UnixNano(), limit)
	if err != nil {
		return nil, fmt.Errorf("store: reading incidents: %w", err)
	}
	defer rows.Close()
	var out []Incident
	for rows.Next() {
		var in Incident
		var t int64
		if err := rows.Scan(&in.ID, &t, &in.Kind, &in.Subject, &in.Detail); err != nil {
			return nil, fmt.Errorf("store: reading incidents: %w", err)
		}
		in.Time = time.Unix(0, t)
		out = append(out, in)
	}
	return out, rows.Err()
}

// LimitPages caps the database at n pages (SQLite's max_page_count; 0 =
// SQLite's default, no practical cap). Writes that would grow it past the
// cap fail as on a full disk: tests use it to play a full state directory.
func (s *Store) LimitPages(ctx context.Context, n int64) (int64, error) {
	if n <= 0 {
		n = 4294967294
	}
	var got int64
	if err := s.db.QueryRowContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n)).Scan(&got); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return got, nil
}

// PageCount is the database's size in pages.
func (s *Store) PageCount(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&n); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return n, nil
}

// Checkpoint moves the write-ahead log into the database and truncates it
// (PRAGMA wal_checkpoint(TRUNCATE)). On a full disk the log holds many
// versions of the same pages: this gives their room back, so that a retry
// can fit.
func (s *Store) Checkpoint(ctx context.Context) error {
	var busy, logPages, done int
	if err := s.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil {
		return fmt.Errorf("store: checkpoint: %w", err)
	}
	if busy != 0 {
		return errors.New("store: checkpoint: database busy")
	}
	return nil
}
