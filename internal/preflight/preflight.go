// Package preflight is the one check of a configuration against the host
// that `pbxguard config check` and `pbxguard run` share: every error of
// every section (core keys, firewall.policy, fraud) in one pass, with its
// line, and then what the daemon would trip over at start or run crippled
// with — an AMI secret file that is missing, empty or a directory, an AMI
// address without a port, a state_dir it cannot create, a followed path
// that is a directory or a FIFO (a warning: the daemon runs without that
// source). What can appear later (a log file, a CDR file not written yet)
// is a warning, not an error.
//
// It reads and stats; it never creates, writes or connects.
package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/confyaml"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/policy"
)

// Exit codes of `config check` (and of `run` when the preflight fails).
const (
	ExitOK       = 0 // usable (warnings may have been printed)
	ExitWarnings = 1 // usable, but --strict was given and there are warnings
	ExitErrors   = 2 // not usable: pbxguard run refuses it
)

// Report is the result of a preflight.
type Report struct {
	File     string
	Config   *config.Config  // nil when the file could not be read or is not YAML
	Fraud    *fraud.Settings // the fraud: section, nil when absent or broken
	Policy   *policy.Config  // the firewall.policy: section (defaults when absent), nil when broken
	Errors   confyaml.Errors // what makes the file unusable, in file order
	Warnings confyaml.Errors // what works but deserves attention
}

// OK reports whether the configuration is usable.
func (r *Report) OK() bool { return len(r.Errors) == 0 }

// Err returns the errors as one error (nil when OK).
func (r *Report) Err() error { return r.Errors.Err() }

// Code is the exit code of `config check` (strict: warnings exit 1).
func (r *Report) Code(strict bool) int {
	switch {
	case !r.OK():
		return ExitErrors
	case strict && len(r.Warnings) > 0:
		return ExitWarnings
	}
	return ExitOK
}

// Options are the host facts; zero values mean the real host. Tests set them.
type Options struct {
	Config config.Options
	// HaveJournalctl reports whether journalctl is on PATH (nil: look).
	HaveJournalctl func() bool
	// Root reports whether the checks run with root's rights (nil: euid 0).
	// A permission error as another user is a warning ("run as root"),
	// since the daemon runs as root.
	Root func() bool
}

func (o Options) withDefaults() Options {
	if o.HaveJournalctl == nil {
		o.HaveJournalctl = func() bool { _, err := exec.LookPath("journalctl"); return err == nil }
	}
	if o.Root == nil {
		o.Root = func() bool { return os.Geteuid() == 0 }
	}
	return o
}

// Check reads the file at path and checks it.
func Check(path string, opts Options) *Report {
	r := &Report{File: path}
	c, err := config.Load(path, opts.Config)
	if c == nil {
		var es confyaml.Errors
		if errors.As(err, &es) {
			r.Errors = append(r.Errors, es...)
		} else if err != nil {
			r.Errors = append(r.Errors, confyaml.Error{Msg: err.Error()})
		}
		return r
	}
	return CheckConfig(c, err, opts)
}

// CheckConfig checks a configuration already read (loadErr: what
// config.Load or config.Parse returned with it).
func CheckConfig(c *config.Config, loadErr error, opts Options) *Report {
	opts = opts.withDefaults()
	r := &Report{File: c.Path, Config: c}
	var es confyaml.Errors
	if errors.As(loadErr, &es) {
		r.Errors = append(r.Errors, es...)
	} else if loadErr != nil {
		r.Errors = append(r.Errors, confyaml.Error{Msg: loadErr.Error()})
	}
	for _, w := range c.Warnings {
		r.Warnings = append(r.Warnings, confyaml.Error{Msg: w})
	}
	h := &host{r: r, opts: opts, lines: c.Lines}

	// The sections other packages own, whatever the core keys hold.
	if c.Fraud != nil {
		s, err := fraud.ParseSettings(c.Fraud)
		if err != nil {
			r.Errors = append(r.Errors, sectionErrors(err, "fraud")...)
		} else {
			r.Fraud = s
		}
	}
	if c.Firewall.Policy != nil {
		pc, err := policy.FromYAML(c.Firewall.Policy)
		if err != nil {
			r.Errors = append(r.Errors, sectionErrors(err, "")...)
		} else if _, err := policy.Compile(pc); err != nil {
			r.Errors = append(r.Errors, sectionErrors(err, "")...)
		} else {
			r.Policy = pc
		}
	}

	h.stateDir(c.StateDir, c.Lines["state_dir"])
	if c.Control.Socket != "" {
		h.creatableDir("control.socket", filepath.Dir(c.Control.Socket), c.Lines["control.socket"])
	}
	h.jails(c)
	h.ami(c)
	r.Errors.Sort()
	return r
}

