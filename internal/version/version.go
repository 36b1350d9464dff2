// Package version says which pbxguard this is: the release version given
// at link time (-ldflags "-X …/internal/version.version=1.2.3"), and the
// commit, build time and Go version the toolchain recorded in the binary.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time by the Makefile and the package build; a plain
// `go build` or `go run` leaves them empty and Get fills in what the
// toolchain recorded.
var (
	version = ""
	commit  = ""
	date    = ""
)

// Info is the build's identity.
type Info struct {
	Version   string `json:"version"`    // release version, or "devel"
	Commit    string `json:"commit"`     // VCS revision ("unknown" outside a checkout)
	Modified  bool   `json:"modified"`   // built from a tree with uncommitted changes
	Date      string `json:"build_date"` // commit or build time, RFC 3339 ("unknown")
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// Get returns the running binary's identity.
func Get() Info {
	return from(version, commit, date, readBuildInfo())
}

func readBuildInfo() *debug.BuildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return bi
}

// from combines the link-time values with the toolchain's build info;
// link-time values win.
func from(v, c, d string, bi *debug.BuildInfo) Info {
	in := Info{Version: v, Commit: c, Date: d, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = strings.TrimPrefix(bi.Main.Version, "v")
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = s.Value
				}
			case "vcs.time":
				if in.Date == "" {
					in.Date = s.Value
				}
			case "vcs.modified":
				in.Modified = s.Value == "true"
			}
		}
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	if in.Date == "" {
		in.Date = "unknown"
	}
	return in
}

// Short is the version alone ("1.2.3", or "devel").
func Short() string { return Get().Version }

// String is the one-line form printed by `pbxguard --version`.
func (in Info) String() string {
	c := in.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if in.Modified {
		c += "-dirty"
	}
	return fmt.Sprintf("pbxguard %s (commit %s, built %s, %s, %s)", in.Version, c, in.Date, in.GoVersion, in.Platform)
}
