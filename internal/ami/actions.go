package ami

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Ping sends a Ping and waits for the Pong.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Action(ctx, NewAction("Ping"))
	return err
}

// Hangup hangs up a channel ("PJSIP/1004-00000017") with a Q.850 cause
// (e.g. 21 call rejected; 0 leaves Asterisk's default, 16 normal clearing).
func (c *Client) Hangup(ctx context.Context, channel string, cause int) error {
	if channel == "" {
		return errors.New("ami: Hangup: no channel given")
	}
	a := NewAction("Hangup", "Channel", channel)
	if cause > 0 {
		a.Add("Cause", strconv.Itoa(cause))
	}
	_, err := c.Action(ctx, a)
	return err
}

// PJSIPHangup hangs up a PJSIP channel with a SIP response code sent to
// the caller (Asterisk 20.7/21.2 and later have this action; older ones
// answer "Invalid/unknown command": fall back to Hangup then).
func (c *Client) PJSIPHangup(ctx context.Context, channel string, cause int) error {
	if channel == "" {
		return errors.New("ami: PJSIPHangup: no channel given")
	}
	a := NewAction("PJSIPHangup", "Channel", channel)
	if cause > 0 {
		a.Add("Cause", strconv.Itoa(cause))
	}
	_, err := c.Action(ctx, a)
	return err
}

// Getvar reads a channel variable or function, e.g.
// Getvar(ctx, "PJSIP/1004-00000017", "CHANNEL(pjsip,remote_addr)").
func (c *Client) Getvar(ctx context.Context, channel, variable string) (string, error) {
	a := NewAction("Getvar", "Variable", variable)
	if channel != "" {
		a.Add("Channel", channel)
	}
	resp, err := c.Action(ctx, a)
	if err != nil {
		return "", err
	}
	return resp.Get("Value"), nil
}

// DBPut stores family/key = val in the AstDB.
func (c *Client) DBPut(ctx context.Context, family, key, val string) error {
	_, err := c.Action(ctx, NewAction("DBPut", "Family", family, "Key", key, "Val", val))
	return err
}

// DBDel deletes family/key from the AstDB.
func (c *Client) DBDel(ctx context.Context, family, key string) error {
	_, err := c.Action(ctx, NewAction("DBDel", "Family", family, "Key", key))
	return err
}

// ErrNotFound is returned by DBGet for a missing key.
var ErrNotFound = errors.New("not found")

// DBGet reads family/key from the AstDB (ErrNotFound when it is absent).
func (c *Client) DBGet(ctx context.Context, family, key string) (string, error) {
	_, events, err := c.ActionList(ctx, NewAction("DBGet", "Family", family, "Key", key))
	if err != nil {
		var ae *ActionError
		if errors.As(err, &ae) && strings.Contains(strings.ToLower(ae.Message), "not found") {
			return "", fmt.Errorf("ami: DBGet %s/%s: %w", family, key, ErrNotFound)
		}
		return "", err
	}
	for _, e := range events {
		if e.Event() == "DBGetResponse" {
			return e.Get("Val"), nil
		}
	}
	return "", fmt.Errorf("ami: DBGet %s/%s: %w", family, key, ErrNotFound)
}

// Command runs a CLI command and returns its output, lines joined by
// "\n". It reads both the Asterisk 14+ form ("Output:" headers) and the
// older "Response: Follows … --END COMMAND--" form. When Asterisk reports
// an error the output (often the reason) is returned with the error.
func (c *Client) Command(ctx context.Context, cmd string) (string, error) {
	resp, err := c.Action(ctx, NewAction("Command", "Command", cmd))
	if resp == nil {
		return "", err
	}
	return strings.Join(resp.Values("Output"), "\n"), err
}
