// Package systemd is what pbxguard needs of systemd, without a library:
// sd_notify(3) over $NOTIFY_SOCKET (Type=notify: READY=1 once the kernel
// holds every restored ban), and a log handler for when stderr is the
// journal (priorities as <N> prefixes, no second timestamp).
package systemd

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// Notify sends state (e.g. "READY=1", "STOPPING=1", "STATUS=…") to the
// service manager. Without $NOTIFY_SOCKET (not started by systemd, or not
// Type=notify) it does nothing and returns false.
func Notify(state string) (bool, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return false, nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		return false, fmt.Errorf("sd_notify: NOTIFY_SOCKET %q is not a unix socket path", addr)
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}
