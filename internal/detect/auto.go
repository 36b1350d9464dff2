package detect

import "github.com/pbxguard/pbxguard/internal/event"

// autoDetector chooses per line: a line whose prefix names sshd goes to the
// sshd detector, everything else to the asterisk detector. The choice costs
// one scan for "sshd" in the first 64 bytes.
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
	head := line
	if len(head) > 64 {
		head = head[:64]
	}
	if containsStr(head, "sshd") {
		return d.sshd.Detect(line, ev)
	}
	return d.ast.Detect(line, ev)
}
