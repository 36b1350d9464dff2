package policy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// PlanText is what `pbxguard firewall plan` prints and `apply` loads: a
// header saying where the policy came from, then the nft transaction.
func PlanText(cfg *Config) (string, error) {
	rs, err := Compile(cfg)
	if err != nil {
		return "", err
	}
	src := cfg.Source
	if src == "" {
		src = "built-in defaults"
	}
	header := fmt.Sprintf("pbxguard hardened firewall policy, compiled from %s\n"+
		"One nft transaction: the table is created, deleted and defined again, so the kernel\n"+
		"switches to the new policy at once or keeps the old one. Other tables are not touched.\n"+
		"Every rule's comment starts with its name (see pbxguard firewall show) and says why it is there.", src)
	return rs.NFT(header), nil
}

// Kernel runs nft and reads kernel files, optionally inside a named network
// namespace (`ip netns exec NAME ...`).
type Kernel struct {
	Netns string
	Log   *slog.Logger
	// Proc is where /proc is ("" = /proc): tests give a fake tree.
	Proc string
}

func (k Kernel) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if k.Netns != "" {
		args = append([]string{"netns", "exec", k.Netns, name}, args...)
		name = "ip"
	}
	return exec.CommandContext(ctx, name, args...)
}

func (k Kernel) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := k.command(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// errNoTable reports nft's "No such file or directory" for a missing table.
func errNoTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "No such file or directory")
}

