package fraud

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/pbxguard/pbxguard/internal/store"
)

// FileRecorder appends each incident as one JSON line to a file. The
// daemon's SQLite store is the other IncidentRecorder.
type FileRecorder struct {
	mu sync.Mutex
	f  *os.File
}

// OpenFileRecorder opens (creating, mode 0600) path for appending.
func OpenFileRecorder(path string) (*FileRecorder, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fraud: incident log: %w (check the directory exists and is writable)", err)
	}
	return &FileRecorder{f: f}, nil
}

// RecordIncident appends inc as one line.
func (r *FileRecorder) RecordIncident(_ context.Context, inc *Incident) error {
	b, err := json.Marshal(inc)
	if err != nil {
		return fmt.Errorf("fraud: incident %s: %w", inc.ID, err)
	}
	b = append(b, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.f.Write(b); err != nil {
		return fmt.Errorf("fraud: incident log %s: %w", r.f.Name(), err)
	}
	return nil
}

// Close closes the file.
func (r *FileRecorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}

// IncidentStore is the part of the daemon's store (*store.Store) the
// StoreRecorder writes through.
type IncidentStore interface {
	AddIncident(ctx context.Context, in store.Incident) (int64, error)
}

// StoreRecorder records incidents in the daemon's SQLite store: kind
// "fraud/<rule>", subject the extension (or the address for unauth_intl),
// detail the incident as JSON with its actions.
type StoreRecorder struct {
	Store IncidentStore
}

// RecordIncident stores inc.
func (r StoreRecorder) RecordIncident(ctx context.Context, inc *Incident) error {
	b, err := json.Marshal(inc)
	if err != nil {
		return fmt.Errorf("fraud: incident %s: %w", inc.ID, err)
	}
	subject := inc.Extension
	if subject == "" && len(inc.Addrs) > 0 {
		subject = inc.Addrs[0].String()
	}
	if _, err := r.Store.AddIncident(ctx, store.Incident{Time: inc.Time, Kind: "fraud/" + string(inc.Rule), Subject: subject, Detail: string(b)}); err != nil {
		return fmt.Errorf("fraud: incident %s: %w", inc.ID, err)
	}
	return nil
}
