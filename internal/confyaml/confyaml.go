// Package confyaml is the one dialect of pbxguard's configuration file: a
// line-aware walker over go.yaml.in/yaml/v3 nodes that every section (the
// core keys, firewall.policy, fraud, and the sections to come) uses to read
// mappings with known keys ("did you mean"), scalars with range checks
// (duration, int, float, bool, string, list, host:port, prefix), and one
// error type carrying the line, the dotted key path, the message and a
// suggestion. A Walker collects every error instead of stopping at the
// first, so `config check` shows all the mistakes of a file in one pass.
//
// It never touches the file system or the network: checks of the host (a
// file exists, a directory is writable) belong to the preflight.
package confyaml

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in the configuration file.
type Error struct {
	Line    int    // 0 when not tied to a line
	Key     string // dotted key path, e.g. jails.asterisk.bantime
	Msg     string // what is wrong and what to write instead
	Suggest string // the nearest known key or value ("did you mean"), "" when none
	// Class, when set, is matched by errors.Is (policy.ErrInvalid): a
	// section keeps its sentinel while sharing the type.
	Class error
}

// Is makes errors.Is(err, e.Class) true.
func (e Error) Is(target error) bool { return e.Class != nil && target == e.Class }

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Message())
	return b.String()
}

// Message is Msg with the suggestion, without line and key.
func (e Error) Message() string {
	if e.Suggest != "" && !strings.Contains(e.Msg, "did you mean") {
		return fmt.Sprintf("%s (did you mean %q?)", e.Msg, e.Suggest)
	}
	return e.Msg
}

// Errors is every problem found in one file, in file order.
type Errors []Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap gives each Error to errors.Is/As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Sort orders the errors by line (stable: same-line errors keep their order).
func (es Errors) Sort() {
	sort.SliceStable(es, func(a, b int) bool { return es[a].Line < es[b].Line })
}

// Err returns es as an error, nil when empty.
func (es Errors) Err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// Walker reads nodes and collects errors. The zero value is ready, with
// Prefix "" (keys are full paths from the top of the file).
type Walker struct {
	// Prefix is put before every key path of this walker's errors (a
	// section parsed on its own, e.g. "fraud").
	Prefix string
	Errs   Errors
	// Warnings are things that work but deserve the administrator's attention.
	Warnings []string
	// Lines maps each key path seen (without Prefix) to the line of its key.
	Lines map[string]int
	// Class is set on every error recorded (see Error.Class).
	Class error
}

// Err returns the collected errors (sorted by line), nil when none.
func (w *Walker) Err() error {
	w.Errs.Sort()
	return w.Errs.Err()
}

func (w *Walker) full(key string) string {
	if w.Prefix == "" {
		return key
	}
	if key == "" {
		return w.Prefix
	}
	return w.Prefix + "." + key
}

// Errorf records an error at line for key.
func (w *Walker) Errorf(line int, key, format string, args ...any) {
	w.Add(Error{Line: line, Key: w.full(key), Msg: fmt.Sprintf(format, args...)})
}

// Add records e as it is (its Key already a full path), with the walker's Class.
func (w *Walker) Add(e Error) {
	if e.Class == nil {
		e.Class = w.Class
	}
	w.Errs = append(w.Errs, e)
}

// ErrorAt records an error at the line of node n (0 when n is nil).
func (w *Walker) ErrorAt(n *yaml.Node, key, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	w.Errorf(line, key, format, args...)
}

// Suggestf records an error with a "did you mean" suggestion (none when
// nothing is close).
func (w *Walker) Suggestf(line int, key, suggest, format string, args ...any) {
	w.Add(Error{Line: line, Key: w.full(key), Msg: fmt.Sprintf(format, args...), Suggest: suggest})
}

// Warnf records a warning.
func (w *Walker) Warnf(format string, args ...any) {
	w.Warnings = append(w.Warnings, fmt.Sprintf(format, args...))
}

// Join makes a dotted key path.
func Join(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

// IsNull reports whether n is absent or an explicit null (`key:` alone).
func IsNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// Root returns the top node of a document (nil for an empty one).
func Root(doc *yaml.Node) *yaml.Node {
	if doc != nil && doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		return doc.Content[0]
	}
	return doc
}

// Describe names a node for a message: "a mapping", "a list", "\"x\"".
func Describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

// Fields are the known keys of a mapping: each is called with the key's
// full path and its value node.
type Fields map[string]func(key string, v *yaml.Node)

