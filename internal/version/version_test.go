package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-05T08:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	in := from("", "", "", bi)
	if in.Version != "devel" || in.Commit != "0123456789abcdef0123" || in.Date != "2026-12-05T08:00:00Z" || !in.Modified || in.GoVersion != "go1.26.8" {
		t.Fatalf("got %+v", in)
	}
	if s := in.String(); !strings.HasPrefix(s, "pbxguard devel (commit 0123456789ab-dirty, built 2026-12-05T08:00:00Z, go1.26.8, ") {
		t.Errorf("String() = %q", s)
	}
}

func TestLinkTimeWins(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "aaaa"}}}
	in := from("1.2.3", "bbbb", "2026-01-02T03:04:05Z", bi)
	if in.Version != "1.2.3" || in.Commit != "bbbb" || in.Date != "2026-01-02T03:04:05Z" {
		t.Fatalf("got %+v", in)
	}
	if in := from("", "", "", bi); in.Version != "0.9.0" {
		t.Errorf("module version: got %q, want 0.9.0", in.Version)
	}
	if in := from("", "", "", nil); in.Version != "devel" || in.Commit != "unknown" || in.Date != "unknown" {
		t.Errorf("no build info: %+v", in)
	}
}
