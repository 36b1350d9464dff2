package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// evidenceSchema is the table of ban evidence: one row per ban decided by
// a jail, written beside its ban_history row (same prefix and at) and kept
// as long as the history is (PruneHistory's retention, see PruneEvidence).
// decision and events are JSON (EvidenceDecision, []EvidenceEvent): they
// are read whole, never queried by field.
const evidenceSchema = `
CREATE TABLE IF NOT EXISTS ban_evidence (
	id       INTEGER PRIMARY KEY,
	prefix   TEXT NOT NULL,
	addr     TEXT NOT NULL,
	jail     TEXT NOT NULL,
	at       INTEGER NOT NULL,
	until    INTEGER NOT NULL,
	reason   TEXT NOT NULL,
	decision TEXT NOT NULL,
	events   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ban_evidence_addr ON ban_evidence(addr, at);
CREATE INDEX IF NOT EXISTS ban_evidence_at ON ban_evidence(at);
`

// Evidence bounds: at most MaxEvidenceEvents events per ban, each raw
// line cut at MaxEvidenceLine bytes (before escaping).
const (
	MaxEvidenceEvents = 20
	MaxEvidenceLine   = 1024
)

// EvidenceDecision is how a jail decided a ban: its rule and what it
// counted, and the allowlist checks the ban passed.
type EvidenceDecision struct {
	MaxRetry   int       `json:"maxretry"`
	FindTime   string    `json:"findtime"`
	BanTime    string    `json:"bantime"`
	MaxBanTime string    `json:"maxbantime,omitempty"`
	Increment  float64   `json:"increment,omitempty"`
	Duration   string    `json:"duration"` // of this ban: bantime × increment^(count-1), capped
	Count      int       `json:"ban_count"`
	Failures   int       `json:"failures"`            // weight counted in the window
	First      time.Time `json:"window_first"`        // first counted event in the window
	Last       time.Time `json:"window_last"`         // last counted event
	Allowlist  []string  `json:"allowlist_checks"`    // checks passed, in order
	Dropped    int       `json:"events_dropped"`      // older events beyond the bound
	Note       string    `json:"note,omitempty"`      // e.g. evidence overwritten under load
	Structured bool      `json:"twin_mode,omitempty"` // NOTICE twins were not counted (structured events seen)
}

// EvidenceEvent is one event that took part in a decision, with the raw
// line it came from (escaped: control bytes as \xNN, cut at
// MaxEvidenceLine bytes).
type EvidenceEvent struct {
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	Service    string    `json:"service,omitempty"`
	Account    string    `json:"account,omitempty"` // escaped
	Detail     string    `json:"detail,omitempty"`
	Detector   string    `json:"detector,omitempty"`
	Structured bool      `json:"structured"`
	Counted    bool      `json:"counted"`
	Note       string    `json:"note,omitempty"` // why it did not count (NOTICE twin, already banned)
	Source     string    `json:"source"`         // file path, "journal", "AMI event"
	Line       int64     `json:"line,omitempty"` // 1-based line number in Source, 0 = unknown
	Offset     int64     `json:"offset,omitempty"`
	Raw        string    `json:"raw"`
	Cut        bool      `json:"cut,omitempty"` // Raw was longer than MaxEvidenceLine
}

// Evidence is the evidence of one ban.
type Evidence struct {
	ID       int64            `json:"id"`
	Prefix   netip.Prefix     `json:"prefix"`
	Addr     netip.Addr       `json:"addr"`
	Jail     string           `json:"jail"`
	At       time.Time        `json:"at"`
	Until    time.Time        `json:"until"`
	Reason   string           `json:"reason"`
	Decision EvidenceDecision `json:"decision"`
	Events   []EvidenceEvent  `json:"events"`
}

