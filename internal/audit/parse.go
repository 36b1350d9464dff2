// Package audit reads an Asterisk configuration directory the way Asterisk's
// main/config.c does and reports what invites attack: guest calls, weak
// secrets, open ACLs, AMI and HTTP exposed to the world, international
// dialling reachable by untrusted endpoints, missing security logging.
//
// The parser (this file) reproduces config.c: categories and templates
// ([name](!), [name](a,b), [name](+)), #include / #tryinclude with globs and
// braces relative to the configuration directory, #exec (recorded, never
// run), "=" and "=>", "+=" appends, ";" comments with "\;" escapes, nested
// ";-- --;" block comments, and the file:line of every value. The checks
// (checks.go) are pure functions over the parsed files.
package audit

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing/fstest"
)

// Pos is where a value was written.
type Pos struct {
	File string // path relative to the configuration directory
	Line int    // 1-based; 0 when the thing is absent from the file
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Var is one "name = value" (or "name => value") line.
type Var struct {
	Name  string
	Value string
	// Object is true for "=>".
	Object bool
	Pos    Pos
	// Inherited names the template the variable was copied from ("" if
	// written in the section itself).
	Inherited string
}

// Section is one Asterisk category. Its Vars are already the effective
// options: variables of the templates it inherits from (in order, as they
// were when the section was defined, exactly like ast_category_inherit), then
// its own, then any "(+)" additions.
type Section struct {
	Name      string
	Template  bool     // [name](!)
	Inherits  []string // template/category names from [name](a,b)
	Pos       Pos
	Vars      []*Var
	additions []Pos
}

// Get returns the last value of name (case-insensitive), as most Asterisk
// modules read options in order and let the last one win.
func (s *Section) Get(name string) (*Var, bool) {
	var found *Var
	for _, v := range s.Vars {
		if strings.EqualFold(v.Name, name) {
			found = v
		}
	}
	return found, found != nil
}

// Value returns the last value of name or def.
func (s *Section) Value(name, def string) string {
	if v, ok := s.Get(name); ok {
		return v.Value
	}
	return def
}

// All returns every variable called name, in order.
func (s *Section) All(name string) []*Var {
	var out []*Var
	for _, v := range s.Vars {
		if strings.EqualFold(v.Name, name) {
			out = append(out, v)
		}
	}
	return out
}

// Diag is a problem found while reading the configuration.
type Diag struct {
	Pos Pos
	// Fatal is true when Asterisk would refuse the whole file
	// (config.c returns CONFIG_STATUS_FILEINVALID).
	Fatal bool
	// Kind is "syntax", "include" or "exec".
	Kind string
	Msg  string
}

func (d Diag) String() string { return fmt.Sprintf("%s: %s", d.Pos, d.Msg) }

// Include records one #include, #tryinclude or #exec directive.
type Include struct {
	Pos       Pos
	Directive string // "include", "tryinclude", "exec"
	Target    string
	Files     []string // files it expanded to (none for #exec)
}

// File is one top-level configuration file with everything it includes.
type File struct {
	Name     string
	Sections []*Section
	Includes []Include
	Diags    []Diag
}

// Section returns the first non-template section called name.
func (f *File) Section(name string) *Section {
	for _, s := range f.Sections {
		if !s.Template && strings.EqualFold(s.Name, name) {
			return s
		}
	}
	return nil
}

// Concrete returns the non-template sections.
func (f *File) Concrete() []*Section {
	var out []*Section
	for _, s := range f.Sections {
		if !s.Template {
			out = append(out, s)
		}
	}
	return out
}

// Limits from main/config.c.
const (
	maxIncludeLevel   = 10   // MAX_INCLUDE_LEVEL
	maxNestedComments = 128  // MAX_NESTED_COMMENTS
	maxLineBytes      = 8191 // config.c skips lines this long or longer (fgets into char buf[8192])
)

// Parse reads name from fsys (the configuration directory) and the files it
// includes. It never fails: problems are returned as Diags in the File.
// Include paths are relative to the root of fsys, like Asterisk's
// astetcdir; absolute paths are read through absFS when it is not nil
// (os.DirFS("/") for a real directory), else reported as missing.
func Parse(fsys fs.FS, name string) *File {
	return parseWith(fsys, nil, "", name)
}

// ParseBytes parses one file held in memory; its #include directives find
// nothing.
func ParseBytes(name string, data []byte) *File {
	return Parse(fstest.MapFS{name: &fstest.MapFile{Data: data}}, name)
}

func parseWith(fsys, absFS fs.FS, root, name string) *File {
	p := &parser{fsys: fsys, absFS: absFS, root: root, file: &File{Name: name}}
	p.load(name, nil)
	return p.file
}

type parser struct {
	fsys    fs.FS
	absFS   fs.FS
	root    string // absolute directory of fsys on absFS, "" if unknown
	file    *File
	current *Section // cfg->current: the category an included file starts in
}

func (p *parser) diag(pos Pos, fatal bool, kind, msg string) {
	p.file.Diags = append(p.file.Diags, Diag{Pos: pos, Fatal: fatal, Kind: kind, Msg: msg})
}

func (p *parser) read(name string) ([]byte, error) {
	if strings.HasPrefix(name, "/") {
		if p.absFS == nil {
			return nil, fs.ErrNotExist
		}
		return fs.ReadFile(p.absFS, strings.TrimLeft(name, "/"))
	}
	return fs.ReadFile(p.fsys, name)
}

// glob expands an include target like glob(3) with GLOB_NOMAGIC|GLOB_BRACE:
// braces first, then wildcards; the result is sorted per brace alternative.
func (p *parser) glob(target string) []string {
	var out []string
	seen := map[string]bool{}
	for _, pat := range expandBraces(target, 0) {
		if !strings.HasPrefix(pat, "/") && p.root != "" && !fs.ValidPath(path.Clean(pat)) {
			pat = path.Join(p.root, pat) // "../x.conf": outside the directory
		}
		fsys, prefix, rel := p.fsys, "", pat
		if strings.HasPrefix(pat, "/") {
			if p.absFS == nil {
				continue
			}
			fsys, prefix, rel = p.absFS, "/", strings.TrimLeft(pat, "/")
		}
		rel = path.Clean(rel)
		if !fs.ValidPath(rel) {
			continue
		}
		matches, err := fs.Glob(fsys, rel)
		if err != nil {
			continue
		}
		for _, m := range matches {
			if st, err := fs.Stat(fsys, m); err != nil || !st.Mode().IsRegular() {
				continue
			}
			if !seen[prefix+m] {
				seen[prefix+m] = true
				out = append(out, prefix+m)
			}
		}
	}
	return out
}

// expandBraces expands {a,b} alternatives (nested allowed, bounded).
func expandBraces(s string, depth int) []string {
	open := strings.IndexByte(s, '{')
	if open < 0 || depth > 8 {
		return []string{s}
	}
	level, close := 0, -1
	var commas []int
	for i := open; i < len(s); i++ {
		switch s[i] {
		case '{':
			level++
		case '}':
			level--
			if level == 0 {
				close = i
			}
		case ',':
			if level == 1 {
				commas = append(commas, i)
			}
		}
		if close >= 0 {
			break
		}
	}
	if close < 0 {
		return []string{s}
	}
	var alts []string
	prev := open + 1
	for _, c := range commas {
		alts = append(alts, s[prev:c])
		prev = c + 1
	}
	alts = append(alts, s[prev:close])
	var out []string
	for _, a := range alts {
		for _, e := range expandBraces(s[:open]+a+s[close+1:], depth+1) {
			if len(out) >= 256 {
				return out
			}
			out = append(out, e)
		}
	}
	return out
}

// load reads one file; stack holds the files being included (cycles).
// It reports whether the file could be read.
func (p *parser) load(name string, stack []string) bool {
	data, err := p.read(name)
	if err != nil {
		if len(stack) == 0 {
			p.diag(Pos{File: name}, true, "include", fmt.Sprintf("cannot read %s: %v", name, err))
		}
		return false
	}
	stack = append(stack, name)
	cat := p.current // an included file continues in the current category
	comment := 0
	var nest [maxNestedComments]int
	for i, raw := range splitLines(data) {
		lineno := i + 1
		pos := Pos{name, lineno}
		if len(raw) >= maxLineBytes {
			p.diag(pos, false, "syntax", "line longer than 8191 bytes: Asterisk skips it")
			continue
		}
		if lineno == 1 {
			raw = strings.TrimPrefix(raw, "\xEF\xBB\xBF")
		}
		text, ok := stripComments(raw, &comment, &nest, lineno, func(msg string) { p.diag(pos, false, "syntax", msg) })
		if !ok || text == "" {
			continue
		}
		p.line(&cat, text, pos, stack)
	}
	if comment > 0 {
		p.diag(Pos{name, nest[comment-1]}, false, "syntax",
			"block comment ;-- opened here is never closed with --;: Asterisk ignores everything after it in this file")
	}
	if comment < 0 {
		p.diag(Pos{name, 0}, false, "syntax",
			"a --; without an opening ;-- makes Asterisk ignore the lines after it in this file")
	}
	return true
}

// stripComments reproduces the comment loop of config_text_file_load on one
// line, C string semantics included. It returns the text to process and
// false when the whole line is inside a block comment.
func stripComments(raw string, comment *int, nest *[maxNestedComments]int, lineno int, warn func(string)) (string, bool) {
	if i := strings.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i] // fgets + strlen stop at NUL
	}
	buf := append([]byte(raw), 0)
	strlen := func(i int) int {
		n := 0
		for buf[i+n] != 0 {
			n++
		}
		return n
	}
	newBuf := 0
	processBuf := 0
	if *comment != 0 {
		processBuf = -1
	}
	for {
		cp := -1
		for k := newBuf; buf[k] != 0; k++ {
			if buf[k] == ';' {
				cp = k
				break
			}
		}
		if cp < 0 {
			break
		}
		switch {
		case cp > newBuf && buf[cp-1] == '\\':
			// Escaped semicolons aren't comments: drop the backslash.
			copy(buf[cp-1:], buf[cp:])
			buf = buf[:len(buf)-1]
			newBuf = cp
		case buf[cp+1] == '-' && buf[cp+2] == '-' && buf[cp+3] != '-':
			if *comment >= 0 && *comment < maxNestedComments {
				buf[cp] = 0
				nest[*comment] = lineno
				*comment++
			} else if *comment < 0 {
				buf[cp] = 0
				*comment++
			} else {
				warn("more than 128 nested ;-- comments")
			}
			newBuf = cp + 3
		case cp >= newBuf+2 && buf[cp-1] == '-' && buf[cp-2] == '-':
			*comment--
			newBuf = cp + 1
			if *comment == 0 {
				if processBuf >= 0 {
					old := processBuf + strlen(processBuf)
					n := strlen(newBuf)
					copy(buf[old:], buf[newBuf:newBuf+n+1])
					buf = buf[:old+n+1]
					newBuf = old
				} else {
					processBuf = newBuf
				}
			}
		default:
			if *comment == 0 {
				buf[cp] = 0
				newBuf = cp
			} else {
				newBuf = cp + 1
			}
		}
	}
	if processBuf < 0 {
		return "", false
	}
	return strings.TrimSpace(string(buf[processBuf : processBuf+strlen(processBuf)])), true
}

