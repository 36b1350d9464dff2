package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/version"
)

// runCLI runs the command line as main does and returns stdout+stderr and
// the exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String() + ee.Error(), ee.code
	}
	return out.String() + err.Error(), exitUsage
}

func TestVersion(t *testing.T) {
	out, code := runCLI(t, "--version")
	if code != exitOK || strings.TrimSpace(out) != version.Get().String() {
		t.Fatalf("--version: %d %q", code, out)
	}
	out, code = runCLI(t, "version", "--json")
	var in version.Info
	if code != exitOK || json.Unmarshal([]byte(out), &in) != nil || in.GoVersion == "" || in.Version == "" {
		t.Fatalf("version --json: %d %q", code, out)
	}
}

// TestUnknownSubcommand: every command group refuses a subcommand it does
// not have with exit 2 (a typo in a script must not pass as success).
func TestUnknownSubcommand(t *testing.T) {
	var groups []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
	if len(groups) < 3 {
		t.Fatalf("only %d command groups: %v", len(groups), groups)
	}
	for _, g := range groups {
		args := append(strings.Fields(g)[1:], "nosuchthing")
		out, code := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(out, `unknown command "nosuchthing"`) {
			t.Errorf("%s nosuchthing: exit %d, %q", g, code, out)
		}
	}
	out, code := runCLI(t, "firewall", "aply")
	if code != exitUsage || !strings.Contains(out, `did you mean "apply"`) {
		t.Errorf("firewall aply: exit %d %q", code, out)
	}
	if _, code := runCLI(t, "firewall"); code != exitOK {
		t.Errorf("firewall alone (help): exit %d", code)
	}
}

// TestCompleteJailOffline: with no daemon to ask, --jail still completes
// to manual, and nothing else is invented.
func TestCompleteJailOffline(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	out, code := runCLI(t, cobra.ShellCompRequestCmd, "ban", "--socket", sock, "--jail", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || lines[0] != "manual" || lines[1] != ":4" {
		t.Fatalf("completion: %q", out)
	}
}

// TestDocumentedFlags: every `pbxguard CMD … --flag` written in the README
// and docs/ names a flag that command has (a doc that drifts from the CLI
// fails here).
func TestDocumentedFlags(t *testing.T) {
	files, _ := filepath.Glob("../../docs/*.md")
	files = append(files, "../../README.md")
	root := newRootCmd()
	cmdRe := regexp.MustCompile("pbxguard((?: [a-z][a-z0-9-]*)+)((?: [^`|\n]*)?)")
	flagRe := regexp.MustCompile(`(?:^|[\s\[(|])--([a-z][a-z0-9-]*)`)
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cmdRe.FindAllStringSubmatch(string(data), -1) {
			words := strings.Fields(m[1])
			c, rest, err := root.Find(words)
			if err != nil || c == root {
				continue // prose ("pbxguard protects …"), not a command
			}
			tail := strings.Join(rest, " ") + m[2]
			for _, fm := range flagRe.FindAllStringSubmatch(tail, -1) {
				name := fm[1]
				if c.Flags().Lookup(name) == nil && c.InheritedFlags().Lookup(name) == nil && c.PersistentFlags().Lookup(name) == nil && name != "help" && name != "version" {
					t.Errorf("%s: `%s` documents --%s, which %q does not have", filepath.Base(f), strings.TrimSpace(m[0]), name, c.CommandPath())
				}
				checked++
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d documented flags checked: the pattern no longer finds the docs' commands", checked)
	}
}

// TestJSONAlias: --json works where the output is chosen by --format.
func TestJSONAlias(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "messages")
	if err := os.WriteFile(log, []byte("[2026-11-25 12:00:00] NOTICE[1] res_pjsip/pjsip_distributor.c: Request 'REGISTER' from '<sip:1001@192.0.2.1>' failed for '203.0.113.9:5060' (callid: x) - Failed to authenticate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "test-log", "--json", log)
	var r struct {
		Lines  int            `json:"lines"`
		ByAddr map[string]int `json:"by_addr"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || r.Lines != 1 || r.ByAddr["203.0.113.9"] != 1 {
		t.Fatalf("test-log --json: exit %d %q", code, out)
	}
	out, code = runCLI(t, "audit", "--json", "--asterisk-dir", dir, "--fail-on", "critical")
	var a map[string]any
	if code != exitOK || json.Unmarshal([]byte(out), &a) != nil {
		t.Fatalf("audit --json: exit %d %q", code, out)
	}
}

// noJSON are the commands that print no report a script would parse, each
// with its reason. Every other runnable command must take --json.
var noJSON = map[string]string{
	"pbxguard run":                   "the daemon: logs only (status --json reads its state)",
	"pbxguard firewall plan":         "prints an nft/iptables ruleset (--format)",
	"pbxguard import fail2ban":       "prints YAML",
	"pbxguard generate man":          "writes files",
	"pbxguard generate completions":  "writes files",
	"pbxguard completion bash":       "a shell script",
	"pbxguard completion zsh":        "a shell script",
	"pbxguard completion fish":       "a shell script",
	"pbxguard completion powershell": "a shell script",
	"pbxguard help":                  "help text",
	"pbxguard cluster serve":         "a server: logs only (cluster status --json reads it)",
	"pbxguard firewall remove":       "TODO(integration): --json",
	"pbxguard incident unlock":       "TODO(integration): --json",
}

// TestJSONEverywhere: every command that prints a result takes --json.
func TestJSONEverywhere(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, s := range c.Commands() {
			walk(s)
		}
		if !c.Runnable() || c.HasSubCommands() || c.Name() == cobra.ShellCompRequestCmd || c.Name() == cobra.ShellCompNoDescRequestCmd {
			return
		}
		if _, ok := noJSON[c.CommandPath()]; ok {
			return
		}
		if c.Flags().Lookup("json") == nil {
			t.Errorf("%s has no --json", c.CommandPath())
		}
	}
	root := newRootCmd()
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	walk(root)
}
