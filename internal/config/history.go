package config

import (
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultRetention is how long ban history, ban evidence and incidents
// are kept when history.retention is not set. It is longer than the 90
// days of ban history the increments look back on.
const DefaultRetention = 180 * 24 * time.Hour

// History is the `history:` section:
//
//	history:
//	  retention: 180d   # ban history, evidence and incidents; "forever" keeps all
type History struct {
	Retention time.Duration // 0 = forever
}

// ParseHistory reads the raw `history:` section (Config.History; nil =
// defaults).
func ParseHistory(n *yaml.Node) (History, error) {
	h := History{Retention: DefaultRetention}
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return h, nil
	}
	if n.Kind != yaml.MappingNode {
		return h, Error{Line: n.Line, Key: "history", Msg: "must be a mapping (history: {retention: 180d})"}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "retention":
			if strings.EqualFold(strings.TrimSpace(v.Value), "forever") {
				h.Retention = 0
				continue
			}
			d, err := ParseDuration(v.Value)
			if err != nil {
				return h, Error{Line: v.Line, Key: "history.retention", Msg: fmt.Sprintf("%q is not a duration (try 180d, 26w, or forever)", v.Value)}
			}
			if d < 24*time.Hour {
				return h, Error{Line: v.Line, Key: "history.retention", Msg: fmt.Sprintf("%q is shorter than a day (180d is usual; forever keeps all)", v.Value)}
			}
			h.Retention = d
		default:
			return h, Error{Line: k.Line, Key: "history." + k.Value, Msg: "unknown key (history has retention)"}
		}
	}
	return h, nil
}
