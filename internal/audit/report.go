package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Severity orders findings. The zero value is Info.
type Severity int

// Severities, lowest first.
const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = []string{"info", "low", "medium", "high", "critical"}

// Severities lists every severity, highest first.
func Severities() []Severity { return []Severity{Critical, High, Medium, Low, Info} }

func (s Severity) String() string {
	if s < Info || s > Critical {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// MarshalText writes the lower-case name.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a name written by MarshalText.
func (s *Severity) UnmarshalText(b []byte) error {
	v, err := ParseSeverity(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseSeverity reads "critical", "high", "medium", "low" or "info".
func ParseSeverity(name string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(name, n) {
			return Severity(i), nil
		}
	}
	return Info, fmt.Errorf("severity %q: use critical, high, medium, low or info", name)
}

// Finding is one problem: what, where, why, and how to fix it.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix"`
}

// Report is the result of one audit.
type Report struct {
	// Dir is the audited directory ("" for an fs.FS).
	Dir string `json:"-"`
	// Files are the top-level files that were read (their includes are
	// not listed).
	Files    []string  `json:"-"`
	Findings []Finding `json:"findings"`
}

// CountBySeverity returns the number of findings per severity; every
// severity is present, with 0 when there is none.
func (r *Report) CountBySeverity() map[Severity]int {
	out := map[Severity]int{}
	for _, s := range Severities() {
		out[s] = 0
	}
	if r == nil {
		return out
	}
	for _, f := range r.Findings {
		out[f.Severity]++
	}
	return out
}

// AtOrAbove counts the findings of severity min or higher.
func (r *Report) AtOrAbove(min Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity >= min {
			n++
		}
	}
	return n
}

// Options tune the audit.
type Options struct {
	// TrustedEndpoints are endpoint, peer or user names ("1001",
	// "PJSIP/1001", "SIP/2001", "IAX2/5001") that may dial international
	// numbers. Every other endpoint reaching an international route is a
	// dialplan.intl-open finding. Unauthenticated entries (guests,
	// anonymous) are never trusted.
	TrustedEndpoints []string
}

// configFiles are the files the checks read, relative to the directory.
var configFiles = []string{
	"sip.conf", "pjsip.conf", "iax.conf", "manager.conf", "http.conf", "ari.conf",
	"extensions.conf", "logger.conf", "modules.conf", "acl.conf",
}

// ErrUnreadable is wrapped by Run when the directory cannot be read.
var ErrUnreadable = errors.New("asterisk configuration directory cannot be read")

// Run audits the Asterisk configuration directory dir (usually
// /etc/asterisk). Absolute #include paths are followed on the real file
// system. It fails only when dir cannot be read.
func Run(dir string, opts Options) (*Report, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v (give the directory that holds sip.conf/pjsip.conf with --asterisk-dir)", ErrUnreadable, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory (give the directory that holds sip.conf/pjsip.conf)", ErrUnreadable, dir)
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	r, err := run(os.DirFS(dir), os.DirFS("/"), filepath.ToSlash(root), opts)
	if r != nil {
		r.Dir = dir
	}
	return r, err
}

// RunFS audits a configuration directory given as a file system.
func RunFS(fsys fs.FS, opts Options) (*Report, error) {
	return run(fsys, nil, "", opts)
}

func run(fsys, absFS fs.FS, root string, opts Options) (*Report, error) {
	if _, err := fs.ReadDir(fsys, "."); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreadable, err)
	}
	cfg := &Config{Files: map[string]*File{}}
	rep := &Report{}
	for _, name := range configFiles {
		if _, err := fs.Stat(fsys, name); err != nil {
			continue
		}
		cfg.Files[name] = parseWith(fsys, absFS, root, name)
		rep.Files = append(rep.Files, name)
	}
	rep.Findings = Check(cfg, opts)
	return rep, nil
}

// Config is the parsed configuration directory: file name -> parsed file.
// A missing file is absent from the map.
type Config struct {
	Files map[string]*File
}

// Check runs every check over cfg. It is pure: no I/O, deterministic order
// (severity, then file and line, then id).
func Check(cfg *Config, opts Options) []Finding {
	e := newEnv(cfg, opts)
	var out []Finding
	for _, c := range checks {
		out = append(out, c(e)...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Severity != b.Severity {
			return a.Severity > b.Severity
		}
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.ID < b.ID
	})
	return out
}
