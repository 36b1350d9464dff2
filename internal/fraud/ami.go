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
	ActionList(ctx context.Context, action *ami.Message) (*ami.Message, []*ami.Message, error)
}

// AMIHanger hangs up channels over AMI and checks that they are gone.
//
// Asterisk answers a hang-up action before the channel is gone, and
// PJSIPHangup answers Success even when it did nothing (it only ends
// incoming channels not answered yet; on an answered call Asterisk logs
// "Not an incoming channel or invalid state 'CONFIRMED'"). So after each
// action the hanger waits, at most VerifyWithin, for the channel to go: a
// Hangup event for it (Watch) or CoreShowChannels no longer listing it.
// A channel still up is hung up again with the plain Hangup; still up
// after that, the hang-up failed and says so. With UsePJSIPHangup the
// channel's state is asked first: an answered channel gets the plain
// Hangup at once.
type AMIHanger struct {
	AMI AMIActions
	// Cause is the Q.850 cause of Hangup (0: 21, call rejected).
	Cause int
	// UsePJSIPHangup tries PJSIPHangup first for PJSIP channels (Asterisk
	// 20.7/21.2+; the caller hears PJSIPCode instead of a BYE/CANCEL) and
	// falls back to Hangup when Asterisk does not know it or the channel
	// stays up.
	UsePJSIPHangup bool
	// PJSIPCode is the SIP response code PJSIPHangup sends (400–699; 0: 403).
	PJSIPCode int
	// VerifyWithin bounds the wait for the channel to go after each
	// action (0: 2s).
	VerifyWithin time.Duration
	// Watch, when set, returns a channel closed when the Hangup event of
	// channel arrives, and a function to stop watching. Nil: only
	// CoreShowChannels is asked.
	Watch func(channel string) (gone <-chan struct{}, stop func())
}

// SIPCode returns code when it is a SIP response code PJSIPHangup takes
// (400–699), else 403 (Forbidden).
func SIPCode(code int) int {
	if code < 400 || code > 699 {
		return 403
	}
	return code
}

// Hangup hangs up channel and verifies it is gone. It returns each
// attempt, and an error when the channel is still up after them all (or
// could not be asked for).
func (h *AMIHanger) Hangup(ctx context.Context, channel string) ([]Attempt, error) {
	cause := h.Cause
	if cause <= 0 {
		cause = 21
	}
	var atts []Attempt
	try := func(method string, act func() error) (gone bool, err error) {
		start := time.Now()
		var gch <-chan struct{}
		if h.Watch != nil {
			var stop func()
			gch, stop = h.Watch(channel)
			defer stop()
		}
		a := Attempt{Method: method}
		err = act()
		if err != nil && !noSuchChannel(err) {
			a.Result = err.Error()
			a.TookMS = ms(time.Since(start))
			atts = append(atts, a)
			return false, err
		}
		gone, verr := h.verify(ctx, channel, gch)
		a.TookMS = ms(time.Since(start))
		switch {
		case gone && err != nil:
			a.Result = "gone (Asterisk: no such channel)"
		case gone:
			a.Result = "gone"
		case verr != nil:
			a.Result = "not verified: " + verr.Error()
		default:
			a.Result = fmt.Sprintf("still up after %v", h.within())
		}
		atts = append(atts, a)
		if !gone && verr != nil {
			return false, verr
		}
		return gone, nil
	}
	usePJSIP := h.UsePJSIPHangup && strings.HasPrefix(channel, "PJSIP/")
	if usePJSIP {
		// PJSIPHangup does nothing to an answered channel (and says
		// Success): ask its state first and send the plain Hangup then.
		if up, listed, err := h.state(ctx, channel); err == nil && !listed {
			return []Attempt{{Method: "CoreShowChannels", Result: "already gone"}}, nil
		} else if err == nil && up {
			usePJSIP = false
		}
	}
	if usePJSIP {
		code := SIPCode(h.PJSIPCode)
		gone, err := try(fmt.Sprintf("PJSIPHangup %d", code), func() error { return h.AMI.PJSIPHangup(ctx, channel, code) })
		if gone {
			return atts, nil
		}
		// Still up (an answered call), unknown to this Asterisk, or
		// refused: the plain Hangup follows.
		_ = err
	}
	tries := 1
	if len(atts) == 0 {
		tries = 2 // no PJSIPHangup before: the plain Hangup is retried once
	}
	var last error
	for range tries {
		gone, err := try(fmt.Sprintf("Hangup %d", cause), func() error { return h.AMI.Hangup(ctx, channel, cause) })
		if gone {
			return atts, nil
		}
		last = err
	}
	if last != nil {
		return atts, fmt.Errorf("hangup %s: %w", channel, last)
	}
	return atts, fmt.Errorf("hangup %s: the channel is still up after %d attempts (%s)", channel, len(atts), atts[len(atts)-1].Method)
}

// state reports whether channel is listed by CoreShowChannels, and up
// (answered).
func (h *AMIHanger) state(ctx context.Context, channel string) (up, listed bool, err error) {
	_, evs, err := h.AMI.ActionList(ctx, ami.NewAction("CoreShowChannels"))
	if err != nil {
		return false, false, err
	}
	for _, e := range evs {
		if e.Event() == "CoreShowChannel" && e.Get("Channel") == channel {
			return e.Get("ChannelState") == "6" || strings.EqualFold(e.Get("ChannelStateDesc"), "Up"), true, nil
		}
	}
	return false, false, nil
}

func (h *AMIHanger) within() time.Duration {
	if h.VerifyWithin > 0 {
		return h.VerifyWithin
	}
	return 2 * time.Second
}

// verify waits until channel is gone: its Hangup event (gch) or a
// CoreShowChannels listing without it, at most within().
func (h *AMIHanger) verify(ctx context.Context, channel string, gch <-chan struct{}) (bool, error) {
	deadline := time.Now().Add(h.within())
	pause := 20 * time.Millisecond
	var lastErr error
	for {
		select {
		case <-gch:
			return true, nil
		default:
		}
		_, evs, err := h.AMI.ActionList(ctx, ami.NewAction("CoreShowChannels"))
		if err == nil {
			listed := false
			for _, e := range evs {
				if e.Event() == "CoreShowChannel" && e.Get("Channel") == channel {
					listed = true
					break
				}
			}
			if !listed {
				return true, nil
			}
			lastErr = nil
		} else {
			lastErr = fmt.Errorf("CoreShowChannels: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, lastErr
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-gch:
			t.Stop()
			return true, nil
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 250*time.Millisecond)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// noSuchChannel reports Asterisk's answer for a channel that is not there.
func noSuchChannel(err error) bool {
	var ae *ami.ActionError
	return errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "no such channel")
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
