package detect

import "github.com/pbxguard/pbxguard/internal/event"

// autoDetector chooses per line: a line whose server-written prefix names
// sshd (syslog program sshd, sshd-session, sshd-auth or "[sshd]", RFC 5424
// app-name) goes to the sshd detector, everything else to the asterisk
// detector. The choice reads only the prefix, never the message, so text an
// attacker puts in a message ("sshd" in a SIP display name) cannot steer a
// line away from the detector that understands it.
type autoDetector struct {
	ast  *asteriskDetector
	sshd *sshdDetector
}

func newAuto(o Options) Detector {
	return &autoDetector{ast: newAsterisk(o).(*asteriskDetector), sshd: newSSHD(o).(*sshdDetector)}
}

// Name implements Detector.
func (d *autoDetector) Name() string { return "auto" }

// Detect implements Detector.
func (d *autoDetector) Detect(line []byte, ev *event.Event) bool {
	if len(line) > 0 && line[0] != '[' {
		if _, _, _, ok := parseSSHDHeader(line); ok {
			if !d.sshd.Detect(line, ev) {
				return false
			}
			ev.Detector = "sshd"
			return true
		}
	}
	return d.ast.Detect(line, ev)
}
