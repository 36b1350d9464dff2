package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pbxguard/pbxguard/internal/fraud"
)

// Dialled numbers are callers' text: the incident views print them
// escaped (no terminal escape, no newline, no tab breaking the table).
func TestIncidentViewsEscapeCallerText(t *testing.T) {
	hostile := "5551234567\n,1001\x1b[2J\t+88216123456"
	var b strings.Builder
	printReport(&b, &fraud.Report{Extensions: []fraud.ExtensionReport{{Extension: "1004", Suspicious: true,
		Reasons: []string{"call to " + hostile}, Destinations: []fraud.Destination{{Dialled: hostile}}}}}, false)
	printView(&b, []extView{{Extension: "1004\r", Destinations: []string{hostile}}}, time.Now())
	out := b.String()
	if strings.ContainsAny(out, "\x1b\r") || strings.Contains(out, "\n,1001") || !strings.Contains(out, `5551234567\n,1001\x1b[2J\t+88216123456`) {
		t.Fatalf("caller text printed raw:\n%q", out)
	}
}
