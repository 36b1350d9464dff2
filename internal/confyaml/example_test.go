package confyaml_test

import (
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/confyaml"
)

// A new section (here a `dashboard:`) is written once: known keys, scalars
// with their ranges, every error with its line, key path and suggestion.
// The section's owner parses its raw node with a Walker whose Prefix is the
// section's key; the preflight collects its errors with every other
// section's.
func Example() {
	src := `dashboard:
  listen: 127.0.0.1
  refesh: 5s
  session: 18446744074
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		panic(err)
	}
	section := confyaml.Root(&doc).Content[1] // the value of dashboard:

	type Dashboard struct {
		Listen  string
		Refresh time.Duration
		Session time.Duration
		Enabled bool
	}
	d := Dashboard{Refresh: 2 * time.Second, Session: 12 * time.Hour, Enabled: true}
	w := &confyaml.Walker{Prefix: "dashboard"}
	w.Mapping(section, "", confyaml.Fields{
		"listen":  func(k string, v *yaml.Node) { d.Listen = w.HostPort(k, v, false, `try "127.0.0.1:9470"`) },
		"refresh": func(k string, v *yaml.Node) { d.Refresh, _ = w.Duration(k, v, time.Second, time.Hour, "try 5s") },
		"session": func(k string, v *yaml.Node) { d.Session, _ = w.Duration(k, v, time.Minute, 0, "try 12h") },
		"enabled": func(k string, v *yaml.Node) { d.Enabled = w.Bool(k, v) },
	})
	fmt.Println(w.Err())
	// Output:
	// config: line 2: dashboard.listen: "127.0.0.1" is not host:port (try "127.0.0.1:9470")
	// config: line 3: dashboard.refesh: unknown key (did you mean "refresh"?)
	// config: line 4: dashboard.session: "18446744074" is out of range (at most 521w3d)
}
