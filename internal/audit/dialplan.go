package audit

import (
	"regexp"
	"strings"
)

// Context is one dialplan context of extensions.conf (pbx_config).
type Context struct {
	Name     string
	Pos      Pos
	Extens   []*Exten
	Includes []ContextInclude
}

// ContextInclude is an "include => other" line.
type ContextInclude struct {
	Name string
	Pos  Pos
}

// Exten is one extension (all its priorities) of a context.
type Exten struct {
	Pattern    string // as written, "_X." for a pattern
	Pos        Pos    // where its first priority is written
	Priorities []Priority
	// Dialable is true when the extension has a priority 1: a call for
	// this number starts there. Subroutine-only extensions (priority 50000
	// reached by Gosub) are not entry points.
	Dialable bool
}

// Priority is one step of an extension.
type Priority struct {
	App  string
	Data string
	Pos  Pos
}

// IsPattern reports whether the extension is a pattern (starts with '_').
func (e *Exten) IsPattern() bool { return strings.HasPrefix(e.Pattern, "_") }

// Dialplan is extensions.conf read as pbx_config reads it.
type Dialplan struct {
	Contexts []*Context
	byName   map[string]*Context
}

// Context returns the context called name or nil.
func (d *Dialplan) Context(name string) *Context {
	if d == nil {
		return nil
	}
	return d.byName[name]
}

// parseDialplan builds the dialplan from a parsed extensions.conf.
// [general] and [globals] are not contexts; templates are skipped like
// ast_category_browse does.
func parseDialplan(f *File) *Dialplan {
	d := &Dialplan{byName: map[string]*Context{}}
	if f == nil {
		return d
	}
	for _, s := range f.Concrete() {
		if strings.EqualFold(s.Name, "general") || strings.EqualFold(s.Name, "globals") {
			continue
		}
		c := d.byName[s.Name]
		if c == nil {
			c = &Context{Name: s.Name, Pos: s.Pos}
			d.byName[s.Name] = c
			d.Contexts = append(d.Contexts, c)
		}
		var last *Exten
		for _, v := range s.Vars {
			switch strings.ToLower(v.Name) {
			case "exten":
				ext, rest, _ := strings.Cut(v.Value, ",")
				ext = strings.TrimSpace(ext)
				if i := strings.IndexByte(ext, '/'); i > 0 {
					ext = ext[:i] // caller-id match: exten => 123/456,...
				}
				prio, appl, _ := strings.Cut(rest, ",")
				e := c.exten(ext)
				if e == nil {
					e = &Exten{Pattern: ext, Pos: v.Pos}
					c.Extens = append(c.Extens, e)
				}
				prio, _, _ = strings.Cut(strings.TrimSpace(prio), "(")
				if prio == "1" {
					e.Dialable = true
				}
				e.Priorities = append(e.Priorities, splitApp(appl, v.Pos))
				last = e
			case "same":
				if last == nil {
					continue
				}
				_, appl, _ := strings.Cut(v.Value, ",")
				last.Priorities = append(last.Priorities, splitApp(appl, v.Pos))
			case "include":
				name, _, _ := strings.Cut(v.Value, ",")
				c.Includes = append(c.Includes, ContextInclude{Name: strings.TrimSpace(name), Pos: v.Pos})
			}
		}
	}
	return d
}

func (c *Context) exten(pattern string) *Exten {
	for _, e := range c.Extens {
		if e.Pattern == pattern {
			return e
		}
	}
	return nil
}

// splitApp splits "App(data)" (or the old "App,data").
func splitApp(appl string, pos Pos) Priority {
	appl = strings.TrimSpace(appl)
	if i := strings.IndexByte(appl, '('); i >= 0 {
		data := appl[i+1:]
		data = strings.TrimSuffix(data, ")")
		return Priority{App: strings.TrimSpace(appl[:i]), Data: data, Pos: pos}
	}
	app, data, _ := strings.Cut(appl, ",")
	return Priority{App: strings.TrimSpace(app), Data: data, Pos: pos}
}

