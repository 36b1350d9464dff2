// Package e2e holds the end-to-end tests: real kernels, real network
// namespaces, real tools. They need root. Without PBXGUARD_E2E=1 they skip
// when not root; with PBXGUARD_E2E=1 (CI) a missing prerequisite fails.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
)

// pbxguardBin is the binary built once by TestMain.
var pbxguardBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pbxguard-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pbxguardBin = filepath.Join(dir, "pbxguard")
	cmd := exec.Command("go", "build", "-o", pbxguardBin, "../cmd/pbxguard")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building pbxguard:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireE2E skips the test unless it can run for real, and fails instead
// of skipping when PBXGUARD_E2E=1. tools are commands that must be on PATH.
func requireE2E(t *testing.T, tools ...string) {
	t.Helper()
	strict := os.Getenv("PBXGUARD_E2E") == "1"
	fail := func(format string, args ...any) {
		t.Helper()
		if strict {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if os.Geteuid() != 0 {
		fail("e2e: needs root (run 'sudo make test')")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			fail("e2e: %s not found (run 'make deps' as root)", tool)
		}
	}
}

// corpusDir is the project's recording of a real Asterisk under attack
// (testdata/corpus at the module root).
func corpusDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("../testdata/corpus")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d); err != nil {
		t.Fatalf("test data not found at %s: %v", d, err)
	}
	return d
}

var nsCounter atomic.Int64

// Netns is a network namespace created by a test and deleted at its end.
type Netns struct {
	Name string
}

// newNetns creates a namespace with loopback up; it is deleted on cleanup.
func newNetns(t testing.TB, role string) *Netns {
	t.Helper()
	name := fmt.Sprintf("pbxg-%s-%d-%d", role, os.Getpid()%100000, nsCounter.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ns := &Netns{Name: name}
	ns.Run(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command inside the namespace and fails the test on error.
func (n *Netns) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Try runs a command inside the namespace and returns its output and error.
func (n *Netns) Try(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...).CombinedOutput()
	return string(out), err
}

// Command returns an unstarted command that runs inside the namespace.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// link connects two namespaces with a veth pair and gives each end the
// given addresses (CIDR notation, IPv4 or IPv6; "" for none).
func link(t testing.TB, a *Netns, aAddrs []string, b *Netns, bAddrs []string) (aIf, bIf string) {
	t.Helper()
	id := nsCounter.Add(1)
	aIf, bIf = fmt.Sprintf("pga%d", id), fmt.Sprintf("pgb%d", id)
	run(t, "ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, s := range []struct {
		ns    *Netns
		ifc   string
		addrs []string
	}{{a, aIf, aAddrs}, {b, bIf, bAddrs}} {
		for _, addr := range s.addrs {
			args := []string{"addr", "add", addr, "dev", s.ifc}
			if strings.Contains(addr, ":") {
				args = []string{"-6", "addr", "add", addr, "dev", s.ifc, "nodad"}
			}
			s.ns.Run(t, "ip", args...)
		}
		s.ns.Run(t, "ip", "link", "set", s.ifc, "up")
	}
	return aIf, bIf
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestE2EPrerequisites makes the suite fail loudly in CI when the machine
// lacks what the e2e tests need, instead of passing on skips.
func TestE2EPrerequisites(t *testing.T) {
	requireE2E(t, "nft")
	ns := newNetns(t, "pre")
	out := ns.Run(t, "ip", "-o", "link", "show", "lo")
	if !strings.Contains(out, "UP") && !strings.Contains(out, "UNKNOWN") {
		t.Fatalf("loopback not up in namespace: %s", out)
	}
}

// sortedKeys returns the keys of m in order, for stable messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
