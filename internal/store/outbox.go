package store

import (
	"context"
	"fmt"
	"time"
)

const outboxSchema = `
CREATE TABLE IF NOT EXISTS cluster_outbox (
	id    INTEGER PRIMARY KEY,
	data  BLOB NOT NULL,
	added INTEGER NOT NULL
);
`

// Outbox keeps the cluster messages that could not be published yet (NATS
// unreachable, or the daemon stopping), so that they survive a restart.
// Its table is its own, created when the outbox is first opened.
type Outbox struct{ s *Store }

// Outbox opens the cluster outbox table, creating it if needed.
func (s *Store) Outbox(ctx context.Context) (*Outbox, error) {
	if _, err := s.db.ExecContext(ctx, outboxSchema); err != nil {
		return nil, fmt.Errorf("store: %s: creating the cluster outbox: %w", s.path, err)
	}
	return &Outbox{s: s}, nil
}

// Replace makes the outbox hold exactly msgs, in order, in one transaction.
func (o *Outbox) Replace(ctx context.Context, msgs [][]byte) error {
	tx, err := o.s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM cluster_outbox`); err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	if len(msgs) > 0 {
		st, err := tx.PrepareContext(ctx, `INSERT INTO cluster_outbox (data, added) VALUES (?, ?)`)
		if err != nil {
			return fmt.Errorf("store: outbox: %w", err)
		}
		defer st.Close()
		now := time.Now().UnixNano()
		for _, m := range msgs {
			if _, err := st.ExecContext(ctx, m, now); err != nil {
				return fmt.Errorf("store: outbox: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return nil
}

// Load returns the messages in the order they were saved.
func (o *Outbox) Load(ctx context.Context) ([][]byte, error) {
	rows, err := o.s.db.QueryContext(ctx, `SELECT data FROM cluster_outbox ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("store: outbox: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
