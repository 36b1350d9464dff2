package policy

import (
	"strings"
	"testing"
)

const liveJSON = `{"nftables": [{"metainfo": {"version": "1.0.6"}},
{"table": {"family": "inet", "name": "pbxguard_policy", "handle": 5}},
{"set": {"family": "inet", "name": "portscan_ban4", "table": "pbxguard_policy", "type": "ipv4_addr", "elem": [{"elem": {"val": "203.0.113.66", "timeout": 3600, "expires": 3590}}, "203.0.113.67"]}},
{"set": {"family": "inet", "name": "trusted4", "table": "pbxguard_policy", "type": "ipv4_addr", "elem": [{"prefix": {"addr": "198.51.100.0", "len": 24}}]}},
{"set": {"family": "inet", "name": "banned4", "table": "pbxguard", "type": "ipv4_addr"}},
{"rule": {"family": "inet", "table": "pbxguard_policy", "chain": "input", "handle": 20, "comment": "tcp-xmas: FIN+PSH+URG", "expr": [{"match": {}}, {"counter": {"packets": 12, "bytes": 480}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "pbxguard_policy", "chain": "input", "handle": 21, "comment": "sip-scanner: x", "expr": [{"counter": {"packets": 3, "bytes": 9}}, {"jump": {"target": "sip_scanner"}}]}},
{"rule": {"family": "inet", "table": "other", "chain": "input", "handle": 2, "comment": "x: y", "expr": []}}
]}`

func TestParseLive(t *testing.T) {
	l, err := ParseLive([]byte(liveJSON))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Rules) != 2 || len(l.Sets) != 2 {
		t.Fatalf("rules=%d sets=%d (other tables must be ignored)", len(l.Rules), len(l.Sets))
	}
	r, ok := l.Rule("tcp-xmas")
	if !ok || r.Packets != 12 || r.Bytes != 480 || r.Verdict != "drop" || r.Handle != 20 {
		t.Errorf("tcp-xmas = %+v", r)
	}
	if r, _ := l.Rule("sip-scanner"); r.Verdict != "jump sip_scanner" {
		t.Errorf("jump verdict = %q", r.Verdict)
	}
	s, _ := l.Set("portscan_ban4")
	if s.Elements != 2 || s.Members[0] != "203.0.113.66" {
		t.Errorf("portscan_ban4 = %+v", s)
	}
	if s, _ := l.Set("trusted4"); s.Members[0] != "198.51.100.0/24" {
		t.Errorf("trusted4 = %+v", s)
	}
	if _, err := ParseLive([]byte("not json")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestDiff(t *testing.T) {
	if d := Diff("a", "b", "x\ny\n", "x\ny"); d != "" {
		t.Errorf("equal texts differ: %q", d)
	}
	d := Diff("live", "plan", "a\nb\nc\n", "a\nc\nd\n")
	want := "--- live\n+++ plan\n-b\n+d\n"
	if d != want {
		t.Errorf("diff = %q, want %q", d, want)
	}
}

func TestStripDynamicElements(t *testing.T) {
	in := `table inet pbxguard_policy {
	set portscan_ban4 {
		type ipv4_addr
		flags dynamic,timeout
		elements = { 203.0.113.66 timeout 1h expires 59m,
			     203.0.113.67 timeout 1h expires 58m }
	}

	set trusted4 {
		type ipv4_addr
		flags interval
		elements = { 198.51.100.0/24 }
	}
}`
	out := StripDynamicElements(in)
	if strings.Contains(out, "203.0.113") || !strings.Contains(out, "198.51.100.0/24") || !strings.Contains(out, "set portscan_ban4 {") {
		t.Errorf("stripped:\n%s", out)
	}
}

func FuzzParseLive(f *testing.F) {
	f.Add([]byte(liveJSON))
	f.Add([]byte(`{"nftables":[{"rule":{"table":"pbxguard_policy","expr":[{"counter":1},{"jump":5}]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseLive(data)
		if err == nil && l == nil {
			t.Fatal("nil result without error")
		}
	})
}

func FuzzParseProcNetTCP(f *testing.F) {
	f.Add([]byte(procTCP))
	f.Add([]byte(procTCP6))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range ParseProcNetTCP(data, "fuzz", 22) {
			if !s.Client.IsValid() || s.Port != 22 {
				t.Fatalf("bad session %v", s)
			}
		}
	})
}
