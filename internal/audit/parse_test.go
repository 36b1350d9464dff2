package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// dump renders a parsed file compactly: "[name!](a,b)@file:line k=v@line ..."
func dump(f *File) string {
	var b strings.Builder
	for _, s := range f.Sections {
		fmt.Fprintf(&b, "[%s", s.Name)
		if s.Template {
			b.WriteString("!")
		}
		b.WriteString("]")
		if len(s.Inherits) > 0 {
			fmt.Fprintf(&b, "(%s)", strings.Join(s.Inherits, ","))
		}
		fmt.Fprintf(&b, "@%s", s.Pos)
		for _, v := range s.Vars {
			op := "="
			if v.Object {
				op = "=>"
			}
			fmt.Fprintf(&b, " %s%s%s@%s", v.Name, op, v.Value, v.Pos)
			if v.Inherited != "" {
				fmt.Fprintf(&b, "<%s", v.Inherited)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func diags(f *File) string {
	var out []string
	for _, d := range f.Diags {
		fatal := ""
		if d.Fatal {
			fatal = "!"
		}
		out = append(out, fmt.Sprintf("%s%s %s", fatal, d.Kind, d.Pos))
	}
	return strings.Join(out, "; ")
}

func TestParseSyntax(t *testing.T) {
	tests := []struct {
		name, in, want, diags string
	}{
		{"section and values", "[general]\nallowguest = no\ncontext=default\n",
			"[general]@x.conf:1 allowguest=no@x.conf:2 context=default@x.conf:3\n", ""},
		{"object =>", "[ctx]\nexten => 100,1,Dial(PJSIP/100)\n",
			"[ctx]@x.conf:1 exten=>100,1,Dial(PJSIP/100)@x.conf:2\n", ""},
		{"comment and escaped semicolon", "[a]\nx = 1 ; comment\ny = a\\;b ; c\n; whole line\n",
			"[a]@x.conf:1 x=1@x.conf:2 y=a;b@x.conf:3\n", ""},
		{"block comment over lines", "[a]\nx=1\n;-- y=2\nz=3 --;\nw=4\n",
			"[a]@x.conf:1 x=1@x.conf:2 w=4@x.conf:5\n", ""},
		{"block comment inside a line", "[a]\nx=1;-- hidden --;2\n",
			"[a]@x.conf:1 x=12@x.conf:2\n", ""},
		{"block comment then text on closing line", "[a]\n;--\nhidden=1\n--; shown=2\n",
			"[a]@x.conf:1 shown=2@x.conf:4\n", ""},
		{"nested block comments", "[a]\n;-- outer ;-- inner --; still=hidden\n--;\nx=1\n",
			"[a]@x.conf:1 x=1@x.conf:4\n", ""},
		{";--- is a plain comment", "[a]\nx=1 ;--- not a block\ny=2\n",
			"[a]@x.conf:1 x=1@x.conf:2 y=2@x.conf:3\n", ""},
		{"unterminated block comment", "[a]\nx=1\n;-- never closed\ny=2\n",
			"[a]@x.conf:1 x=1@x.conf:2\n", "syntax x.conf:3"},
		{"template and inheritance in order", "[t1](!)\na=1\nb=1\n[t2](!)\nb=2\n[e](t1,t2)\nb=3\n",
			"[t1!]@x.conf:1 a=1@x.conf:2 b=1@x.conf:3\n[t2!]@x.conf:4 b=2@x.conf:5\n[e](t1,t2)@x.conf:6 a=1@x.conf:2<t1 b=1@x.conf:3<t1 b=2@x.conf:5<t2 b=3@x.conf:7\n", ""},
		{"template inheriting a template", "[base](!)\na=1\n[t](!,base)\nb=2\n[e](t)\n",
			"[base!]@x.conf:1 a=1@x.conf:2\n[t!](base)@x.conf:3 a=1@x.conf:2<base b=2@x.conf:4\n[e](t)@x.conf:5 a=1@x.conf:2<base b=2@x.conf:4<t\n", ""},
		{"inheritance copies the base as it is at that point", "[b]\na=1\n[e](b)\n[b](+)\nb=2\n",
			"[b]@x.conf:1 a=1@x.conf:2 b=2@x.conf:5\n[e](b)@x.conf:3 a=1@x.conf:2<b\n", ""},
		{"(+) cannot add to a template", "[t](!)\na=1\n[t](+)\nb=2\n",
			"[t!]@x.conf:1 a=1@x.conf:2\n", "!syntax x.conf:3"},
		{"(+) adds to an existing section", "[a]\nx=1\n[b]\ny=1\n[A](+)\nz=2\n",
			"[a]@x.conf:1 x=1@x.conf:2 z=2@x.conf:6\n[b]@x.conf:3 y=1@x.conf:4\n", ""},
		{"(+) without the section is fatal", "[a](+)\nx=1\n", "", "!syntax x.conf:1"},
		{"inherit from an unknown template is fatal", "[e](nope)\nx=1\n", "", "!syntax x.conf:1"},
		{"space after comma is part of the name (Asterisk refuses it)", "[t](!)\n[e](t, t)\n",
			"[t!]@x.conf:1\n", "!syntax x.conf:2"},
		{"no closing bracket", "[a\nx=1\n", "", "!syntax x.conf:1"},
		{"no closing parenthesis", "[a](!\nx=1\n", "", "!syntax x.conf:1"},
		{"option outside a section", "x=1\n[a]\n", "[a]@x.conf:2\n", "!syntax x.conf:1"},
		{"no equal sign is ignored", "[a]\njunk\nx=1\n", "[a]@x.conf:1 x=1@x.conf:3\n", "syntax x.conf:2"},
		{"empty name is ignored", "[a]\n=1\n", "[a]@x.conf:1\n", "syntax x.conf:2"},
		{"+= appends to the last value", "[a]\nallow=ulaw\nallow+=,alaw\n",
			"[a]@x.conf:1 allow=ulaw,alaw@x.conf:3\n", ""},
		{"+= without a value sets it", "[a]\nallow+=ulaw\n", "[a]@x.conf:1 allow=ulaw@x.conf:2\n", ""},
		{"+= on an inherited value", "[t](!)\nallow=ulaw\n[e](t)\nallow += ,g722\n",
			"[t!]@x.conf:1 allow=ulaw@x.conf:2\n[e](t)@x.conf:3 allow=ulaw ,g722@x.conf:4\n", ""},
		{"leading backslash escapes the first character", "[a]\n\\[x]=1\n", "[a]@x.conf:1 [x]=1@x.conf:2\n", ""},
		{"CRLF and BOM", "\xEF\xBB\xBF[a]\r\nx = 1\r\n", "[a]@x.conf:1 x=1@x.conf:2\n", ""},
		{"unknown directive is ignored", "[a]\n#foo bar\nx=1\n", "[a]@x.conf:1 x=1@x.conf:3\n", "syntax x.conf:2"},
		{"exec is reported, never run", "[a]\n#exec /bin/echo x=1\n", "[a]@x.conf:1\n", "exec x.conf:2"},
		{"value keeps inner spaces and '='", "[a]\nx = a = b  c \n", "[a]@x.conf:1 x=a = b  c@x.conf:2\n", ""},
		{"section names keep case, lookups ignore it", "[General]\nx=1\n", "[General]@x.conf:1 x=1@x.conf:2\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := ParseBytes("x.conf", []byte(tt.in))
			if got := dump(f); got != tt.want {
				t.Errorf("sections:\n got %q\nwant %q", got, tt.want)
			}
			if got := diags(f); got != tt.diags {
				t.Errorf("diags: got %q want %q", got, tt.diags)
			}
		})
	}
}

func TestSectionLookup(t *testing.T) {
	f := ParseBytes("x.conf", []byte("[t](!)\ntype=endpoint\n[General]\nx=1\nx=2\n"))
	if f.Section("t") != nil {
		t.Error("Section must skip templates")
	}
	g := f.Section("general")
	if g == nil || g.Value("X", "") != "2" || len(g.All("x")) != 2 {
		t.Fatalf("general = %+v", g)
	}
	if g.Value("missing", "def") != "def" {
		t.Error("default not returned")
	}
}

func TestParseIncludes(t *testing.T) {
	fsys := fstest.MapFS{
		"main.conf": {Data: []byte(strings.Join([]string{
			"[general]",
			"a=1",
			"#include extra.conf", // continues in [general]
			"b=2",                 // still [general] in the parent, although extra.conf opened [peer]
			`#include "conf.d/*.conf"`,
			"#include <brace{1,2}.conf>",
			"#tryinclude missing.conf",
			"#include missing.conf",
			"#include cycle1.conf",
		}, "\n"))},
		"extra.conf":      {Data: []byte("inherited=yes\n[peer]\nsecret=x\n")},
		"conf.d/b.conf":   {Data: []byte("[b]\nk=b\n")},
		"conf.d/a.conf":   {Data: []byte("[a]\nk=a\n")},
		"conf.d/skip.txt": {Data: []byte("[nope]\n")},
		"brace1.conf":     {Data: []byte("[brace1]\n")},
		"brace2.conf":     {Data: []byte("[brace2]\n")},
		"cycle1.conf":     {Data: []byte("[c1]\n#include cycle2.conf\n")},
		"cycle2.conf":     {Data: []byte("[c2]\n#include cycle1.conf\n")},
	}
	f := Parse(fsys, "main.conf")
	want := "[general]@main.conf:1 a=1@main.conf:2 inherited=yes@extra.conf:1 b=2@main.conf:4\n" +
		"[peer]@extra.conf:2 secret=x@extra.conf:3\n" +
		"[a]@conf.d/a.conf:1 k=a@conf.d/a.conf:2\n" +
		"[b]@conf.d/b.conf:1 k=b@conf.d/b.conf:2\n" +
		"[brace1]@brace1.conf:1\n[brace2]@brace2.conf:1\n" +
		"[c1]@cycle1.conf:1\n[c2]@cycle2.conf:1\n"
	if got := dump(f); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got, want := diags(f), "!include main.conf:8; !include cycle2.conf:2"; got != want {
		t.Errorf("diags: got %q want %q", got, want)
	}
	if !strings.Contains(f.Diags[1].Msg, "main.conf -> cycle1.conf -> cycle2.conf -> cycle1.conf") {
		t.Errorf("cycle message: %s", f.Diags[1].Msg)
	}
	if len(f.Includes) != 8 || len(f.Includes[1].Files) != 2 || f.Includes[1].Target != "conf.d/*.conf" {
		t.Errorf("includes: %+v", f.Includes)
	}
}

func TestParseIncludeDepth(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := 0; i < 15; i++ {
		fsys[fmt.Sprintf("f%d.conf", i)] = &fstest.MapFile{Data: []byte(fmt.Sprintf("[s%d]\n#include f%d.conf\n", i, i+1))}
	}
	f := Parse(fsys, "f0.conf")
	if len(f.Sections) != 11 {
		t.Errorf("sections = %d, want 11 (Asterisk's MAX_INCLUDE_LEVEL 10)", len(f.Sections))
	}
	if len(f.Diags) != 1 || !strings.Contains(f.Diags[0].Msg, "more than 10 nested includes") {
		t.Errorf("diags: %v", f.Diags)
	}
}

func TestParseMissingTopLevel(t *testing.T) {
	f := Parse(fstest.MapFS{}, "sip.conf")
	if len(f.Diags) != 1 || !f.Diags[0].Fatal {
		t.Fatalf("diags %v", f.Diags)
	}
}

func TestParseAbsoluteInclude(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "abs.conf"), []byte("[abs]\nx=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{"main.conf": {Data: []byte("#include " + filepath.Join(dir, "abs.conf") + "\n")}}
	f := parseWith(fsys, os.DirFS("/"), "", "main.conf")
	if len(f.Sections) != 1 || f.Sections[0].Name != "abs" || len(f.Diags) != 0 {
		t.Fatalf("sections %s diags %v", dump(f), f.Diags)
	}
	if f := Parse(fsys, "main.conf"); len(f.Diags) != 1 {
		t.Fatalf("without absFS the include must be missing: %v", f.Diags)
	}
}

// TestParseAsteriskSamples reads every stock sample configuration of
// Asterisk (configs/samples in its source tree). Set
// PBXGUARD_ASTERISK_SAMPLES to that directory; the test is skipped otherwise.
func TestParseAsteriskSamples(t *testing.T) {
	dir := os.Getenv("PBXGUARD_ASTERISK_SAMPLES")
	if dir == "" {
		t.Skip("PBXGUARD_ASTERISK_SAMPLES not set (a checkout's configs/samples directory)")
	}
	// Not Asterisk config syntax: a bash fragment and dbsep.cgi's own file.
	notConfig := map[string]bool{"ast_debug_tools.conf.sample": true, "dbsep.conf.sample": true}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, sections, vars := 0, 0, 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".conf.sample") || notConfig[e.Name()] {
			continue
		}
		n++
		f := Parse(os.DirFS(dir), e.Name())
		for _, d := range f.Diags {
			t.Errorf("%s", d)
		}
		sections += len(f.Sections)
		for _, s := range f.Sections {
			vars += len(s.Vars)
		}
	}
	if n < 50 {
		t.Fatalf("only %d sample files in %s", n, dir)
	}
	t.Logf("%d sample files, %d sections, %d values, no diagnostics", n, sections, vars)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"[a]\nx=1\n", "[t](!)\n[e](t)\n[e](+)\ny+=2\n", ";-- a\n--;\n[a];--x--;\n", "[a]\nx=\\;;--\n--;--;\n",
		"#include x.conf\n#exec /bin/true\n#tryinclude {a,b}*\n", "[a](+x=y&TEMPLATES=include)\n", "\\", "--;\n;--;--\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{"x.conf": {Data: data}, "y.conf": {Data: data}}
		p := Parse(fsys, "x.conf")
		for _, s := range p.Sections {
			for _, v := range s.Vars {
				if v.Pos.Line < 1 {
					t.Fatalf("value without a line: %+v", v)
				}
			}
		}
		_ = Check(&Config{Files: map[string]*File{"sip.conf": p, "pjsip.conf": p, "extensions.conf": p, "manager.conf": p, "http.conf": p, "logger.conf": p}}, Options{})
	})
}

