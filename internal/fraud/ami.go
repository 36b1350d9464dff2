package fraud

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/pbxguard/pbxguard/internal/ami"
)

// LockFamily is the AstDB family of extension locks: the key is the
// endpoint name, the value the reason. docs/fraud.md has the dialplan
// snippet that checks it before any outbound Dial.
const LockFamily = "pbxguard/locked"

// AMIActions is the part of *ami.Client the AMI responses use.
type AMIActions interface {
	Hangup(ctx context.Context, channel string, cause int) error
	PJSIPHangup(ctx context.Context, channel string, cause int) error
	DBPut(ctx context.Context, family, key, val string) error
	DBDel(ctx context.Context, family, key string) error
	Action(ctx context.Context, action *ami.Message) (*ami.Message, error)
}

// AMIHanger hangs up channels over AMI.
type AMIHanger struct {
	AMI AMIActions
	// Cause is the Q.850 cause (0: 21, call rejected).
	Cause int
	// UsePJSIPHangup tries PJSIPHangup first for PJSIP channels (Asterisk
	// 20.7/21.2+) and falls back to Hangup when Asterisk does not know it.
	UsePJSIPHangup bool
}

// Hangup hangs up channel.
func (h *AMIHanger) Hangup(ctx context.Context, channel string) error {
	cause := h.Cause
	if cause <= 0 {
		cause = 21
	}
	if h.UsePJSIPHangup && strings.HasPrefix(channel, "PJSIP/") {
		err := h.AMI.PJSIPHangup(ctx, channel, cause)
		if err == nil || !unknownAction(err) {
			return err
		}
	}
	return h.AMI.Hangup(ctx, channel, cause)
}

// unknownAction reports whether Asterisk answered that it has no such action.
func unknownAction(err error) bool {
	var ae *ami.ActionError
	if !errors.As(err, &ae) {
		return false
	}
	m := strings.ToLower(ae.Message)
	return strings.Contains(m, "invalid/unknown command") || strings.Contains(m, "unknown action")
}

// AMILocker locks extensions in the AstDB (LockFamily/<ext> = reason).
type AMILocker struct {
	AMI AMIActions
	// Maintenance also sends PJSIPSetMaintenance (Endpoint, State: on/off)
	// for Asterisk versions that have it; an "unknown action" answer is
	// ignored, any other error reported.
	Maintenance bool
	// Now stamps the lock value (nil: time.Now).
	Now func() time.Time
}

// Lock writes the lock key.
func (l *AMILocker) Lock(ctx context.Context, ext, reason string) error {
	if err := checkExt(ext); err != nil {
		return err
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	val := now().UTC().Format(time.RFC3339) + " " + strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, reason)
	if len(val) > 200 {
		val = val[:200]
	}
	if err := l.AMI.DBPut(ctx, LockFamily, ext, val); err != nil {
		return fmt.Errorf("lock %s: DBPut %s/%s: %w", ext, LockFamily, ext, err)
	}
	return l.maintenance(ctx, ext, "on")
}

// Unlock deletes the lock key.
func (l *AMILocker) Unlock(ctx context.Context, ext string) error {
	if err := checkExt(ext); err != nil {
		return err
	}
	if err := l.AMI.DBDel(ctx, LockFamily, ext); err != nil {
		var ae *ami.ActionError
		if !errors.As(err, &ae) || !strings.Contains(strings.ToLower(ae.Message), "not found") {
			return fmt.Errorf("unlock %s: DBDel %s/%s: %w", ext, LockFamily, ext, err)
		}
	}
	return l.maintenance(ctx, ext, "off")
}

func (l *AMILocker) maintenance(ctx context.Context, ext, state string) error {
	if !l.Maintenance {
		return nil
	}
	_, err := l.AMI.Action(ctx, ami.NewAction("PJSIPSetMaintenance", "Endpoint", ext, "State", state))
	if err != nil && !unknownAction(err) {
		return fmt.Errorf("PJSIPSetMaintenance %s %s: %w", ext, state, err)
	}
	return nil
}

func checkExt(ext string) error {
	if ext == "" || len(ext) > 80 || strings.ContainsAny(ext, "/\r\n \t") {
		return fmt.Errorf("extension %q is not an endpoint name", ext)
	}
	return nil
}

// BanFunc adapts a function (e.g. the daemon control client's Ban) to Banner.
type BanFunc func(ctx context.Context, addr netip.Addr, d time.Duration, reason string) error

// Ban calls f.
func (f BanFunc) Ban(ctx context.Context, addr netip.Addr, d time.Duration, reason string) error {
	return f(ctx, addr, d, reason)
}

var _ AMIActions = (*ami.Client)(nil)
