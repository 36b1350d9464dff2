package policy

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// LiveRule is a rule of the live policy table with its counters.
type LiveRule struct {
	Chain   string `json:"chain"`
	Handle  int    `json:"handle"`
	Name    string `json:"name"`
	Comment string `json:"comment"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	Verdict string `json:"verdict"`
}

// LiveSet is a set of the live policy table with its element count.
type LiveSet struct {
	Name     string `json:"name"`
	Elements int    `json:"elements"`
	// Members lists the addresses in the set (guard sets are small).
	Members []string `json:"members,omitempty"`
}

// Live is what `nft -j list table inet pbxguard_policy` shows.
type Live struct {
	Rules []LiveRule `json:"rules"`
	Sets  []LiveSet  `json:"sets"`
}

// Rule returns the live rule by name (the comment's first word).
func (l *Live) Rule(name string) (LiveRule, bool) {
	for _, r := range l.Rules {
		if r.Name == name {
			return r, true
		}
	}
	return LiveRule{}, false
}

// Set returns the live set by name.
func (l *Live) Set(name string) (LiveSet, bool) {
	for _, s := range l.Sets {
		if s.Name == name {
			return s, true
		}
	}
	return LiveSet{}, false
}

// ParseLive reads nft's JSON listing of the policy table.
func ParseLive(data []byte) (*Live, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("reading nft -j output: %w", err)
	}
	live := &Live{}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["rule"]; ok {
			var r struct {
				Table   string            `json:"table"`
				Chain   string            `json:"chain"`
				Handle  int               `json:"handle"`
				Comment string            `json:"comment"`
				Expr    []json.RawMessage `json:"expr"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, fmt.Errorf("reading nft rule: %w", err)
			}
			if r.Table != TableName {
				continue
			}
			lr := LiveRule{Chain: r.Chain, Handle: r.Handle, Comment: r.Comment}
			lr.Name, _, _ = strings.Cut(r.Comment, ":")
			for _, e := range r.Expr {
				var ex map[string]json.RawMessage
				if json.Unmarshal(e, &ex) != nil {
					continue
				}
				if c, ok := ex["counter"]; ok {
					var cnt struct{ Packets, Bytes uint64 }
					if json.Unmarshal(c, &cnt) == nil {
						lr.Packets, lr.Bytes = cnt.Packets, cnt.Bytes
					}
				}
				for _, v := range []string{"accept", "drop", "reject", "return"} {
					if _, ok := ex[v]; ok {
						lr.Verdict = v
					}
				}
				if j, ok := ex["jump"]; ok {
					var t struct{ Target string }
					if err := json.Unmarshal(j, &t); err != nil {
						lr.Verdict = "jump (unreadable)"
					} else {
						lr.Verdict = "jump " + t.Target
					}
				}
			}
			live.Rules = append(live.Rules, lr)
		}
		if raw, ok := obj["set"]; ok {
			var s struct {
				Table string            `json:"table"`
				Name  string            `json:"name"`
				Elem  []json.RawMessage `json:"elem"`
			}
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("reading nft set: %w", err)
			}
			if s.Table != TableName {
				continue
			}
			ls := LiveSet{Name: s.Name, Elements: len(s.Elem)}
			for _, e := range s.Elem {
				ls.Members = append(ls.Members, elemString(e))
			}
			sort.Strings(ls.Members)
			live.Sets = append(live.Sets, ls)
		}
	}
	return live, nil
}

// elemString extracts the address of a set element: a plain string,
// {"prefix": {...}} or {"elem": {"val": ..., "timeout": ...}}.
func elemString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return string(raw)
	}
	if e, ok := m["elem"]; ok {
		var inner struct {
			Val json.RawMessage `json:"val"`
		}
		if json.Unmarshal(e, &inner) == nil {
			return elemString(inner.Val)
		}
	}
	if p, ok := m["prefix"]; ok {
		var pf struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		}
		if json.Unmarshal(p, &pf) == nil {
			return fmt.Sprintf("%s/%d", pf.Addr, pf.Len)
		}
	}
	return string(raw)
}

// Diff returns a unified-style line diff from old to new ("" when equal).
// Lines are compared after trimming trailing spaces.
func Diff(oldName, newName, oldText, newText string) string {
	a := splitLines(oldText)
	b := splitLines(newText)
	if strings.Join(a, "\n") == strings.Join(b, "\n") {
		return ""
	}
	n, m := len(a), len(b)
	// lcs[i][j] = LCS length of a[i:], b[j:]
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else if lcs[i+1][j] >= lcs[i][j+1] {
				lcs[i][j] = lcs[i+1][j]
			} else {
				lcs[i][j] = lcs[i][j+1]
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", oldName, newName)
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			sb.WriteString("+" + b[j] + "\n")
			j++
		default:
			sb.WriteString("-" + a[i] + "\n")
			i++
		}
	}
	return sb.String()
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return lines
}

// StripDynamicElements removes the elements of dynamic sets (guard sets,
// rate meters) from an nft listing: they are state, not policy, and would
// make every diff noisy. Static sets (trusted) keep their elements.
func StripDynamicElements(listing string) string {
	lines := strings.Split(listing, "\n")
	var out []string
	inSet, dynamic, skipping := false, false, false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case skipping:
			if strings.HasSuffix(t, "}") {
				skipping = false
			}
			continue
		case strings.HasPrefix(t, "set ") && strings.HasSuffix(t, "{"):
			inSet, dynamic = true, false
		case inSet && strings.HasPrefix(t, "flags ") && (strings.Contains(t, "dynamic") || strings.Contains(t, "timeout")):
			dynamic = true
		case inSet && t == "}":
			inSet = false
		case inSet && dynamic && strings.HasPrefix(t, "elements = {"):
			if !strings.HasSuffix(t, "}") {
				skipping = true
			}
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