// Mapping walks a mapping node, calling fields[key] for each key; unknown
// keys (with the nearest known one) and duplicates are errors, and every
// other key is still read. A null node is an empty mapping. It returns
// false when n is not a mapping.
func (w *Walker) Mapping(n *yaml.Node, prefix string, fields Fields) bool {
	return w.MappingWith(n, prefix, fields, "expected a mapping of keys (key: value), found %s")
}

// MappingWith is Mapping with its own message for a node that is not a
// mapping (one %s: what was found).
func (w *Walker) MappingWith(n *yaml.Node, prefix string, fields Fields, notMapping string) bool {
	if w.Lines == nil {
		w.Lines = map[string]int{}
	}
	if IsNull(n) {
		return true
	}
	if n.Kind != yaml.MappingNode {
		w.Errorf(n.Line, prefix, notMapping, Describe(n))
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key := kn.Value
		full := Join(prefix, key)
		if seen[key] {
			w.Errorf(kn.Line, full, "appears twice (keep one)")
			continue
		}
		seen[key] = true
		f, ok := fields[key]
		if !ok {
			known := make([]string, 0, len(fields))
			for k := range fields {
				known = append(known, k)
			}
			sort.Strings(known)
			if s := Suggest(key, known); s != "" {
				w.Suggestf(kn.Line, full, s, "unknown key")
			} else {
				w.Errorf(kn.Line, full, "unknown key (known here: %s)", strings.Join(known, ", "))
			}
			continue
		}
		w.Lines[full] = kn.Line
		f(full, vn)
	}
	return true
}

// Pairs walks a mapping whose keys are data (jail names, header names):
// each pair in order, duplicates reported with dupMsg.
func (w *Walker) Pairs(n *yaml.Node, prefix, notMapping, dupMsg string, each func(kn, vn *yaml.Node, full string)) bool {
	if IsNull(n) {
		return true
	}
	if n.Kind != yaml.MappingNode {
		w.Errorf(n.Line, prefix, notMapping, Describe(n))
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		full := Join(prefix, kn.Value)
		if seen[kn.Value] {
			w.Errorf(kn.Line, full, "%s", dupMsg)
			continue
		}
		seen[kn.Value] = true
		each(kn, vn, full)
	}
	return true
}

// Scalar returns the value of a single-value node.
func (w *Walker) Scalar(k string, v *yaml.Node) (string, bool) {
	if v == nil {
		return "", false
	}
	if v.Kind != yaml.ScalarNode {
		w.Errorf(v.Line, k, "expected a single value, found %s", Describe(v))
		return "", false
	}
	return v.Value, true
}

// String returns a scalar ("" on error).
func (w *Walker) String(k string, v *yaml.Node) string {
	s, _ := w.Scalar(k, v)
	return s
}

// Path returns an absolute path.
func (w *Walker) Path(k string, v *yaml.Node) string {
	s, ok := w.Scalar(k, v)
	if ok && !strings.HasPrefix(s, "/") {
		w.Errorf(v.Line, k, "%q is not an absolute path (write it from /)", s)
	}
	return s
}

// ParseBool reads true/yes/on and false/no/off (any case).
func ParseBool(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

// Bool returns a boolean (false on error).
func (w *Walker) Bool(k string, v *yaml.Node) bool {
	s, ok := w.Scalar(k, v)
	if !ok {
		return false
	}
	b, ok := ParseBool(s)
	if !ok {
		w.Errorf(v.Line, k, "%q is not true or false", s)
	}
	return b
}

// Int returns a whole number in [lo, hi] (0 on error).
func (w *Walker) Int(k string, v *yaml.Node, lo, hi int) int {
	s, ok := w.Scalar(k, v)
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		w.Errorf(v.Line, k, "%q is not a whole number", s)
		return 0
	}
	if n < lo || n > hi {
		w.Errorf(v.Line, k, "%d is out of range (%d to %d)", n, lo, hi)
		return 0
	}
	return n
}

// Float returns a number in [lo, hi] (lo on error).
func (w *Walker) Float(k string, v *yaml.Node, lo, hi float64) float64 {
	s, ok := w.Scalar(k, v)
	if !ok {
		return 0
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		w.Errorf(v.Line, k, "%q is not a number (try 2 or 1.5)", s)
		return lo
	}
	if f < lo || f > hi {
		w.Errorf(v.Line, k, "%g is out of range (%g to %g)", f, lo, hi)
		return lo
	}
	return f
}

