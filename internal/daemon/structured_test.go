package daemon

import (
	"sync"
	"testing"

	"github.com/pbxguard/pbxguard/internal/event"
)

// The event tap (the fraud monitor's view of the logs) sees auth_success
// events, and not failures.
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
		return len(seen) > 0
	})
	h.d.SetEventTap(nil)
	h.src.lines <- "OK 203.0.113.160"
	h.src.lines <- "FAIL 203.0.113.66" // a line after, so the previous one was handled
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "auth_success 203.0.113.159" {
		t.Fatalf("tap saw %q, want only auth_success 203.0.113.159", seen)
	}
}