// ListTable returns the live policy table as nft text (stateless: no
// counters) and whether it exists. forDiff strips dynamic set elements.
func (k Kernel) ListTable(ctx context.Context, forDiff bool) (string, bool, error) {
	out, err := k.run(ctx, nil, "nft", "-s", "list", "table", TableFamily, TableName)
	if errNoTable(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if forDiff {
		return StripDynamicElements(string(out)), true, nil
	}
	return string(out), true, nil
}

// ListJSON returns `nft -j list table` of the policy table.
func (k Kernel) ListJSON(ctx context.Context) ([]byte, bool, error) {
	out, err := k.run(ctx, nil, "nft", "-j", "list", "table", TableFamily, TableName)
	if errNoTable(err) {
		return nil, false, nil
	}
	return out, err == nil, err
}

// Load runs an nft script as one transaction.
func (k Kernel) Load(ctx context.Context, script string) error {
	_, err := k.run(ctx, []byte(script), "nft", "-f", "/dev/stdin")
	return err
}

// DeleteTable deletes the policy table; a missing table is not an error.
func (k Kernel) DeleteTable(ctx context.Context) error {
	_, err := k.run(ctx, nil, "nft", "delete", "table", TableFamily, TableName)
	if errNoTable(err) {
		return nil
	}
	return err
}

// ReadFile reads a file as seen from the namespace (for /proc/net/tcp).
func (k Kernel) ReadFile(ctx context.Context, path string) ([]byte, error) {
	if k.Netns == "" {
		return os.ReadFile(path)
	}
	return k.run(ctx, nil, "cat", path)
}

// Canonical loads the script into a throw-away network namespace
// (`unshare --net`) and returns nft's own listing of it, so that it can be
// compared line by line with the live table.
func (k Kernel) Canonical(ctx context.Context, script string) (string, error) {
	cmd := exec.CommandContext(ctx, "unshare", "--net", "sh", "-c",
		fmt.Sprintf("nft -f /dev/stdin && nft -s list table %s %s", TableFamily, TableName))
	cmd.Stdin = strings.NewReader(script)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("checking the plan in a scratch namespace: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	return StripDynamicElements(out.String()), nil
}

// LiveSessions finds administrator sessions: SSH_CONNECTION (unless the
// kernel is a namespace: the variable describes the host) and established
// TCP connections in /proc/net/tcp{,6} to the SSH ports: those given (the
// configured one), and those sshd really listens on (its listening
// sockets, found through /proc/<pid>/fd, or `ss -Hltnp`), so that an SSH
// on a port the configuration does not name is seen even without
// SSH_CONNECTION (sudo's env_reset drops it).
func (k Kernel) LiveSessions(ctx context.Context, sshConnection string, ports ...uint16) []Session {
	var out []Session
	if k.Netns == "" {
		if s, ok := ParseSSHConnection(sshConnection); ok {
			out = append(out, s)
			ports = append(ports, s.Port)
		}
	}
	ports = append(ports, k.sshdPorts(ctx)...)
	proc := k.proc()
	for _, f := range []string{proc + "/net/tcp", proc + "/net/tcp6"} {
		data, err := k.ReadFile(ctx, f)
		if err != nil {
			continue
		}
		out = append(out, ParseProcNetTCP(data, f, ports...)...)
	}
	return out
}

// State is pbxguard's policy state directory.
type State struct{ Dir string }

// Pending is an armed rollback.
type Pending struct {
	ID          string    `json:"id"`
	AppliedAt   time.Time `json:"applied_at"`
	Deadline    time.Time `json:"deadline"`
	Netns       string    `json:"netns,omitempty"`
	HadPrevious bool      `json:"had_previous"`
	PID         int       `json:"pid,omitempty"`
}

func (s State) path(name string) string { return filepath.Join(s.Dir, name) }

// Files in the state directory.
const (
	pendingFile   = "policy-pending.json"
	previousFile  = "policy-previous.nft"
	appliedFile   = "policy-applied.nft"
	confirmedFile = "policy-confirmed.nft"
)

// PendingRollback returns the armed rollback, or nil.
func (s State) PendingRollback() (*Pending, error) {
	data, err := os.ReadFile(s.path(pendingFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p Pending
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%s is damaged (%v): delete it after checking `nft list table %s %s`", s.path(pendingFile), err, TableFamily, TableName)
	}
	return &p, nil
}

// SavePending writes the pending rollback atomically.
func (s State) SavePending(p *Pending) error {
	data, _ := json.MarshalIndent(p, "", "  ")
	return writeAtomic(s.path(pendingFile), data)
}

func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ApplyResult says what Apply did.
type ApplyResult struct {
	Pending *Pending
	// KeptPrevious is true when an earlier apply was still unconfirmed: the
	// rollback target stays the ruleset from before that apply.
	KeptPrevious bool
}

// Apply loads the compiled script and arms a rollback to the ruleset that
// was live before, due after confirmWithin. now is injected for tests.
func Apply(ctx context.Context, k Kernel, st State, script string, now time.Time, confirmWithin time.Duration) (*ApplyResult, error) {
	old, err := st.PendingRollback()
	if err != nil {
		return nil, err
	}
	res := &ApplyResult{}
	had := false
	if old != nil {
		// an unconfirmed apply is live: keep the confirmed ruleset as target
		had = old.HadPrevious
		res.KeptPrevious = true
	} else {
		prev, exists, err := k.ListTable(ctx, false)
		if err != nil {
			return nil, fmt.Errorf("reading the live policy before applying: %w", err)
		}
		had = exists
		if err := writeAtomic(st.path(previousFile), []byte(prev)); err != nil {
			return nil, fmt.Errorf("saving the previous policy in %s: %w (use --state-dir)", st.Dir, err)
		}
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	p := &Pending{ID: hex.EncodeToString(id), AppliedAt: now.UTC(), Deadline: now.Add(confirmWithin).UTC(), Netns: k.Netns, HadPrevious: had}
	// the rollback is armed before the kernel changes, so a crash between
	// the two still rolls back
	if err := st.SavePending(p); err != nil {
		return nil, fmt.Errorf("arming the rollback in %s: %w", st.Dir, err)
	}
	if err := k.Load(ctx, script); err != nil {
		if old != nil {
			_ = st.SavePending(old)
		} else {
			_ = os.Remove(st.path(pendingFile))
		}
		return nil, fmt.Errorf("the kernel refused the policy (nothing changed): %w", err)
	}
	if err := writeAtomic(st.path(appliedFile), []byte(script)); err != nil {
		return nil, err
	}
	res.Pending = p
	return res, nil
}

// Confirm disarms the pending rollback and records the applied policy as
// the confirmed one.
func Confirm(st State) (*Pending, error) {
	p, err := st.PendingRollback()
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("no rollback is pending: nothing to confirm (run pbxguard firewall apply first)")
	}
	if data, err := os.ReadFile(st.path(appliedFile)); err == nil {
		if err := writeAtomic(st.path(confirmedFile), data); err != nil {
			return nil, err
		}
	}
	if err := os.Remove(st.path(pendingFile)); err != nil {
		return nil, err
	}
	return p, nil
}

// Rollback restores the ruleset saved before the pending apply. With a
// non-empty id it acts only if the pending rollback is that one (a later
// confirm or apply makes an old waiter do nothing). It returns false when
// nothing was pending.
func Rollback(ctx context.Context, k Kernel, st State, id string) (bool, error) {
	p, err := st.PendingRollback()
	if err != nil {
		return false, err
	}
	if p == nil || (id != "" && p.ID != id) {
		return false, nil
	}
	if err := restorePrevious(ctx, k, st, p.HadPrevious); err != nil {
		return false, err
	}
	return true, os.Remove(st.path(pendingFile))
}

func restorePrevious(ctx context.Context, k Kernel, st State, had bool) error {
	if !had {
		if err := k.DeleteTable(ctx); err != nil {
			return fmt.Errorf("rolling back (removing the policy table): %w", err)
		}
		return nil
	}
	prev, err := os.ReadFile(st.path(previousFile))
	if err != nil {
		return fmt.Errorf("rolling back: the previous policy is missing (%w); to open the host now run: nft delete table %s %s", err, TableFamily, TableName)
	}
	script := fmt.Sprintf("table %s %s\ndelete table %s %s\n%s", TableFamily, TableName, TableFamily, TableName, prev)
	if err := k.Load(ctx, script); err != nil {
		return fmt.Errorf("rolling back to %s: %w", st.path(previousFile), err)
	}
	return nil
}

// LoadConfirmed loads the last confirmed policy (at boot when nothing was
// pending). It returns false when there is none.
func LoadConfirmed(ctx context.Context, k Kernel, st State) (bool, error) {
	data, err := os.ReadFile(st.path(confirmedFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, k.Load(ctx, string(data))
}

// Forget removes the policy state (after `firewall remove`).
func Forget(st State) error {
	var errs []error
	for _, f := range []string{pendingFile, appliedFile, confirmedFile, previousFile} {
		if err := os.Remove(st.path(f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
