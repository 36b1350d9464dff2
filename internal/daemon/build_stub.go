//go:build !wired

package daemon

import (
	"errors"
	"log/slog"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/store"
)

// BuildOptions tune Build.
type BuildOptions struct {
	Logger           *slog.Logger
	Version          string
	NetNS            string
	Backend          firewall.Backend
	StartAtBeginning bool
}

// Built is a daemon with the parts Build opened.
type Built struct {
	*Daemon
	Store   *store.Store
	Backend firewall.Backend
}

// Close closes the backend and the store.
func (b *Built) Close() error { return errors.Join(b.Backend.Close(), b.Store.Close()) }

// Build is not available until the source, jail and firewall packages land.
func Build(cfg *config.Config, opts BuildOptions) (*Built, error) {
	return nil, errors.New("daemon: this build lacks the source/jail/firewall packages")
}