// line is process_text_line.
func (p *parser) line(cat **Section, text string, pos Pos, stack []string) {
	switch text[0] {
	case '[':
		p.category(cat, text, pos)
	case '#':
		p.directive(text, pos, stack)
	default:
		p.variable(*cat, text, pos)
	}
}

func (p *parser) category(cat **Section, text string, pos Pos) {
	end := strings.IndexByte(text, ']')
	if end < 0 {
		p.diag(pos, true, "syntax", "no closing ']' in section header: Asterisk refuses the whole file")
		*cat = detached(text, pos)
		return
	}
	name := text[1:end]
	rest := text[end+1:]
	newcat := &Section{Name: name, Pos: pos}
	*cat = newcat
	if strings.HasPrefix(rest, "(") {
		close := strings.IndexByte(rest, ')')
		if close < 0 {
			p.diag(pos, true, "syntax", "no closing ')' after ["+name+"]: Asterisk refuses the whole file")
			*cat = detached(name, pos)
			return
		}
		for _, item := range strings.Split(rest[1:close], ",") {
			switch {
			case strings.EqualFold(item, "!"):
				(*cat).Template = true
			case strings.HasPrefix(item, "+"):
				target := p.find(name, item[1:], false)
				if target == nil {
					p.diag(pos, true, "syntax", fmt.Sprintf("[%s](+) adds to a section %q that does not exist (yet): Asterisk refuses the whole file", name, name))
					*cat = detached(name, pos)
					return
				}
				*cat = target
				if newcat != nil {
					p.current = target
					target.Template = target.Template || newcat.Template
					target.Vars = append(target.Vars, newcat.Vars...)
					target.additions = append(target.additions, pos)
					newcat = nil
				}
			default:
				base := p.find(item, "", true)
				if base == nil {
					p.diag(pos, true, "syntax", fmt.Sprintf("[%s] inherits from %q, which is not defined above it: Asterisk refuses the whole file (define the template first; no spaces inside the parentheses)", name, item))
					*cat = detached(name, pos)
					return
				}
				(*cat).Inherits = append((*cat).Inherits, base.Name)
				for _, v := range base.Vars {
					c := *v
					if c.Inherited == "" {
						c.Inherited = base.Name
					}
					(*cat).Vars = append((*cat).Vars, &c)
				}
			}
		}
	}
	if newcat != nil {
		p.file.Sections = append(p.file.Sections, newcat)
		p.current = newcat
	}
}

