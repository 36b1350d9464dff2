package daemon

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestDialErrorPermission(t *testing.T) {
	err := dialError("/run/pbxguard/control.sock", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "run as root (sudo)") {
		t.Fatalf("permission: %v", err)
	}
	err = dialError("/run/pbxguard/control.sock", &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)})
	if !errors.Is(err, ErrUnreachable) || strings.Contains(err.Error(), "sudo") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing socket: %v", err)
	}
}