// AddEvidence records the evidence of bans in one transaction.
func (s *Store) AddEvidence(ctx context.Context, evs []Evidence) error {
	if len(evs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO ban_evidence(prefix, addr, jail, at, until, reason, decision, events) VALUES(?,?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer st.Close()
	for _, e := range evs {
		if len(e.Events) > MaxEvidenceEvents {
			e.Decision.Dropped += len(e.Events) - MaxEvidenceEvents
			e.Events = e.Events[len(e.Events)-MaxEvidenceEvents:]
		}
		dec, err := json.Marshal(e.Decision)
		if err != nil {
			return fmt.Errorf("store: evidence of %s: %w", e.Prefix, err)
		}
		if e.Events == nil {
			e.Events = []EvidenceEvent{}
		}
		evj, err := json.Marshal(e.Events)
		if err != nil {
			return fmt.Errorf("store: evidence of %s: %w", e.Prefix, err)
		}
		addr := e.Addr
		if !addr.IsValid() {
			addr = e.Prefix.Addr()
		}
		if _, err := st.ExecContext(ctx, e.Prefix.String(), addr.String(), e.Jail, e.At.UnixNano(), e.Until.UnixNano(), e.Reason, string(dec), string(evj)); err != nil {
			return fmt.Errorf("store: saving evidence of %s: %w", e.Prefix, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

// EvidenceFor returns the evidence of the bans of addr (or of a prefix
// holding it), newest first, at most limit (0 = all).
func (s *Store) EvidenceFor(ctx context.Context, addr netip.Addr, limit int) ([]Evidence, error) {
	if limit <= 0 {
		limit = -1
	}
	addr = addr.Unmap().WithZone("")
	all, err := s.queryEvidence(ctx, `SELECT id, prefix, addr, jail, at, until, reason, decision, events FROM ban_evidence
		WHERE addr = ? ORDER BY at DESC, id DESC LIMIT ?`, addr.String(), limit)
	if err != nil || addr.Is4() {
		return all, err
	}
	// IPv6 prefix bans: the /n holding addr (other addresses of it).
	more, err := s.queryEvidence(ctx, `SELECT id, prefix, addr, jail, at, until, reason, decision, events FROM ban_evidence
		WHERE prefix LIKE '%:%/%' AND addr <> ? ORDER BY at DESC, id DESC LIMIT 1000`, addr.String())
	if err != nil {
		return nil, err
	}
	for _, e := range more {
		if e.Prefix.Contains(addr) {
			all = append(all, e)
		}
	}
	return all, nil
}

// EvidenceSince returns the evidence of bans at or after since, newest
// first, at most limit (0 = all).
func (s *Store) EvidenceSince(ctx context.Context, since time.Time, limit int) ([]Evidence, error) {
	if limit <= 0 {
		limit = -1
	}
	return s.queryEvidence(ctx, `SELECT id, prefix, addr, jail, at, until, reason, decision, events FROM ban_evidence
		WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?`, since.UnixNano(), limit)
}

func (s *Store) queryEvidence(ctx context.Context, q string, args ...any) ([]Evidence, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: reading evidence: %w", err)
	}
	defer rows.Close()
	var out []Evidence
	for rows.Next() {
		var e Evidence
		var p, a, dec, evj string
		var at, until int64
		if err := rows.Scan(&e.ID, &p, &a, &e.Jail, &at, &until, &e.Reason, &dec, &evj); err != nil {
			return nil, fmt.Errorf("store: reading evidence: %w", err)
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			continue // not ours; never crash on a bad row
		}
		e.Prefix = pfx
		e.Addr, _ = netip.ParseAddr(a)
		e.At, e.Until = time.Unix(0, at), time.Unix(0, until)
		if err := json.Unmarshal([]byte(dec), &e.Decision); err != nil {
			e.Decision.Note = "unreadable decision record: " + err.Error()
		}
		if err := json.Unmarshal([]byte(evj), &e.Events); err != nil {
			e.Decision.Note = "unreadable evidence record: " + err.Error()
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// HistoryEntry is one past or present ban from ban_history.
type HistoryEntry struct {
	ID     int64        `json:"id"`
	Prefix netip.Prefix `json:"prefix"`
	Addr   netip.Addr   `json:"addr"`
	Jail   string       `json:"jail"`
	Reason string       `json:"reason"`
	At     time.Time    `json:"at"`
	Until  time.Time    `json:"until"`
}

// HistoryFilter selects ban history: Since (zero = all), Addr (invalid =
// any; matches the address or a prefix holding it), Jail ("" = any), Limit
// (0 = all).
type HistoryFilter struct {
	Since time.Time
	Addr  netip.Addr
	Jail  string
	Limit int
}

// History returns ban history matching f, newest first.
func (s *Store) History(ctx context.Context, f HistoryFilter) ([]HistoryEntry, error) {
	q := `SELECT id, prefix, addr, jail, reason, at, until FROM ban_history WHERE at >= ?`
	args := []any{f.Since.UnixNano()}
	if f.Since.IsZero() {
		args[0] = int64(0)
	}
	if f.Jail != "" {
		q += ` AND jail = ?`
		args = append(args, f.Jail)
	}
	wantAddr := f.Addr.IsValid()
	if wantAddr {
		f.Addr = f.Addr.Unmap().WithZone("")
		if f.Addr.Is4() {
			q += ` AND addr = ?`
			args = append(args, f.Addr.String())
		}
	}
	q += ` ORDER BY at DESC, id DESC`
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: reading ban history: %w", err)
	}
	defer rows.Close()
	var out []HistoryEntry
	for rows.Next() {
		var h HistoryEntry
		var p, a string
		var at, until int64
		if err := rows.Scan(&h.ID, &p, &a, &h.Jail, &h.Reason, &at, &until); err != nil {
			return nil, fmt.Errorf("store: reading ban history: %w", err)
		}
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			continue
		}
		h.Prefix = pfx
		h.Addr, _ = netip.ParseAddr(a)
		h.At, h.Until = time.Unix(0, at), time.Unix(0, until)
		if wantAddr && f.Addr.Is6() && h.Addr != f.Addr && !h.Prefix.Contains(f.Addr) {
			continue
		}
		out = append(out, h)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, rows.Err()
}

// Incident returns the incident with id.
func (s *Store) Incident(ctx context.Context, id int64) (Incident, bool, error) {
	var in Incident
	var t int64
	err := s.db.QueryRowContext(ctx, `SELECT id, time, kind, subject, detail FROM incidents WHERE id = ?`, id).Scan(&in.ID, &t, &in.Kind, &in.Subject, &in.Detail)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Incident{}, false, nil
		}
		return Incident{}, false, fmt.Errorf("store: reading incident %d: %w", id, err)
	}
	in.Time = time.Unix(0, t)
	return in, true, nil
}

// Prune deletes ban history, ban evidence and incidents older than before
// (active bans stay, whatever their age) and returns how many rows went.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for _, q := range []string{
		`DELETE FROM ban_history WHERE at < ?`,
		`DELETE FROM ban_evidence WHERE at < ?`,
		`DELETE FROM incidents WHERE time < ?`,
	} {
		r, err := s.db.ExecContext(ctx, q, before.UnixNano())
		if err != nil {
			return total, fmt.Errorf("store: pruning: %w", err)
		}
		n, _ := r.RowsAffected()
		total += n
	}
	return total, nil
}