// detached is a section that is not part of the file: after a header that
// Asterisk refuses (it stops reading the file there), the values that follow
// are swallowed instead of each being reported as outside any section.
func detached(name string, pos Pos) *Section { return &Section{Name: name, Pos: pos} }

// find is category_get_sep: the first category called name (case-insensitive)
// matching filter. Templates match only when templates is true.
func (p *parser) find(name, filter string, templates bool) *Section {
	for _, s := range p.file.Sections {
		if name != "" && !strings.EqualFold(s.Name, name) {
			continue
		}
		if s.Template && !templates {
			continue
		}
		if filter != "" && !matchFilter(s, filter) {
			continue
		}
		return s
	}
	return nil
}

// matchFilter implements the name=value&name=value category filters of
// [name](+filter) with Go regular expressions (Asterisk uses POSIX ERE).
func matchFilter(s *Section, filter string) bool {
	for _, expr := range strings.Split(filter, "&") {
		n, v, ok := strings.Cut(expr, "=")
		if !ok {
			return false
		}
		n, v = strings.TrimSpace(n), strings.TrimSpace(v)
		if n == "TEMPLATES" {
			continue
		}
		rn, err1 := regexp.Compile(n)
		rv, err2 := regexp.Compile(v)
		if err1 != nil || err2 != nil {
			return false
		}
		found := false
		for _, x := range s.Vars {
			if rn.MatchString(x.Name) && rv.MatchString(x.Value) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (p *parser) directive(text string, pos Pos, stack []string) {
	cur := text[1:]
	i := 0
	for i < len(cur) && cur[i] > 32 {
		i++
	}
	name, arg := cur[:i], strings.TrimSpace(cur[i:])
	var kind string
	switch strings.ToLower(name) {
	case "include", "tryinclude", "exec":
		kind = strings.ToLower(name)
	default:
		p.diag(pos, false, "syntax", fmt.Sprintf("unknown directive #%s: Asterisk ignores the line", name))
		return
	}
	if arg == "" {
		p.diag(pos, false, "syntax", fmt.Sprintf("#%s needs an argument: Asterisk ignores the line", kind))
		return
	}
	if q := arg[0]; q == '"' || q == '<' {
		want := byte('"')
		if q == '<' {
			want = '>'
		}
		if len(arg) >= 2 && arg[len(arg)-1] == want {
			arg = arg[1 : len(arg)-1]
		}
	}
	inc := Include{Pos: pos, Directive: kind, Target: arg}
	if kind == "exec" {
		p.diag(pos, false, "exec", fmt.Sprintf("#exec %s runs a program at every reload (only with execincludes=yes in asterisk.conf); its output was not audited", arg))
		p.file.Includes = append(p.file.Includes, inc)
		return
	}
	files := p.glob(arg)
	if len(files) == 0 && kind == "include" {
		p.diag(pos, true, "include", fmt.Sprintf("#include %s: no such file in the configuration directory: Asterisk refuses the whole file (use #tryinclude for optional files)", arg))
	}
	for _, f := range files {
		if slices.Contains(stack, f) {
			p.diag(pos, true, "include", fmt.Sprintf("#%s %s: include cycle %s -> %s", kind, arg, strings.Join(stack, " -> "), f))
			continue
		}
		if len(stack) > maxIncludeLevel {
			p.diag(pos, true, "include", fmt.Sprintf("#%s %s: more than %d nested includes: Asterisk stops here", kind, arg, maxIncludeLevel))
			continue
		}
		if p.load(f, stack) {
			inc.Files = append(inc.Files, f)
		}
	}
	p.file.Includes = append(p.file.Includes, inc)
}

func (p *parser) variable(cat *Section, text string, pos Pos) {
	if cat == nil {
		p.diag(pos, true, "syntax", "option outside any [section]: Asterisk refuses the whole file")
		return
	}
	cur := text
	escaped := 0
	if cur[0] == '\\' {
		cur = cur[1:]
		if cur == "" || cur[0] < 33 {
			p.diag(pos, true, "syntax", "invalid escape at the start of the line: Asterisk refuses the whole file")
			return
		}
		escaped = 1
	}
	eq := -1
	if escaped < len(cur) {
		if k := strings.IndexByte(cur[escaped:], '='); k >= 0 {
			eq = k + escaped
		}
	}
	if eq < 0 {
		p.diag(pos, false, "syntax", fmt.Sprintf("no '=' in %q: Asterisk ignores the line", text))
		return
	}
	if eq > escaped && cur[eq-1] == '+' {
		name := strings.TrimSpace(cur[:eq-1])
		var replace *Var
		for _, v := range cat.Vars {
			if v.Name == name {
				replace = v
			}
		}
		if replace != nil {
			nv := *replace
			nv.Value = strings.TrimLeft(strings.TrimRight(replace.Value+cur[eq+1:], " \t\r\n\v\f"), " \t")
			nv.Pos = pos
			nv.Inherited = ""
			for i, v := range cat.Vars {
				if v == replace {
					cat.Vars[i] = &nv
				}
			}
			return
		}
		p.set(cat, name, cur[eq+1:], false, pos)
		return
	}
	name := strings.TrimSpace(cur[:eq])
	val := cur[eq+1:]
	object := false
	if strings.HasPrefix(val, ">") {
		object = true
		val = val[1:]
	}
	p.set(cat, name, val, object, pos)
}

func (p *parser) set(cat *Section, name, val string, object bool, pos Pos) {
	if name == "" {
		p.diag(pos, false, "syntax", "no option name before '=': Asterisk ignores the line")
		return
	}
	cat.Vars = append(cat.Vars, &Var{Name: name, Value: strings.TrimSpace(val), Object: object, Pos: pos})
}

// splitLines splits like fgets on '\n'; the "\r" of CRLF is whitespace that
// ast_strip removes anyway.
func splitLines(data []byte) []string {
	s := string(data)
	if s == "" {
		return nil
	}
	s = strings.TrimSuffix(s, "\n")
	return strings.Split(s, "\n")
}
