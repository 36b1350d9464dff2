package daemon

import (
	"sync"
	"testing"

	"github.com/pbxguard/pbxguard/internal/event"
)

// The event tap (the fraud monitor's view of the logs) sees auth_success
// events and authentication failures (the fraud monitor's second signal
// against an established address), and nothing once removed.
func TestEventTapSeesAuthSuccess(t *testing.T) {
	h := start(t, t.TempDir(), newFakeBackend(), 0)
	defer h.stop()
	var mu sync.Mutex
	var seen []string
	h.d.SetEventTap(func(ev event.Event) {
		mu.Lock()
		seen = append(seen, ev.Kind.String()+" "+ev.Addr.String())
		mu.Unlock()
	})
	h.src.lines <- "FAIL 203.0.113.66"
	h.src.lines <- "OK 203.0.113.159"
	waitFor(t, "the tap to see the success", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 1
	})
	h.d.SetEventTap(nil)
	h.src.lines <- "OK 203.0.113.160"
	h.src.lines <- "FAIL 203.0.113.66" // a line after, so the previous one was handled
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != "auth_failure 203.0.113.66" || seen[1] != "auth_success 203.0.113.159" {
		t.Fatalf("tap saw %q, want the failure of .66 and the success of .159, nothing after SetEventTap(nil)", seen)
	}
}
