package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/daemon"
)

// debFiles is what the package must install, with the mode each must have.
var debFiles = map[string]os.FileMode{
	"/usr/sbin/pbxguard":                                 0o755,
	"/etc/pbxguard/pbxguard.yaml":                        0o600,
	"/lib/systemd/system/pbxguard.service":               0o644,
	"/lib/systemd/system/pbxguard-policy.service":        0o644,
	"/usr/share/doc/pbxguard/README.md":                  0o644,
	"/usr/share/doc/pbxguard/daemon.md":                  0o644,
	"/usr/share/doc/pbxguard/fraud.md":                   0o644,
	"/usr/share/doc/pbxguard/copyright":                  0o644,
	"/usr/share/doc/pbxguard/changelog.gz":               0o644,
	"/usr/share/man/man8/pbxguard.8.gz":                  0o644,
	"/usr/share/man/man8/pbxguard-run.8.gz":              0o644,
	"/usr/share/man/man8/pbxguard-firewall-apply.8.gz":   0o644,
	"/usr/share/bash-completion/completions/pbxguard":    0o644,
	"/usr/share/zsh/vendor-completions/_pbxguard":        0o644,
	"/usr/share/fish/vendor_completions.d/pbxguard.fish": 0o644,
	"/usr/share/lintian/overrides/pbxguard":              0o644,
	"/var/lib/pbxguard":                                  os.ModeDir | 0o700,
}

// TestDebInstallUpgradePurge builds the .deb twice (a version and a higher
// one), installs the first with dpkg -i, checks every file, the installed
// binary, the conffile and the units, stores a ban, upgrades to the second
// with the ban kept, and purges: nothing may be left behind.
func TestDebInstallUpgradePurge(t *testing.T) {
	requireE2E(t, "dpkg", "dpkg-deb", "systemd-analyze")
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Status}", "pbxguard").CombinedOutput(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("a pbxguard package is already installed on this machine (%s): this test installs and purges its own; remove it first", out)
	}
	out := t.TempDir()
	build := func(version string) string {
		t.Helper()
		cmd := exec.Command("bash", "../scripts/mkdeb.sh", version)
		cmd.Env = append(os.Environ(), "PBXGUARD_DEB_OUT="+out)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mkdeb %s: %v\n%s", version, err, b)
		}
		return strings.TrimSpace(string(b[strings.LastIndexByte(strings.TrimSpace(string(b)), '\n')+1:]))
	}
	v1, v2 := "0.0.1~e2e1", "0.0.1~e2e2"
	deb1, deb2 := build(v1), build(v2)
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "pbxguard").Run() })

	if b, err := exec.Command("dpkg-deb", "-I", deb1).CombinedOutput(); err != nil || !strings.Contains(string(b), "Recommends: nftables") || !strings.Contains(string(b), "Version: "+v1) {
		t.Fatalf("dpkg-deb -I: %v\n%s", err, b)
	}
	if b, err := exec.Command("dpkg-deb", "-c", deb1).CombinedOutput(); err != nil || !strings.Contains(string(b), "./usr/sbin/pbxguard") {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, b)
	}
	if lintian, err := exec.LookPath("lintian"); err == nil {
		b, _ := exec.Command(lintian, "--tag-display-limit", "0", deb1).CombinedOutput()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "E: ") || strings.HasPrefix(l, "W: ") {
				t.Errorf("lintian: %s", l)
			}
		}
	}

	dpkg := func(args ...string) {
		t.Helper()
		if b, err := exec.Command("dpkg", args...).CombinedOutput(); err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	dpkg("-i", deb1)
	for path, mode := range debFiles {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("after install: %v", err)
			continue
		}
		if fi.Mode()&(os.ModeDir|os.ModePerm) != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	checkVersion := func(want string) {
		t.Helper()
		b, err := exec.Command("/usr/sbin/pbxguard", "version", "--json").Output()
		var in struct {
			Version string `json:"version"`
		}
		if err != nil || json.Unmarshal(b, &in) != nil || in.Version != want {
			t.Fatalf("installed pbxguard version: %v %q, want %s", err, b, want)
		}
	}
	checkVersion(v1)
	if b, err := exec.Command("/usr/sbin/pbxguard", "config", "check", "/etc/pbxguard/pbxguard.yaml").CombinedOutput(); err != nil {
		t.Errorf("config check of the installed conffile: %v\n%s", err, b)
	}
	if b, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/pbxguard.service", "/lib/systemd/system/pbxguard-policy.service").CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, b)
	}
	for _, u := range []string{"pbxguard.service", "pbxguard-policy.service"} {
		b, _ := os.ReadFile("/lib/systemd/system/" + u)
		if !strings.Contains(string(b), "/usr/sbin/pbxguard") || strings.Contains(string(b), "/usr/local/bin") {
			t.Errorf("%s does not run /usr/sbin/pbxguard:\n%s", u, b)
		}
	}

	// A ban in the package's state directory, through the installed daemon
	// on the dry-run backend (the host's firewall is never touched).
	dir := t.TempDir()
	cfg := filepath.Join(dir, "pbxguard.yaml")
	sock := filepath.Join(dir, "pbxguard.sock")
	if err := os.WriteFile(cfg, []byte("state_dir: /var/lib/pbxguard\nfirewall: {backend: dry-run}\ncontrol: {socket: "+sock+"}\nmetrics: {listen: \"\"}\njails: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runDaemon := func() (stop func()) {
		t.Helper()
		cmd := exec.Command("/usr/sbin/pbxguard", "run", "--config", cfg)
		var log syncBuffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			if _, err := daemon.NewClient(sock).Status(t.Context()); err == nil {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("installed daemon did not answer:\n%s", log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		return func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }
	}
	stop := runDaemon()
	if b, err := exec.Command("/usr/sbin/pbxguard", "ban", "203.0.113.77", "--for", "2h", "--socket", sock).CombinedOutput(); err != nil {
		t.Fatalf("ban: %v\n%s", err, b)
	}
	stop()

	dpkg("-i", deb2)
	checkVersion(v2)
	if fi, err := os.Stat("/etc/pbxguard/pbxguard.yaml"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("conffile after upgrade: %v %v", fi, err)
	}
	stop = runDaemon()
	bans, err := daemon.NewClient(sock).Bans(t.Context())
	stop()
	if err != nil || len(bans) != 1 || bans[0].Addr != "203.0.113.77" || bans[0].Remaining < 3600 {
		t.Fatalf("the ban did not survive the upgrade: %v %+v", err, bans)
	}

	dpkg("--purge", "pbxguard")
	for path := range debFiles {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("left behind after purge: %s", path)
		}
	}
	for _, p := range []string{"/etc/pbxguard", "/etc/systemd/system/multi-user.target.wants/pbxguard.service", "/etc/systemd/system/multi-user.target.wants/pbxguard-policy.service"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("left behind after purge: %s", p)
		}
	}
	if m, _ := filepath.Glob("/var/lib/systemd/deb-systemd-helper-enabled/*pbxguard*"); len(m) > 0 {
		t.Errorf("left behind after purge: %v", m)
	}
}
