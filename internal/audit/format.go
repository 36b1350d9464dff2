package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pbxguard/pbxguard/internal/version"
)

// ruleText describes every check id (SARIF rules, documentation);
// RuleText reads it.
var ruleText = map[string]string{
	"config.syntax":            "A configuration line Asterisk refuses or ignores",
	"config.include":           "A missing #include or an include cycle",
	"config.exec":              "#exec runs a program when the configuration is loaded",
	"sip.allowguest":           "chan_sip accepts calls from unauthenticated guests",
	"sip.alwaysauthreject":     "chan_sip reveals which extensions exist",
	"sip.insecure":             "chan_sip peer accepts INVITEs without authentication",
	"sip.no-secret":            "chan_sip peer with host=dynamic and no secret",
	"sip.autocreatepeer":       "chan_sip creates a peer for any device that registers",
	"iax.no-secret":            "IAX2 user accepts calls without a password",
	"pjsip.anonymous-endpoint": "A pjsip endpoint accepts requests without authentication",
	"pjsip.auth-missing":       "A pjsip endpoint's auth section is missing or has no password",
	"secret.weak":              "A SIP/IAX2/AMI/ARI secret is guessable",
	"acl.missing":              "An endpoint or peer has no ACL where the others have one",
	"acl.open":                 "An ACL permits every address",
	"ami.exposed":              "The Asterisk Manager Interface accepts a user from anywhere or with a weak secret",
	"ami.too-powerful":         "A remote AMI user may run commands or originate calls",
	"http.exposed":             "Asterisk's HTTP server (ARI, AMI over HTTP) listens on a public address",
	"dialplan.intl-open":       "Untrusted or unauthenticated endpoints can dial international numbers",
	"dialplan.wildcard":        "A catch-all extension pattern passes on any number",
	"dialplan.no-limit":        "An outbound route has no limit on simultaneous calls",
	"logging.security-off":     "Asterisk's security events are not logged",
}

// WriteJSON writes {"findings":[...]} (an empty list, never null).
func (r *Report) WriteJSON(w io.Writer) error {
	out := struct {
		Findings []Finding `json:"findings"`
	}{Findings: r.Findings}
	if out.Findings == nil {
		out.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteText writes the findings grouped by severity, most severe first, for
// a person reading a terminal.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	dir := r.Dir
	if dir == "" {
		dir = "(configuration)"
	}
	counts := r.CountBySeverity()
	var parts []string
	for _, s := range Severities() {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	if len(r.Findings) == 0 {
		fmt.Fprintf(&b, "pbxguard audit of %s: no findings (read: %s)\n", dir, strings.Join(r.Files, ", "))
		_, err := io.WriteString(w, b.String())
		return err
	}
	fmt.Fprintf(&b, "pbxguard audit of %s: %d findings (%s)\n", dir, len(r.Findings), strings.Join(parts, ", "))
	fmt.Fprintf(&b, "read: %s\n", strings.Join(r.Files, ", "))
	for _, s := range Severities() {
		if counts[s] == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s (%d)\n", strings.ToUpper(s.String()), counts[s])
		for _, f := range r.Findings {
			if f.Severity != s {
				continue
			}
			loc := f.File
			if f.Line > 0 {
				loc = fmt.Sprintf("%s:%d", f.File, f.Line)
			}
			fmt.Fprintf(&b, "  %-24s %s\n", f.ID, loc)
			fmt.Fprintf(&b, "      %s\n", f.Message)
			fmt.Fprintf(&b, "      fix: %s\n", f.Fix)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// sarifLevel maps a severity to a SARIF result level.
func sarifLevel(s Severity) string {
	switch {
	case s >= High:
		return "error"
	case s == Medium:
		return "warning"
	default:
		return "note"
	}
}

// WriteSARIF writes a minimal valid SARIF 2.1.0 log. File locations are
// relative to the base id ASTERISK_DIR, which points at the audited
// directory when it is known.
func (r *Report) WriteSARIF(w io.Writer) error {
	type msg struct {
		Text string `json:"text"`
	}
	type rule struct {
		ID               string `json:"id"`
		ShortDescription msg    `json:"shortDescription"`
	}
	type region struct {
		StartLine int `json:"startLine"`
	}
	type artifact struct {
		URI       string `json:"uri"`
		URIBaseID string `json:"uriBaseId,omitempty"`
	}
	type physical struct {
		ArtifactLocation artifact `json:"artifactLocation"`
		Region           *region  `json:"region,omitempty"`
	}
	type location struct {
		PhysicalLocation physical `json:"physicalLocation"`
	}
	type result struct {
		RuleID     string            `json:"ruleId"`
		RuleIndex  int               `json:"ruleIndex"`
		Level      string            `json:"level"`
		Message    msg               `json:"message"`
		Locations  []location        `json:"locations"`
		Properties map[string]string `json:"properties"`
	}
	ids := make([]string, 0, len(ruleText))
	for id := range ruleText {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	index := map[string]int{}
	rules := make([]rule, 0, len(ids))
	for i, id := range ids {
		index[id] = i
		rules = append(rules, rule{ID: id, ShortDescription: msg{ruleText[id]}})
	}
	results := []result{}
	for _, f := range r.Findings {
		idx, ok := index[f.ID]
		if !ok {
			index[f.ID] = len(rules)
			idx = len(rules)
			rules = append(rules, rule{ID: f.ID, ShortDescription: msg{f.ID}})
		}
		loc := physical{ArtifactLocation: artifact{URI: filepath.ToSlash(f.File), URIBaseID: "ASTERISK_DIR"}}
		if f.Line > 0 {
			loc.Region = &region{StartLine: f.Line}
		}
		results = append(results, result{
			RuleID: f.ID, RuleIndex: idx, Level: sarifLevel(f.Severity),
			Message:    msg{f.Message + " Fix: " + f.Fix},
			Locations:  []location{{PhysicalLocation: loc}},
			Properties: map[string]string{"severity": f.Severity.String()},
		})
	}
	run := map[string]any{
		"tool": map[string]any{"driver": map[string]any{
			"name":           "pbxguard",
			"version":        version.Short(),
			"informationUri": "https://github.com/pbxguard/pbxguard",
			"rules":          rules,
		}},
		"results": results,
	}
	if r.Dir != "" {
		if abs, err := filepath.Abs(r.Dir); err == nil {
			u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs) + "/"}
			run["originalUriBaseIds"] = map[string]any{"ASTERISK_DIR": map[string]string{"uri": u.String()}}
		}
	}
	log := map[string]any{
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"version": "2.1.0",
		"runs":    []any{run},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(log)
}

// RuleText describes the check id (SARIF rules, documentation); false for
// an unknown id.
func RuleText(id string) (string, bool) {
	t, ok := ruleText[id]
	return t, ok
}
