package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestClusterSection(t *testing.T) {
	src := `
cluster:
  node: pbx-east-1
  nats:
    urls: [nats://192.0.2.1:4222, tls://192.0.2.2:4222]
    creds_file: /etc/pbxguard/nats.creds
    tls: {ca_file: /etc/pbxguard/ca.pem, cert_file: /etc/pbxguard/c.pem, key_file: /etc/pbxguard/c.key}
  share: [asterisk, sshd, fraud]
  accept:
    from: [pbx-west-1]
    min_reporters: 2
    max_bantime: 1w
  stream: {name: PBXGUARD_BANS, replicas: 3, max_age: 2d}
`
	c, err := Parse([]byte(src), testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled || cl.Node != "pbx-east-1" || len(cl.NATS.URLs) != 2 || cl.NATS.CredsFile != "/etc/pbxguard/nats.creds" ||
		cl.NATS.CAFile != "/etc/pbxguard/ca.pem" || cl.NATS.KeyFile != "/etc/pbxguard/c.key" ||
		!slices.Equal(cl.Share, []string{"asterisk", "sshd", "fraud"}) || !slices.Equal(cl.AcceptFrom, []string{"pbx-west-1"}) ||
		cl.MinReporters != 2 || cl.MaxBanTime != 7*24*time.Hour || cl.Stream.Replicas != 3 || cl.Stream.MaxAge != 48*time.Hour {
		t.Fatalf("cluster parsed as %+v", cl)
	}

	c, err = Parse([]byte("jails: {}\n"), testOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Enabled || c.Cluster.Share != nil || c.Cluster.MinReporters != 1 || c.Cluster.Stream.Name != "PBXGUARD_BANS" {
		t.Fatalf("defaults: %+v", c.Cluster)
	}
}

func TestClusterErrors(t *testing.T) {
	for src, want := range map[string]string{
		"cluster: {node: pbx.east}\n":                                     "NATS subject token",
		"cluster: {nats: {urls: [http://x:1]}}\n":                         "not a NATS URL",
		"cluster: {nats: {creds_file: /a, user: u, password_file: /p}}\n": "give one of",
		"cluster: {nats: {user: u}}\n":                                    "go together",
		"cluster: {share: [nope]}\n":                                      `"nope" is not a jail`,
		"cluster: {accept: {min_reporters: 0}}\n":                         "min_reporters",
		"cluster: {accept: {from: ['a.b']}}\n":                            "not a node name",
		"cluster: {accept: {max_bantime: 1hr}}\n":                         "max_bantime",
		"cluster: {strem: {}}\n":                                          "strem",
	} {
		_, err := Parse([]byte(src), testOpts(t))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want it to mention %q", src, err, want)
		}
	}
}