// Duration returns a duration in [lo, hi] (see ParseDuration; hi 0 means
// MaxDuration). hint is the example list of the message ("try 1h, 30m, 1w").
func (w *Walker) Duration(k string, v *yaml.Node, lo, hi time.Duration, hint string) (time.Duration, bool) {
	s, ok := w.Scalar(k, v)
	if !ok {
		return 0, false
	}
	if hi <= 0 {
		hi = MaxDuration
	}
	d, err := ParseDuration(s)
	if err != nil {
		if err == ErrDurationRange {
			w.Errorf(v.Line, k, "%q is out of range (at most %s)", s, FormatDuration(hi))
		} else {
			w.Errorf(v.Line, k, "%q is not a duration (%s)", s, hint)
		}
		return 0, false
	}
	if d < lo {
		w.Errorf(v.Line, k, "%q is too short (at least %s)", s, FormatDuration(lo))
		return 0, false
	}
	if d > hi {
		w.Errorf(v.Line, k, "%q is out of range (at most %s)", s, FormatDuration(hi))
		return 0, false
	}
	return d, true
}

// OneOf returns a value from choices ("" on error, with the nearest choice).
func (w *Walker) OneOf(k string, v *yaml.Node, choices ...string) string {
	s, ok := w.Scalar(k, v)
	if !ok {
		return ""
	}
	for _, c := range choices {
		if s == c {
			return s
		}
	}
	w.Suggestf(v.Line, k, Suggest(s, choices), "%q is not one of %s", s, strings.Join(choices, ", "))
	return ""
}

// Strings returns a list of single values; a single value is a list of one.
func (w *Walker) Strings(k string, v *yaml.Node) []string {
	if v == nil {
		return nil
	}
	if v.Kind == yaml.ScalarNode {
		if v.Tag == "!!null" {
			return nil
		}
		return []string{v.Value}
	}
	if v.Kind != yaml.SequenceNode {
		w.Errorf(v.Line, k, "expected a list, found %s", Describe(v))
		return nil
	}
	out := make([]string, 0, len(v.Content))
	for _, e := range v.Content {
		if s, ok := w.Scalar(k, e); ok {
			out = append(out, s)
		}
	}
	return out
}

// ParsePrefix reads an address (as a single-address prefix) or a CIDR,
// masked; IPv4-mapped IPv6 is refused in CIDR form.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%s: use the IPv4 form", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Prefixes returns a list of addresses or prefixes (a single value is a
// list of one).
func (w *Walker) Prefixes(k string, v *yaml.Node) []netip.Prefix {
	if IsNull(v) {
		return nil
	}
	nodes := v.Content
	if v.Kind == yaml.ScalarNode {
		nodes = []*yaml.Node{v}
	} else if v.Kind != yaml.SequenceNode {
		w.Errorf(v.Line, k, "expected a list of addresses or prefixes, found %s", Describe(v))
		return nil
	}
	var out []netip.Prefix
	for _, e := range nodes {
		s, ok := w.Scalar(k, e)
		if !ok {
			continue
		}
		pfx, err := ParsePrefix(s)
		if err != nil {
			w.Errorf(e.Line, k, "%q is not an address or prefix (write 192.0.2.7, 192.0.2.0/24 or 2001:db8::/48)", s)
			continue
		}
		out = append(out, pfx)
	}
	return out
}

// HostPort returns a host:port address with a numeric port in 1-65535; an
// empty value is allowed only when allowEmpty. hint ends the message
// (e.g. `try "127.0.0.1:5038"`).
func (w *Walker) HostPort(k string, v *yaml.Node, allowEmpty bool, hint string) string {
	s, ok := w.Scalar(k, v)
	if !ok {
		return ""
	}
	if s == "" && allowEmpty {
		return ""
	}
	if err := CheckHostPort(s); err != nil {
		w.Errorf(v.Line, k, "%q is not host:port (%s)", s, hint)
		return ""
	}
	return s
}

// CheckHostPort reports whether s is host:port with a port from 1 to 65535.
func CheckHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// Suggest returns the candidate nearest to s when it is close enough.
func Suggest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := levenshtein(strings.ToLower(s), c)
		if d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	if bestD <= 2 || (bestD <= 3 && len(s) > 6) || strings.ReplaceAll(strings.ToLower(s), "-", "_") == best ||
		strings.ReplaceAll(strings.ToLower(s), "_", "") == strings.ReplaceAll(best, "_", "") {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
