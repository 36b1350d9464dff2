package firewall

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// runner runs firewall tools, inside Options.NetNS when set, or through
// Options.Exec (tests) when that is set.
type runner struct {
	netns string
	exec  ExecFunc
}

// ExecFunc runs one firewall tool (ipset, iptables, iptables-save, ...)
// with stdin and returns its stdout; the error carries its stderr. It is
// what Options.Exec replaces, for tests without root.
type ExecFunc func(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error)

func newRunner(o Options) runner { return runner{netns: o.NetNS, exec: o.Exec} }

func (r runner) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if r.netns != "" {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", r.netns, name}, args...)...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// run runs a command with optional stdin and returns its stdout; the error
// carries the command line and its stderr.
func (r runner) run(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	if r.exec != nil {
		out, err := r.exec(ctx, stdin, name, args...)
		if err != nil {
			return out, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return out, nil
	}
	cmd := r.command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	if err := cmd.Run(); err != nil {
		where := ""
		if r.netns != "" {
			where = " (in netns " + r.netns + ")"
		}
		msg := strings.TrimSpace(errb.String())
		if len(msg) > 500 {
			msg = msg[:500] + "..."
		}
		return out.Bytes(), fmt.Errorf("%s %s%s: %w: %s", name, strings.Join(args, " "), where, err, msg)
	}
	return out.Bytes(), nil
}

// ipt is one IP family's iptables tools and matching names.
type ipt struct {
	v6      bool
	tables  string // iptables / ip6tables
	restore string // iptables-restore / ip6tables-restore
	save    string // iptables-save / ip6tables-save
}

var ipFamilies = []ipt{
	{false, "iptables", "iptables-restore", "iptables-save"},
	{true, "ip6tables", "ip6tables-restore", "ip6tables-save"},
}

// IPTChain is the chain both iptables-based backends keep their rules in;
// INPUT (and FORWARD with Options.Forward) jump to it.
const IPTChain = "PBXGUARD"

// ensureChain creates chain IPTChain (if missing) with the given rules
// (replacing what is in it when it differs) and one jump from each hook
// chain, inserted first. Done through the command line so that other
// rules are never rewritten.
func ensureChain(ctx context.Context, r runner, f ipt, rules [][]string, hooks []string) error {
	if _, err := r.run(ctx, nil, f.tables, "-w", "-S", IPTChain); err != nil {
		if _, err := r.run(ctx, nil, f.tables, "-w", "-N", IPTChain); err != nil {
			return err
		}
	}
	for _, rule := range rules {
		if _, err := r.run(ctx, nil, f.tables, append([]string{"-w", "-C", IPTChain}, rule...)...); err != nil {
			if _, err := r.run(ctx, nil, f.tables, append([]string{"-w", "-A", IPTChain}, rule...)...); err != nil {
				return err
			}
		}
	}
	if len(hooks) == 1 { // forward off: take away a jump left from when it was on
		_, _ = r.run(ctx, nil, f.tables, "-w", "-D", "FORWARD", "-j", IPTChain)
	}
	for _, h := range hooks {
		if _, err := r.run(ctx, nil, f.tables, "-w", "-C", h, "-j", IPTChain); err != nil {
			if _, err := r.run(ctx, nil, f.tables, "-w", "-I", h, "1", "-j", IPTChain); err != nil {
				return err
			}
		}
	}
	return nil
}

// removeChain deletes the jumps (all of them, bounded), flushes and deletes
// the chain. Missing pieces are fine.
func removeChain(ctx context.Context, r runner, f ipt) error {
	for _, h := range []string{"INPUT", "FORWARD"} {
		for i := 0; i < 16; i++ {
			if _, err := r.run(ctx, nil, f.tables, "-w", "-D", h, "-j", IPTChain); err != nil {
				break
			}
		}
	}
	if _, err := r.run(ctx, nil, f.tables, "-w", "-S", IPTChain); err != nil {
		return nil // no chain
	}
	if _, err := r.run(ctx, nil, f.tables, "-w", "-F", IPTChain); err != nil {
		return err
	}
	_, err := r.run(ctx, nil, f.tables, "-w", "-X", IPTChain)
	return err
}

func hooks(o Options) []string {
	if o.Forward {
		return []string{"INPUT", "FORWARD"}
	}
	return []string{"INPUT"}
}
