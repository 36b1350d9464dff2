package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/firewall"
	"github.com/pbxguard/pbxguard/internal/policy"
)

// firewallOpts are the flags shared by the firewall subcommands.
type firewallOpts struct {
	config   string
	netns    string
	stateDir string
}

func (o *firewallOpts) kernel() policy.Kernel {
	return policy.Kernel{Netns: o.netns, Log: slog.Default()}
}

// state returns the state directory: --state-dir when given, else the
// configuration's top-level state_dir when the file is readable, else the
// default. apply, confirm and rollback thus agree without repeating flags.
func (o *firewallOpts) state(cmd *cobra.Command) policy.State {
	if f := cmd.Flag("state-dir"); f != nil && !f.Changed {
		if data, err := os.ReadFile(o.config); err == nil {
			var doc struct {
				StateDir string `yaml:"state_dir"`
			}
			if yaml.Unmarshal(data, &doc) == nil && doc.StateDir != "" {
				o.stateDir = doc.StateDir
			}
		}
	}
	return policy.State{Dir: o.stateDir}
}

// loadPolicy reads firewall.policy and allowlist from the config file.
func (o *firewallOpts) loadPolicy() (*policy.Config, error) {
	data, err := os.ReadFile(o.config)
	if err != nil {
		return nil, usageErr("reading the configuration: %v (pass --config FILE)", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, usageErr("%s: %v", o.config, err)
	}
	cfg, err := policy.FromDocument(&doc)
	if err != nil {
		return nil, usageErr("%s: %v", o.config, err)
	}
	cfg.Source = o.config
	// The daemon's one allowlist (with the Asterisk trunks) is trusted for
	// SIP: a carrier the daemon never bans is never rate-limited either.
	if full, err := config.Load(o.config, config.Options{}); err == nil {
		for _, e := range daemon.Allowlist(full, nil) {
			if !e.Loopback {
				cfg.Trusted.SIP = append(cfg.Trusted.SIP, policy.Origin{Prefix: e.Prefix, From: e.From})
			}
		}
	} else {
		slog.Warn("firewall: the daemon's allowlist and Asterisk trunks are left out of the policy's SIP trusted set: the configuration does not load (pbxguard config check)",
			"config", o.config, "err", err)
	}
	return cfg, nil
}

// firewallCommands returns the `firewall` group: the hardened policy.
func firewallCommands() []*cobra.Command {
	o := &firewallOpts{}
	fw := &cobra.Command{
		Use:   "firewall",
		Short: "Hardened firewall policy: plan, apply (with automatic rollback), confirm, rollback, show, remove",
		Long: `The hardened firewall policy is compiled from the firewall.policy key of the
configuration into pbxguard's own nftables table (inet pbxguard_policy) and
applied in one transaction. apply refuses a policy that would lock out the
current SSH session and rolls back by itself unless confirmed in time.`,
	}
	fw.PersistentFlags().StringVarP(&o.config, "config", "c", "/etc/pbxguard/pbxguard.yaml", "configuration file")
	fw.PersistentFlags().StringVar(&o.netns, "netns", "", "operate inside this network namespace (ip netns exec NAME)")
	fw.PersistentFlags().StringVar(&o.stateDir, "state-dir", "/var/lib/pbxguard", "where the previous ruleset and the pending rollback are kept (default: state_dir of the config)")
	fw.AddCommand(planCmd(o), applyCmd(o), confirmCmd(o), rollbackCmd(o), showCmd(o), removeCmd(o))
	return []*cobra.Command{fw}
}

func planCmd(o *firewallOpts) *cobra.Command {
	var format string
	var noDiff bool
	c := &cobra.Command{
		Use:   "plan",
		Short: "Print the ruleset that apply would load, with a comment per rule, and its diff against the live table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.loadPolicy()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch format {
			case "nft":
			case "iptables", "ip6tables":
				fam := map[string]string{"iptables": "4", "ip6tables": "6"}[format]
				text, err := policy.IPTables(cfg, fam)
				if err != nil {
					return usageErr("%s: %v", o.config, err)
				}
				fmt.Fprint(out, text)
				return nil
			default:
				return usageErr("--format %q: use nft, iptables or ip6tables", format)
			}
			text, err := policy.PlanText(cfg)
			if err != nil {
				return usageErr("%s: %v", o.config, err)
			}
			fmt.Fprint(out, text)
			if noDiff {
				return nil
			}
			ctx := cmd.Context()
			k := o.kernel()
			canon, err := k.Canonical(ctx, text)
			if err != nil {
				fmt.Fprintf(out, "\n# diff against the live table not available: %v\n", err)
				return nil
			}
			live, exists, err := k.ListTable(ctx, true)
			if err != nil {
				fmt.Fprintf(out, "\n# diff against the live table not available: %v\n", err)
				return nil
			}
			if !exists {
				fmt.Fprintf(out, "\n# live: no table %s %s yet; apply creates it\n", policy.TableFamily, policy.TableName)
				return nil
			}
			d := policy.Diff("live", "plan", live, canon)
			if d == "" {
				fmt.Fprintln(out, "\n# live: identical to this plan")
				return nil
			}
			fmt.Fprintf(out, "\n# diff: live table -> this plan (nft's own listing of each)\n%s", d)
			return nil
		},
	}
	c.Flags().StringVar(&format, "format", "nft", "nft, iptables or ip6tables (restore text for legacy hosts)")
	c.Flags().BoolVar(&noDiff, "no-diff", false, "do not compare with the live table")
	return c
}

