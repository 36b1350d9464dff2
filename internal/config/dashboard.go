package config

import (
	"fmt"
	"net"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Dashboard is the `dashboard:` section (off unless listen is set):
//
//	dashboard:
//	  listen: 127.0.0.1:9470
//	  token_file: /etc/pbxguard/dashboard.token   # actions (unban) only with it
//	  cert_file: ...; key_file: ...                # required off loopback
type Dashboard struct {
	Listen    string
	TokenFile string
	CertFile  string
	KeyFile   string
}

// ParseDashboard reads the raw `dashboard:` section (Config.Dashboard;
// nil = off).
func ParseDashboard(n *yaml.Node) (Dashboard, error) {
	var d Dashboard
	if n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return d, nil
	}
	if n.Kind != yaml.MappingNode {
		return d, Error{Line: n.Line, Key: "dashboard", Msg: "must be a mapping (dashboard: {listen: 127.0.0.1:9470})"}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		val := strings.TrimSpace(v.Value)
		switch k.Value {
		case "listen":
			if _, _, err := net.SplitHostPort(val); val != "" && err != nil {
				return d, Error{Line: v.Line, Key: "dashboard.listen", Msg: fmt.Sprintf("%q is not host:port (try 127.0.0.1:9470)", val)}
			}
			d.Listen = val
		case "token_file":
			d.TokenFile = val
		case "cert_file":
			d.CertFile = val
		case "key_file":
			d.KeyFile = val
		default:
			return d, Error{Line: k.Line, Key: "dashboard." + k.Value, Msg: "unknown key (dashboard has listen, token_file, cert_file, key_file)"}
		}
	}
	return d, nil
}

// Token reads the token file ("" when none is set).
func (d Dashboard) Token() (string, error) {
	if d.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(d.TokenFile)
	if err != nil {
		return "", fmt.Errorf("dashboard.token_file: %w (create it with: head -c 24 /dev/urandom | base64 > %s; chmod 600 %s)", err, d.TokenFile, d.TokenFile)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", fmt.Errorf("dashboard.token_file %s: the token is shorter than 16 characters (make a longer one)", d.TokenFile)
	}
	return t, nil
}