// Reachable returns the contexts reachable from name through include
// chains, name first, each once (cycles are safe).
func (d *Dialplan) Reachable(name string) []*Context {
	var out []*Context
	seen := map[string]bool{}
	var walk func(string)
	walk = func(n string) {
		if seen[n] || len(seen) > 10000 {
			return
		}
		seen[n] = true
		c := d.Context(n)
		if c == nil {
			return
		}
		out = append(out, c)
		for _, inc := range c.Includes {
			walk(inc.Name)
		}
	}
	walk(name)
	return out
}

// patternRegexp turns an Asterisk extension pattern ("_NXX.") into a regular
// expression: X=[0-9], Z=[1-9], N=[2-9], [..] a class, '.' one or more
// characters, '!' zero or more; '-' is ignored as in Asterisk.
func patternRegexp(p string) *regexp.Regexp {
	if !strings.HasPrefix(p, "_") {
		re, _ := regexp.Compile("^" + regexp.QuoteMeta(strings.ReplaceAll(p, "-", "")) + "$")
		return re
	}
	var b strings.Builder
	b.WriteString("^")
	r := p[1:]
	for i := 0; i < len(r); i++ {
		switch ch := r[i]; ch {
		case 'X', 'x':
			b.WriteString("[0-9]")
		case 'Z', 'z':
			b.WriteString("[1-9]")
		case 'N', 'n':
			b.WriteString("[2-9]")
		case '.':
			b.WriteString(".+")
		case '!':
			b.WriteString(".*")
		case '-':
		case '[':
			j := strings.IndexByte(r[i:], ']')
			if j < 0 {
				b.WriteString(regexp.QuoteMeta(r[i:]))
				i = len(r)
				continue
			}
			class := r[i+1 : i+j]
			if class == "" {
				b.WriteString("[^\\s\\S]") // matches nothing
			} else {
				var cb strings.Builder
				for k := 0; k < len(class); k++ {
					if class[k] == '-' {
						cb.WriteByte('-')
					} else {
						cb.WriteString(regexp.QuoteMeta(string(class[k])))
					}
				}
				b.WriteString("[" + cb.String() + "]")
			}
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(ch)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil
	}
	return re
}

// intlProbes are international dial strings in the forms used around the
// world: 00 (ITU), 011 (NANP), 9+011 and 9+00 (PBX outside line), + (E.164),
// 0011 (Australia), 810 (Russia).
var intlProbes = []string{
	"00441632960000", "011441632960000", "9011441632960000", "900441632960000",
	"+441632960000", "0011441632960000", "810441632960000",
}

// matchesIntl reports whether pattern can match an international number.
func matchesIntl(pattern string) bool {
	if !strings.HasPrefix(pattern, "_") {
		return false // a literal number is one destination, not an open route
	}
	re := patternRegexp(pattern)
	if re == nil {
		return false
	}
	for _, p := range intlProbes {
		if re.MatchString(p) {
			return true
		}
	}
	return false
}

// isCatchAll reports the catch-all patterns: _. _! _X. _X! and friends that
// match any digit string of any length.
func isCatchAll(pattern string) bool {
	switch strings.ToUpper(pattern) {
	case "_.", "_!", "_X.", "_X!", "_[0-9].", "_[0-9]!":
		return true
	}
	return false
}

// harmlessApps cannot place or transfer a call.
var harmlessApps = map[string]bool{
	"hangup": true, "congestion": true, "busy": true, "playback": true, "noop": true,
	"answer": true, "wait": true, "verbose": true, "log": true, "progress": true,
	"ringing": true, "playtones": true, "zapateller": true, "echo": true, "set": true,
	"background": true, "saydigits": true, "sayalpha": true, "saynumber": true,
	"waitexten": true, "return": true, "": true,
}

// routesOut reports whether an extension does anything that can place or
// pass on a call (it is not only Hangup/Playback/NoOp...).
func (e *Exten) routesOut() bool {
	if !e.Dialable {
		return false
	}
	for _, p := range e.Priorities {
		if !harmlessApps[strings.ToLower(p.App)] {
			return true
		}
	}
	return false
}