func applyCmd(o *firewallOpts) *cobra.Command {
	var force, asJSON bool
	var within time.Duration
	c := &cobra.Command{
		Use:   "apply",
		Short: "Load the policy in one transaction and arm an automatic rollback unless confirmed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.loadPolicy()
			if err != nil {
				return err
			}
			if within < 5*time.Second {
				return usageErr("--confirm-within %s is too short to type the confirm command (at least 5s)", within)
			}
			text, err := policy.PlanText(cfg)
			if err != nil {
				return usageErr("%s: %v", o.config, err)
			}
			ctx := cmd.Context()
			k := o.kernel()
			out := cmd.OutOrStdout()
			sessions := k.LiveSessions(ctx, os.Getenv("SSH_CONNECTION"), cfg.Services.SSH.Port, 22)
			if locked := policy.CheckLockout(cfg, sessions); len(locked) > 0 {
				var sb strings.Builder
				for _, l := range locked {
					fmt.Fprintf(&sb, "\n  admin session from %s would be cut: %s", l.Session, l.Fix)
				}
				if !force {
					return &exitError{code: exitFindings, err: fmt.Errorf("refusing to apply: the policy would lock out the administrator:%s\n(--force applies anyway; the automatic rollback still runs)", sb.String())}
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "pbxguard: warning: --force: applying although%s\n", sb.String())
			}
			st := o.state(cmd)
			res, err := policy.Apply(ctx, k, st, text, time.Now(), within)
			if err != nil {
				return failErr(err)
			}
			pid, err := spawnRollback(o, res.Pending)
			if err != nil {
				// the policy is live without a waiter: roll back now
				if _, rerr := policy.Rollback(ctx, k, st, res.Pending.ID); rerr != nil {
					return failErr(fmt.Errorf("starting the rollback waiter: %v; rolling back also failed: %w", err, rerr))
				}
				return failErr(fmt.Errorf("starting the rollback waiter failed, the previous policy is back: %w", err))
			}
			res.Pending.PID = pid
			_ = st.SavePending(res.Pending)
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					*policy.Pending
					StateDir     string `json:"state_dir"`
					KeptPrevious bool   `json:"kept_previous"`
				}{res.Pending, st.Dir, res.KeptPrevious})
			}
			fmt.Fprintf(out, "applied the policy from %s (table %s %s)\n", o.config, policy.TableFamily, policy.TableName)
			if res.KeptPrevious {
				fmt.Fprintln(out, "an earlier apply was not confirmed yet: the rollback still returns to the ruleset before it")
			}
			fmt.Fprintf(out, "rollback armed: unless you run `pbxguard firewall confirm` by %s (%s from now), the previous ruleset comes back\n",
				res.Pending.Deadline.Local().Format(time.TimeOnly), within)
			fmt.Fprintf(out, "test a NEW ssh login in another terminal before confirming\n")
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "apply even if the current SSH session would be cut (the rollback still runs)")
	durationFlag(c, &within, "confirm-within", 60*time.Second, 0, "roll back unless confirmed within this time")
	c.Flags().BoolVar(&asJSON, "json", false, "print the armed rollback (id, deadline, waiter pid, state dir) as JSON")
	return c
}

// spawnRollback starts `pbxguard firewall rollback --at` detached from the
// terminal (new session, stdio closed) so it survives the SSH session.
func spawnRollback(o *firewallOpts, p *policy.Pending) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	args := []string{"firewall", "rollback", "--at", p.Deadline.Format(time.RFC3339Nano), "--id", p.ID, "--state-dir", o.stateDir}
	if o.netns != "" {
		args = append(args, "--netns", o.netns)
	}
	cmd := exec.Command(self, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil { // Stdin/Stdout/Stderr nil: /dev/null
		return 0, err
	}
	pid := cmd.Process.Pid
	return pid, cmd.Process.Release()
}