// sectionErrors turns a section parser's error into line-numbered Errors.
func sectionErrors(err error, section string) confyaml.Errors {
	var es confyaml.Errors
	if errors.As(err, &es) {
		return es
	}
	var out confyaml.Errors
	for _, e := range flatten(err) {
		var ce confyaml.Error
		var pe *policy.ConfigError
		switch {
		case errors.As(e, &ce):
			out = append(out, ce)
		case errors.As(e, &pe):
			out = append(out, confyaml.Error{Line: pe.Line, Key: pe.Key, Msg: pe.Msg})
		default:
			out = append(out, confyaml.Error{Key: section, Msg: e.Error()})
		}
	}
	return out
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

type host struct {
	r     *Report
	opts  Options
	lines map[string]int
}

func (h *host) errorf(line int, key, format string, args ...any) {
	h.r.Errors = append(h.r.Errors, confyaml.Error{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (h *host) warnf(line int, key, format string, args ...any) {
	h.r.Warnings = append(h.r.Warnings, confyaml.Error{Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// denied reports a permission problem: an error as root, a warning
// otherwise (the daemon runs as root).
func (h *host) denied(line int, key, format string, args ...any) {
	if h.opts.Root() {
		h.errorf(line, key, format, args...)
		return
	}
	h.warnf(line, key, format+" (as this user; the daemon runs as root: check with sudo)", args...)
}

// stateDir: the directory exists and is writable, or its nearest existing
// parent is a writable directory (store.Open creates it).
func (h *host) stateDir(dir string, line int) { h.creatableDir("state_dir", dir, line) }

// creatableDir reports (under key) a directory that is not one, or that
// cannot be created or written.
func (h *host) creatableDir(key, dir string, line int) {
	if dir == "" {
		return
	}
	p := filepath.Clean(dir)
	for {
		fi, err := os.Stat(p)
		if err == nil {
			if !fi.IsDir() {
				if p == filepath.Clean(dir) {
					h.errorf(line, key, "%s is not a directory (remove it, or choose another path)", dir)
				} else {
					h.errorf(line, key, "%s cannot be created: %s is not a directory", dir, p)
				}
				return
			}
			if err := syscall.Access(p, 0x2|0x1); err != nil { // W_OK|X_OK
				if p == filepath.Clean(dir) {
					h.denied(line, key, "%s is not writable: %v", dir, err)
				} else {
					h.denied(line, key, "%s cannot be created: %s is not writable: %v", dir, p, err)
				}
			}
			return
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			h.denied(line, key, "%s: %v", dir, err)
			return
		}
		parent := filepath.Dir(p)
		if parent == p {
			h.errorf(line, key, "%s cannot be created", dir)
			return
		}
		p = parent
	}
}

// followed checks a path the daemon follows: absent is a warning (it may
// appear later), and so is a non-regular file (directory, FIFO, device):
// the daemon refuses that source, retries it and shows it failing, while
// every other source protects the PBX — one bad path must not stop them.
func (h *host) followed(line int, key, path, what string) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.warnf(line, key, "%s %s does not exist yet; pbxguard waits for it (check the path if it never appears)", what, path)
	case err != nil:
		h.denied(line, key, "%s %s: %v", what, path, err)
	case !fi.Mode().IsRegular():
		h.warnf(line, key, "%s %s is not a regular file (%s); pbxguard follows files only: that source is refused and retried (failing in pbxguard status) while the others run", what, path, kind(fi.Mode()))
	default:
		f, err := os.Open(path)
		if err != nil {
			h.denied(line, key, "%s %s cannot be read: %v", what, path, err)
			return
		}
		f.Close()
	}
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

func (h *host) jails(c *config.Config) {
	for _, j := range c.Enabled() {
		if j.Source == "ami" {
			continue
		}
		key := "jails." + j.Name + ".files"
		line := h.lines[key]
		if line == 0 {
			line = j.Line
		}
		for _, f := range j.Files {
			h.followed(line, key, f, "jail "+j.Name+": log file")
		}
		if len(j.Journal) > 0 && !h.opts.HaveJournalctl() {
			jl := h.lines["jails."+j.Name+".journal"]
			if jl == 0 {
				jl = j.Line
			}
			h.errorf(jl, "jails."+j.Name+".journal", "needs journalctl, which is not installed (install systemd, or set jails.%s.files: [/var/log/auth.log])", j.Name)
		}
	}
}

// ami checks what the AMI connection needs when something uses it (the
// fraud: section, or a jail with source: ami).
func (h *host) ami(c *config.Config) {
	var amiJails []config.Jail
	for _, j := range c.Enabled() {
		if j.Source == "ami" {
			amiJails = append(amiJails, j)
		}
	}
	s := h.r.Fraud
	if s == nil {
		if c.Fraud == nil && len(amiJails) == 0 {
			return
		}
		// No fraud section, or one with errors (reported already): check
		// the secret it names, or the default one.
		s = &fraud.Settings{AMIAddr: "127.0.0.1:5038", AMIUser: "pbxguard", AMISecretFile: "/etc/pbxguard/ami.secret"}
		if v, ok := keyValue(c.Fraud, "ami", "secret_file"); ok && strings.HasPrefix(v, "/") {
			s.AMISecretFile = v
		}
		if v, ok := keyValue(c.Fraud, "ami", "user"); ok && v != "" {
			s.AMIUser = v
		}
	}
	line, key := keyLine(c.Fraud, "ami", "secret_file"), "fraud.ami.secret_file"
	if line == 0 {
		line = keyLine(c.Fraud, "ami")
	}
	if line == 0 && c.Fraud != nil {
		line = c.Fraud.Line
	}
	if line == 0 && len(amiJails) > 0 {
		line, key = amiJails[0].Line, "jails."+amiJails[0].Name+".source"
	}
	fi, err := os.Stat(s.AMISecretFile)
	hint := fmt.Sprintf("write the secret of the manager.conf user %q into %s, mode 0600, or set fraud.ami.secret_file", s.AMIUser, s.AMISecretFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		h.errorf(line, key, "AMI secret file %s does not exist (%s)", s.AMISecretFile, hint)
	case err != nil:
		h.denied(line, key, "AMI secret file %s: %v", s.AMISecretFile, err)
	case !fi.Mode().IsRegular():
		h.errorf(line, key, "AMI secret file %s is %s, not a file (%s)", s.AMISecretFile, kind(fi.Mode()), hint)
	default:
		b, err := os.ReadFile(s.AMISecretFile)
		if err != nil {
			h.denied(line, key, "AMI secret file %s cannot be read: %v", s.AMISecretFile, err)
		} else if strings.TrimSpace(string(b)) == "" {
			h.errorf(line, key, "AMI secret file %s is empty (%s)", s.AMISecretFile, hint)
		} else if fi.Mode().Perm()&0o077 != 0 {
			h.warnf(line, key, "AMI secret file %s is readable by others (mode %04o); chmod 0600 it", s.AMISecretFile, fi.Mode().Perm())
		}
	}
	if h.r.Fraud != nil {
		if s.CDR != "" {
			h.followed(keyLine(c.Fraud, "cdr"), "fraud.cdr", s.CDR, "CDR file")
		}
		if s.CEL != "" {
			h.followed(keyLine(c.Fraud, "cel"), "fraud.cel", s.CEL, "CEL file")
		}
	}
}

// keyLine returns the line of the key at path under mapping n (0 when absent).
func keyLine(n *yaml.Node, path ...string) int {
	n = confyaml.Root(n)
	line := 0
	for _, k := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return 0
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				line, next = n.Content[i].Line, n.Content[i+1]
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return line
}

// keyValue returns the scalar at path under mapping n.
func keyValue(n *yaml.Node, path ...string) (string, bool) {
	n = confyaml.Root(n)
	for _, k := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return "", false
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	if n == nil || n.Kind != yaml.ScalarNode {
		return "", false
	}
	return n.Value, true
}
