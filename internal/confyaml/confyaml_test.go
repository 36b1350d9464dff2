package confyaml

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   time.Duration
		bad    bool
		range_ bool
	}{
		{"1h", time.Hour, false, false},
		{"1w2d3h", 9*24*time.Hour + 3*time.Hour, false, false},
		{"3600", time.Hour, false, false},
		{"1.5h", 90 * time.Minute, false, false},
		{"250ms", 250 * time.Millisecond, false, false},
		{"521w", 521 * 7 * 24 * time.Hour, false, false},
		{"3650d", MaxDuration, false, false},
		{"1hr", 0, true, false},
		{"", 0, true, false},
		{"-5m", 0, true, false},
		{"w", 0, true, false},
		{"1.5d", 0, true, false},
		// issue 16: 18446744074 s wrapped to 288 ms.
		{"18446744074", 0, true, true},
		{"18446744073709551616", 0, true, true},
		{"315360001", 0, true, true}, // ten years and a second
		{"3651d", 0, true, true},
		{"600w", 0, true, true},
		{"9999999999999999999h", 0, true, true},
		{"5124095h", 0, true, true},
		{"3000d3000d", 0, true, true},
	} {
		got, err := ParseDuration(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v bad=%v", tc.in, got, err, tc.want, tc.bad)
		}
		if tc.range_ && !errors.Is(err, ErrDurationRange) {
			t.Errorf("ParseDuration(%q) error %v, want ErrDurationRange", tc.in, err)
		}
	}
	if FormatDuration(Permanent) != "permanent" || FormatDuration(90*time.Second) != "1m30s" {
		t.Errorf("FormatDuration: %q %q", FormatDuration(Permanent), FormatDuration(90*time.Second))
	}
}

func TestWalkerCollectsEverything(t *testing.T) {
	src := `a: 1
b: {x: 5, y: nope}
c: 99999999999999999999s
bb: 3
d: [1, [2]]
e: 127.0.0.1
f: 192.0.2.300
a: 2
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	w := &Walker{Prefix: "sec"}
	var a, x int
	w.Mapping(Root(&doc), "", Fields{
		"a": func(k string, v *yaml.Node) { a = w.Int(k, v, 0, 10) },
		"b": func(k string, v *yaml.Node) {
			w.Mapping(v, k, Fields{
				"x": func(k string, v *yaml.Node) { x = w.Int(k, v, 0, 3) },
				"y": func(k string, v *yaml.Node) { w.Bool(k, v) },
			})
		},
		"c": func(k string, v *yaml.Node) { w.Duration(k, v, 0, 0, "try 1h") },
		"d": func(k string, v *yaml.Node) { w.Strings(k, v) },
		"e": func(k string, v *yaml.Node) { w.HostPort(k, v, false, `try "127.0.0.1:5038"`) },
		"f": func(k string, v *yaml.Node) { w.Prefixes(k, v) },
	})
	err := w.Err()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		`config: line 2: sec.b.x: 5 is out of range (0 to 3)`,
		`config: line 2: sec.b.y: "nope" is not true or false`,
		`config: line 3: sec.c: "99999999999999999999s" is out of range (at most 521w3d)`,
		`config: line 4: sec.bb: unknown key (did you mean "b"?)`,
		`config: line 5: sec.d: expected a single value, found a list`,
		`config: line 6: sec.e: "127.0.0.1" is not host:port (try "127.0.0.1:5038")`,
		`config: line 7: sec.f: "192.0.2.300" is not an address or prefix`,
		`config: line 8: sec.a: appears twice (keep one)`,
	}
	if len(es) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(es), len(want), err)
	}
	for i, wnt := range want {
		if !strings.HasPrefix(es[i].Error(), wnt) {
			t.Errorf("error %d = %q, want prefix %q", i, es[i].Error(), wnt)
		}
	}
	if a != 1 || x != 0 || w.Lines["b.x"] != 2 || es[3].Suggest != "b" {
		t.Errorf("a=%d x=%d lines=%v suggest=%q", a, x, w.Lines, es[3].Suggest)
	}
}