func confirmCmd(o *firewallOpts) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "confirm",
		Short: "Keep the applied policy: disarm the automatic rollback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := policy.Confirm(o.state(cmd))
			if err != nil {
				return failErr(err)
			}
			stopWaiter(p)
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"confirmed": true, "applied_at": p.AppliedAt, "id": p.ID})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "confirmed: the policy applied at %s stays; rollback disarmed\n", p.AppliedAt.Local().Format(time.TimeOnly))
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// stopWaiter ends the sleeping rollback waiter of a confirmed apply. It
// would do nothing when it wakes (the pending file is gone); ending it is
// tidiness. The process is checked by its command line (which carries the
// apply's id) so that a reused PID is never signalled.
func stopWaiter(p *policy.Pending) {
	if p.PID <= 0 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil || !strings.Contains(string(cmdline), "rollback") || !strings.Contains(string(cmdline), p.ID) {
		return
	}
	_ = syscall.Kill(p.PID, syscall.SIGTERM)
}

func rollbackCmd(o *firewallOpts) *cobra.Command {
	var at, id string
	var ifPending, boot, asJSON bool
	c := &cobra.Command{
		Use:   "rollback",
		Short: "Restore the ruleset from before the last unconfirmed apply",
		Long: `Without flags, restores now the ruleset saved by the last unconfirmed apply.
--at TIME --id ID is what apply starts in the background: it waits until TIME
and rolls back only if that apply is still unconfirmed. --if-pending (for a
boot unit) rolls back only if a rollback was pending when the machine went
down; --boot does the same and otherwise loads the last confirmed policy.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			k, st := o.kernel(), o.state(cmd)
			out := cmd.OutOrStdout()
			if at != "" {
				deadline, err := time.Parse(time.RFC3339Nano, at)
				if err != nil {
					return usageErr("--at %q: use RFC 3339 time like 2026-11-25T21:00:00Z", at)
				}
				return waitAndRollback(ctx, k, st, deadline, id)
			}
			p, err := st.PendingRollback()
			if err != nil {
				return failErr(err)
			}
			if p == nil {
				if boot {
					ok, err := policy.LoadConfirmed(ctx, k, st)
					if err != nil {
						return failErr(fmt.Errorf("loading the confirmed policy: %w", err))
					}
					if asJSON {
						return writeJSON(out, map[string]any{"rolled_back": false, "loaded_confirmed": ok})
					}
					if ok {
						fmt.Fprintln(out, "no rollback pending: loaded the last confirmed policy")
					}
					return nil
				}
				if ifPending {
					if asJSON {
						return writeJSON(out, map[string]any{"rolled_back": false})
					}
					return nil
				}
				return failErr(errors.New("no rollback is pending (nothing applied since the last confirm)"))
			}
			if _, err := policy.Rollback(ctx, k, st, ""); err != nil {
				return failErr(err)
			}
			if asJSON {
				return writeJSON(out, map[string]any{"rolled_back": true, "applied_at": p.AppliedAt, "id": p.ID})
			}
			fmt.Fprintf(out, "rolled back the policy applied at %s\n", p.AppliedAt.Local().Format(time.DateTime))
			return nil
		},
	}
	c.Flags().StringVar(&at, "at", "", "wait until this time, then roll back if still unconfirmed (used by apply)")
	c.Flags().StringVar(&id, "id", "", "the apply this waiter belongs to (used by apply)")
	c.Flags().BoolVar(&ifPending, "if-pending", false, "roll back only if a rollback is pending (boot unit); exit 0 otherwise")
	c.Flags().BoolVar(&boot, "boot", false, "like --if-pending, and load the last confirmed policy when nothing was pending")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// waitAndRollback is the detached waiter. Its stdio is closed, so it logs
// to policy-rollback.log in the state directory.
func waitAndRollback(ctx context.Context, k policy.Kernel, st policy.State, deadline time.Time, id string) error {
	logf, err := os.OpenFile(st.Dir+"/policy-rollback.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	var w io.Writer = io.Discard
	if err == nil {
		defer logf.Close()
		w = logf
	}
	log := slog.New(slog.NewTextHandler(w, nil))
	log.Info("rollback waiter started", "id", id, "deadline", deadline, "pid", os.Getpid())
	if d := time.Until(deadline); d > 0 {
		time.Sleep(d)
	}
	done, err := policy.Rollback(ctx, k, st, id)
	if err != nil {
		log.Error("rollback failed", "id", id, "err", err)
		return failErr(err)
	}
	if done {
		log.Warn("policy not confirmed in time: rolled back", "id", id)
	} else {
		log.Info("nothing to roll back (confirmed or superseded)", "id", id)
	}
	return nil
}

func showCmd(o *firewallOpts) *cobra.Command {
	var asJSON, all bool
	c := &cobra.Command{
		Use:   "show",
		Short: "Live counters per rule and the guard sets of the policy table",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, exists, err := o.kernel().ListJSON(cmd.Context())
			if err != nil {
				return failErr(err)
			}
			out := cmd.OutOrStdout()
			if !exists {
				if asJSON {
					fmt.Fprintln(out, `{"rules":[],"sets":[]}`)
					return nil
				}
				fmt.Fprintf(out, "no policy table (%s %s): run pbxguard firewall apply\n", policy.TableFamily, policy.TableName)
				return nil
			}
			live, err := policy.ParseLive(data)
			if err != nil {
				return failErr(err)
			}
			if !all {
				var keep []policy.LiveRule
				for _, r := range live.Rules {
					if r.Chain != "sip_scanner" || r.Packets > 0 {
						keep = append(keep, r)
					}
				}
				live.Rules = keep
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(live)
			}
			fmt.Fprintf(out, "%10s %12s  %-7s  %s\n", "PACKETS", "BYTES", "VERDICT", "RULE: WHY")
			for _, r := range live.Rules {
				fmt.Fprintf(out, "%10d %12d  %-7s  %s\n", r.Packets, r.Bytes, r.Verdict, r.Comment)
			}
			fmt.Fprintln(out, "\nsets (guard sets hold the sources being dropped):")
			for _, s := range live.Sets {
				members := ""
				if strings.Contains(s.Name, "ban") && s.Elements > 0 {
					m := s.Members
					if len(m) > 10 {
						m = append(m[:10:10], "...")
					}
					members = "  " + strings.Join(m, " ")
				}
				fmt.Fprintf(out, "  %-16s %6d%s\n", s.Name, s.Elements, members)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	c.Flags().BoolVar(&all, "all", false, "also list the per-offset SIP User-Agent rules that matched nothing")
	return c
}

func removeCmd(o *firewallOpts) *cobra.Command {
	var keepBans, asJSON bool
	c := &cobra.Command{
		Use:   "remove",
		Short: "Delete what pbxguard made in the kernel (the policy table; the daemon's nftables table, ipsets, iptables chains and jumps) and forget the policy state; other tables stay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := o.kernel().DeleteTable(ctx); err != nil {
				return failErr(err)
			}
			if err := policy.Forget(o.state(cmd)); err != nil {
				return failErr(fmt.Errorf("policy table removed, but the state in %s could not be cleared: %w", o.stateDir, err))
			}
			out := cmd.OutOrStdout()
			result := struct {
				Policy  string   `json:"policy_removed"`
				Removed []string `json:"bans_removed"`
				Error   string   `json:"error,omitempty"`
			}{Policy: policy.TableFamily + " " + policy.TableName, Removed: []string{}}
			if !asJSON {
				fmt.Fprintf(out, "removed table %s %s (the hardened policy); no rollback pending any more\n", policy.TableFamily, policy.TableName)
			}
			if keepBans {
				if asJSON {
					return writeJSON(out, result)
				}
				return nil
			}
			// Every backend's objects, whichever backend made them.
			removed, err := firewall.RemoveAll(ctx, firewall.Options{NetNS: o.netns, Logger: slog.Default()})
			result.Removed = append(result.Removed, removed...)
			if err != nil {
				result.Error = err.Error()
			}
			if asJSON {
				if werr := writeJSON(out, result); werr != nil {
					return failErr(werr)
				}
				if err != nil {
					return failErr(fmt.Errorf("policy removed; the daemon's bans were not all removed: %w", err))
				}
				return nil
			}
			for _, r := range removed {
				fmt.Fprintf(out, "%s (the daemon's bans) is gone\n", r)
			}
			if err != nil {
				return failErr(fmt.Errorf("policy removed; the daemon's bans were not all removed: %w", err))
			}
			if len(removed) == 0 {
				fmt.Fprintln(out, "no ban table, ipset or iptables chain of pbxguard was there")
				return nil
			}
			fmt.Fprintln(out, "a running daemon puts its bans back within seconds (stop it first to keep them out)")
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&keepBans, "keep-bans", false, "remove only the policy table, keep the daemon's ban table")
	return c
}
