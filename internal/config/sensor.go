package config

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Sensor is the packet-level SIP sensor (`sensor:`): SIP packets copied by
// the kernel (NFLOG), paired with the PBX's answers and judged into the
// events of a jail. Off unless enabled.
type Sensor struct {
	Enabled       bool
	Jail          string   // the jail its events go to [asterisk]
	UDPPorts      []uint16 // [5060]
	TCPPorts      []uint16 // [5060]
	Snaplen       int      // bytes copied per packet [1024]
	RatePerSource int      // packets per second per source the kernel copies [200]
	NFLOGGroup    int      // [7]
	// CaptureFile, when set, receives every packet the kernel copies to
	// the sensor (cut at snaplen) as a pcap file, for `pbxguard test-log`
	// and Wireshark; at most CaptureMax bytes [64 MiB], then writing stops.
	CaptureFile string
	CaptureMax  int64
	Line        int
}

// DefaultSensor is the sensor section's defaults.
func DefaultSensor() Sensor {
	return Sensor{Jail: "asterisk", UDPPorts: []uint16{5060}, TCPPorts: []uint16{5060}, Snaplen: 1024, RatePerSource: 200, NFLOGGroup: 7, CaptureMax: 64 << 20}
}

func (p *parser) sensor(k string, v *yaml.Node, s *Sensor) {
	s.Line = v.Line
	p.mapping(v, k, map[string]func(string, *yaml.Node){
		"enabled": func(k string, v *yaml.Node) { s.Enabled = p.boolean(k, v) },
		"jail":    func(k string, v *yaml.Node) { s.Jail = p.str(k, v) },
		"ports": func(k string, v *yaml.Node) {
			p.mapping(v, k, map[string]func(string, *yaml.Node){
				"udp": func(k string, v *yaml.Node) { s.UDPPorts = p.ports(k, v) },
				"tcp": func(k string, v *yaml.Node) { s.TCPPorts = p.ports(k, v) },
			})
		},
		"snaplen":      func(k string, v *yaml.Node) { s.Snaplen = p.intRange(k, v, 256, 65535) },
		"nflog_group":  func(k string, v *yaml.Node) { s.NFLOGGroup = p.intRange(k, v, 1, 65535) },
		"capture_file": func(k string, v *yaml.Node) { s.CaptureFile = p.path(k, v) },
		"capture_max_mb": func(k string, v *yaml.Node) {
			s.CaptureMax = int64(p.intRange(k, v, 1, 100000)) << 20
		},
		"rate_per_source": func(k string, v *yaml.Node) {
			val, ok := p.scalar(k, v)
			if !ok {
				return
			}
			n, unit, _ := strings.Cut(strings.TrimSpace(val), "/")
			r, err := strconv.Atoi(strings.TrimSpace(n))
			if err != nil || r < 1 || r > 100000 || (unit != "" && unit != "second" && unit != "s") {
				p.errorf(v.Line, k, "%q: write packets per second, like 200/second (1 to 100000)", val)
				return
			}
			s.RatePerSource = r
		},
	})
}

func (p *parser) ports(k string, v *yaml.Node) []uint16 {
	if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, k, "expected a list of ports ([5060, 5062])")
		return nil
	}
	var out []uint16
	for _, n := range v.Content {
		x, err := strconv.Atoi(n.Value)
		if err != nil || x < 1 || x > 65535 {
			p.errorf(n.Line, k, "%q is not a port (1-65535)", n.Value)
			continue
		}
		out = append(out, uint16(x))
	}
	if len(out) > 8 {
		p.errorf(v.Line, k, "at most 8 ports")
		out = out[:8]
	}
	return out
}

// checkSensor: the sensor's jail must exist and be enabled.
func (p *parser) checkSensor(c *Config) {
	if !c.Sensor.Enabled {
		return
	}
	for _, j := range c.Jails {
		if j.Name == c.Sensor.Jail && j.Enabled {
			return
		}
	}
	p.errorf(c.Sensor.Line, "sensor.jail", "jail %q is not an enabled jail: the sensor's events need one (jail: asterisk)", c.Sensor.Jail)
}