func TestRunIncludeOutsideDir(t *testing.T) {
	base := t.TempDir()
	etc := filepath.Join(base, "etc")
	if err := os.MkdirAll(filepath.Join(base, "common"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		filepath.Join(etc, "sip.conf"):              "[general]\n#include ../common/guest.conf\n",
		filepath.Join(base, "common", "guest.conf"): "allowguest=yes\n",
		filepath.Join(etc, "logger.conf"):           "[logfiles]\nsecurity => security\n",
	}
	for n, c := range files {
		if err := os.WriteFile(n, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Run(etc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Findings) != 1 || r.Findings[0].ID != "sip.allowguest" || !strings.HasSuffix(r.Findings[0].File, "/common/guest.conf") || r.Findings[0].Line != 1 {
		t.Fatalf("findings:%s", show(r.Findings))
	}
}

func TestParseLongLine(t *testing.T) {
	long := "x=" + strings.Repeat("a", maxLineBytes-2) // 8191 bytes: skipped
	ok := "y=" + strings.Repeat("b", maxLineBytes-3)   // 8190 bytes: read
	f := ParseBytes("x.conf", []byte("[a]\n"+long+"\n"+ok+"\n"))
	if len(f.Sections[0].Vars) != 1 || f.Sections[0].Vars[0].Name != "y" || len(f.Diags) != 1 {
		t.Fatalf("vars %d diags %v", len(f.Sections[0].Vars), f.Diags)
	}
}
