package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/instance"
	"github.com/pbxguard/pbxguard/internal/preflight"
	"github.com/pbxguard/pbxguard/internal/systemd"
)

// daemonCommands returns run, status, bans, ban and unban.
func daemonCommands() []*cobra.Command {
	return []*cobra.Command{daemonRunCmd(), statusCmd(), bansCmd(), banCmd(), unbanCmd()}
}

func daemonRunCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: follow the logs, ban attackers in the kernel firewall",
		Long: `Run the daemon in the foreground (systemd runs it as deploy/pbxguard.service).
It follows the jails' logs, bans in the kernel firewall, keeps its state in
state_dir, answers 'pbxguard status/bans/ban/unban' on the control socket and
serves Prometheus /metrics. SIGTERM or SIGINT stop it cleanly; bans stay in
the kernel with their timeouts and are restored at the next start. SIGHUP
(systemctl reload pbxguard) re-reads the configuration: bans and log
positions are kept, jails whose settings changed start afresh; a broken
file is logged and the running configuration stays.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The same preflight as 'config check': every error of every
			// section, and what this host lacks, before anything is touched.
			cfg, err := preflightRun(cmd.ErrOrStderr(), cfgPath)
			if err != nil {
				return err
			}
			log := slog.Default()
			// One daemon per state directory: the lock comes before the
			// store is opened and before the kernel is touched, so a second
			// 'pbxguard run' changes nothing (exit 3, naming the PID).
			lock, err := instance.Acquire(cfg.StateDir)
			if err != nil {
				return failErr(err)
			}
			defer lock.Release()
			// Type=notify: READY=1 once the kernel holds every restored ban
			// (after the first start; a SIGHUP rebuild needs no new READY).
			var ready sync.Once
			notifyReady := func() {
				ready.Do(func() {
					if _, err := systemd.Notify("READY=1\nSTATUS=protecting: every stored ban is in the kernel"); err != nil {
						log.Warn("telling systemd the daemon is ready", "err", err)
					}
				})
			}
			b, err := daemon.Build(cfg, daemon.BuildOptions{Logger: log, Ready: notifyReady})
			if err != nil {
				return failErr(err)
			}
			defer b.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default: // one pending reload is enough
					}
				}
			}()
			load := func() (*config.Config, error) {
				r := preflight.Check(cfgPath, preflight.Options{})
				if !r.OK() {
					return nil, r.Err()
				}
				for _, w := range r.Warnings {
					log.Warn(strings.TrimPrefix(w.Error(), "config: "))
				}
				return r.Config, nil
			}
			err = b.Serve(ctx, reload, load)
			systemd.Notify("STOPPING=1")
			if err != nil {
				return failErr(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", defaultConfigPath, "configuration file")
	return cmd
}

// preflightRun checks the configuration for `run`: errors are printed and
// exit 2; warnings are logged.
func preflightRun(stderr io.Writer, path string) (*config.Config, error) {
	r := preflight.Check(path, preflight.Options{})
	if !r.OK() {
		for _, e := range r.Errors {
			fmt.Fprintln(stderr, e.Error())
		}
		return nil, usageErr("%s: %d error(s); check it with: pbxguard config check %s", path, len(r.Errors), path)
	}
	for _, w := range r.Warnings {
		slog.Warn(strings.TrimPrefix(w.Error(), "config: "))
	}
	return r.Config, nil
}

// loadConfig reads the config; required=false tolerates a missing default file.
func loadConfig(stderr io.Writer, path string, required bool) (*config.Config, error) {
	cfg, err := config.Load(path, config.Options{})
	if err == nil {
		return cfg, nil
	}
	var es config.Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(stderr, e.Error())
		}
		return nil, usageErr("%s: %d error(s); check it with: pbxguard config check %s", path, len(es), path)
	}
	if !required {
		return nil, nil
	}
	return nil, usageErr("%v", err)
}

// socketFlags adds --socket and --config to a command that talks to the daemon.
type socketFlags struct {
	socket string
	config string
}

func (s *socketFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.socket, "socket", "", "control socket (default: control.socket of the config, else "+config.DefaultSocket+")")
	cmd.Flags().StringVarP(&s.config, "config", "c", "", "configuration file to read the socket path from (default "+defaultConfigPath+" if present)")
}

func (s *socketFlags) client(cmd *cobra.Command) (*daemon.Client, error) {
	if s.socket != "" {
		return daemon.NewClient(s.socket), nil
	}
	path, required := s.config, true
	if path == "" {
		path, required = defaultConfigPath, false
		if _, err := os.Stat(path); err != nil {
			return daemon.NewClient(config.DefaultSocket), nil
		}
	}
	cfg, err := loadConfig(cmd.ErrOrStderr(), path, required)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return daemon.NewClient(config.DefaultSocket), nil
	}
	return daemon.NewClient(cfg.Control.Socket), nil
}

// daemonErr maps a client error to the exit code contract.
func daemonErr(err error) error {
	if errors.Is(err, daemon.ErrUnreachable) {
		return failErr(err)
	}
	if errors.Is(err, daemon.ErrRefused) {
		return &exitError{code: exitFindings, err: err}
	}
	if errors.Is(err, daemon.ErrUsage) {
		return &exitError{code: exitUsage, err: err}
	}
	return failErr(err)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusCmd() *cobra.Command {
	var sf socketFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running daemon's state: jails, lines, events, bans, ban latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := sf.client(cmd)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return daemonErr(err)
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(w, st)
			}
			printStatus(w, st)
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printStatus writes `pbxguard status` for people.
func printStatus(w io.Writer, st daemon.Status) {
	fmt.Fprintf(w, "pbxguard running since %s (up %s), firewall %s, %d active ban(s)\n",
		st.Started.Local().Format("2006-01-02 15:04:05"), config.FormatDuration(time.Duration(st.Uptime*float64(time.Second))), st.Backend, st.ActiveBans)
	printKernel(w, st)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JAIL\tLINES\tEVENTS\tBANS\tSOURCES")
	for _, j := range st.Jails {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\n", j.Name, j.Lines, j.Events, j.ActiveBans, strings.Join(j.Sources, ", "))
	}
	tw.Flush()
	for _, j := range st.Jails {
		for _, s := range j.SourceStates {
			if s.State != "ok" {
				fmt.Fprintf(w, "source %s of jail %s: %s since %s: %s\n", s.Name, j.Name, strings.ToUpper(s.State),
					s.Since.Local().Format("2006-01-02 15:04:05"), s.Error)
			}
		}
	}
	if s := st.Store; s.Recovered != "" {
		fmt.Fprintf(w, "STORE WAS CORRUPT: moved aside to %s at start; bans were rebuilt from the kernel\n", s.Recovered)
	}
	if s := st.Store; !s.OK {
		fmt.Fprintf(w, "STORE FAILING since %s (%d error(s), %d ban(s) in the kernel waiting to be saved, retried): %s\n",
			s.Since.Local().Format("2006-01-02 15:04:05"), s.Errors, s.PendingBans, s.LastError)
	}
	if a := st.Audit; a != nil && a.Enabled {
		if a.Error != "" {
			fmt.Fprintf(w, "asterisk config audit: not run: %s\n", a.Error)
		} else {
			f := a.Findings
			fmt.Fprintf(w, "asterisk config audit of %s: %d critical, %d high, %d medium, %d low, %d info (details: pbxguard audit --asterisk-dir %s)\n",
				a.Dir, f["critical"], f["high"], f["medium"], f["low"], f["info"], a.Dir)
		}
	}
	for _, wk := range st.Workers {
		name := wk.Name
		if name == "ami" {
			name = "AMI (fraud monitoring, source: ami jails)"
		}
		since := wk.Since.Local().Format("2006-01-02 15:04:05")
		if wk.Up {
			fmt.Fprintf(w, "%s: connected since %s\n", name, since)
		} else if wk.LastError != "" {
			fmt.Fprintf(w, "%s: DOWN since %s: %s\n", name, since, wk.LastError)
		} else {
			fmt.Fprintf(w, "%s: DOWN since %s (not connected yet)\n", name, since)
		}
	}
	if st.Latency.Count > 0 {
		fmt.Fprintf(w, "line-to-kernel ban latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms (%d bans)\n",
			st.Latency.P50ms, st.Latency.P99ms, st.Latency.Maxms, st.Latency.Count)
	}
}

// printKernel says whether the kernel holds what the store says.
func printKernel(w io.Writer, st daemon.Status) {
	k := st.Kernel
	switch {
	case !k.Checked:
		fmt.Fprintf(w, "kernel: not checked (firewall %s)\n", st.Backend)
	case k.InSync:
		fmt.Fprintf(w, "kernel: in sync with the store")
		if k.Heals > 0 {
			fmt.Fprintf(w, " (restored %d time(s), last %s)", k.Heals, k.LastHeal.Local().Format("2006-01-02 15:04:05"))
		}
		fmt.Fprintln(w)
	default:
		fmt.Fprintf(w, "kernel: OUT OF SYNC since %s: %s; the bans listed are NOT all enforced\n",
			k.OutOfSyncSince.Local().Format("2006-01-02 15:04:05"), strings.Join(k.Missing, "; "))
	}
	if k.LastError != "" {
		fmt.Fprintf(w, "last firewall error (%s): %s\n", k.LastErrAt.Local().Format("2006-01-02 15:04:05"), k.LastError)
	}
}

func bansCmd() *cobra.Command {
	var sf socketFlags
	var asJSON, withEvidence bool
	cmd := &cobra.Command{
		Use:   "bans",
		Short: "List active bans (addr, jail, reason, since, until, count)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := sf.client(cmd)
			if err != nil {
				return err
			}
			bans, err := c.Bans(cmd.Context())
			if err != nil {
				return daemonErr(err)
			}
			if bans == nil {
				bans = []daemon.BanInfo{}
			}
			if withEvidence {
				return printBansEvidence(cmd.Context(), cmd, &sf, bans, asJSON)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), bans)
			}
			printBans(cmd.OutOrStdout(), bans)
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&withEvidence, "evidence", false, "show each ban's evidence (rule, window, log lines; reads state_dir)")
	return cmd
}

func printBans(w io.Writer, bans []daemon.BanInfo) {
	if len(bans) == 0 {
		fmt.Fprintln(w, "no active bans")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDR\tJAIL\tREASON\tSINCE\tUNTIL\tLEFT\tCOUNT")
	for _, b := range bans {
		addr := b.Addr
		if p, err := netip.ParsePrefix(b.Prefix); err == nil && p.Bits() != p.Addr().BitLen() {
			addr = b.Prefix
		}
		until, left := b.Until.Local().Format("01-02 15:04:05"), config.FormatDuration(time.Duration(b.Remaining*float64(time.Second)))
		if b.Permanent {
			until, left = "permanent", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", addr, b.Jail, b.Reason,
			b.Since.Local().Format("01-02 15:04:05"), until, left, b.Count)
	}
	tw.Flush()
}

func parseAddrArg(s string) (netip.Prefix, error) {
	p, err := config.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, usageErr("%q is not an address or prefix (write 203.0.113.7 or 2001:db8::/64)", s)
	}
	return p, nil
}

func banCmd() *cobra.Command {
	var sf socketFlags
	var dur, jailName, reason string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ban ADDR|PREFIX",
		Short: "Ban an address or prefix by hand (refused for allowlisted ones)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseAddrArg(args[0])
			if err != nil {
				return err
			}
			var d time.Duration
			if dur != "" {
				if d, err = config.ParseBanTime(dur); err != nil || d <= 0 {
					return usageErr("--for %q is not a duration from 1s to %s (try 1h, 30m, 1w, or permanent)", dur, config.FormatDuration(config.MaxDuration))
				}
			}
			c, err := sf.client(cmd)
			if err != nil {
				return err
			}
			b, err := c.Ban(cmd.Context(), p, d, jailName, reason)
			if err != nil {
				return daemonErr(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), b)
			}
			until := "until " + b.Until.Local().Format("2006-01-02 15:04:05")
			if b.Permanent {
				until = "permanently"
			}
			if b.Kept {
				fmt.Fprintf(cmd.OutOrStdout(), "%s stays banned %s (jail %s, %s): a ban is never shortened; unban it first to shorten\n",
					b.Prefix, until, b.Jail, b.Reason)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "banned %s (jail %s) %s\n", b.Prefix, b.Jail, until)
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().StringVar(&dur, "for", "", "ban duration, or permanent (default: the jail's bantime, 1h for manual); a longer ban in force is kept")
	cmd.Flags().StringVar(&jailName, "jail", "", "jail to file the ban under: a configured jail or manual (default manual)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (shown by pbxguard bans)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func unbanCmd() *cobra.Command {
	var sf socketFlags
	var asJSON, all bool
	var jailName string
	cmd := &cobra.Command{
		Use:   "unban ADDR|PREFIX | unban --all [--jail J]",
		Short: "Lift the bans covering an address or prefix, or every ban (of one jail)",
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case all && len(args) > 0:
				return usageErr("unban --all takes no address")
			case !all && len(args) != 1:
				return usageErr("unban takes one address or prefix, or --all")
			case !all && jailName != "":
				return usageErr("--jail goes with --all")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var p netip.Prefix
			if !all {
				var err error
				if p, err = parseAddrArg(args[0]); err != nil {
					return err
				}
			}
			c, err := sf.client(cmd)
			if err != nil {
				return err
			}
			var gone []daemon.BanInfo
			if all {
				gone, err = c.UnbanAll(cmd.Context(), jailName)
			} else {
				gone, err = c.Unban(cmd.Context(), p)
			}
			if err != nil {
				return daemonErr(err)
			}
			if gone == nil {
				gone = []daemon.BanInfo{}
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), gone)
			}
			if len(gone) == 0 && all {
				fmt.Fprintln(cmd.OutOrStdout(), "no active bans to lift")
				return nil
			}
			if len(gone) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s was not banned (any kernel entry removed anyway)\n", p)
				return nil
			}
			for _, b := range gone {
				fmt.Fprintf(cmd.OutOrStdout(), "unbanned %s (jail %s)\n", b.Prefix, b.Jail)
			}
			return nil
		},
	}
	sf.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&all, "all", false, "lift every active ban")
	cmd.Flags().StringVar(&jailName, "jail", "", "with --all: only the bans of this jail (or manual, fraud)")
	return cmd
}
