// Command pbxguard protects an Asterisk server: it detects attacks in logs
// and calls, bans in the kernel firewall, hardens the firewall policy,
// contains toll fraud and audits the Asterisk configuration.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/systemd"
	"github.com/pbxguard/pbxguard/internal/version"
)

// Exit codes. They are part of the CLI contract.
const (
	exitOK       = 0
	exitFindings = 1 // the command ran and found something (audit findings, a check that failed)
	exitUsage    = 2 // unusable arguments, unreadable input, broken config
	exitFailure  = 3 // the command could not do its job (daemon unreachable, kernel refused)
)

// exitError carries an exit code through cobra to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as a usage error (exit 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// failErr marks err as a failure to do the job (exit 3).
func failErr(err error) error { return &exitError{code: exitFailure, err: err} }

// commandGroups is the explicit list of command groups, one file each.
var commandGroups = []func() []*cobra.Command{
	testLogCommands,
	daemonCommands,
	configCommands,
	demoCommands,
	firewallCommands,
	incidentCommands,
	auditCommands,
	versionCommands,
	generateCommands,
	importCommands,
	evidenceCommands,
	clusterCommands,
}

func newRootCmd() *cobra.Command {
	var logLevel string
	root := &cobra.Command{
		Use:           "pbxguard",
		Short:         "Protect an Asterisk PBX: ban attackers, harden the firewall, stop toll fraud, audit the config",
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErr("--log-level %q: use debug, info, warn or error", logLevel)
			}
			if cmd.ErrOrStderr() == os.Stderr && systemd.StderrIsJournal() {
				// journald stamps each line and reads the priority from a
				// <N> prefix: no second timestamp, no level word.
				slog.SetDefault(slog.New(systemd.NewJournalHandler(os.Stderr, lvl)))
			} else {
				slog.SetDefault(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: lvl})))
			}
			return nil
		},
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})
	for _, group := range commandGroups {
		for _, c := range group() {
			root.AddCommand(c)
		}
	}
	strictGroups(root)
	addCompletions(root)
	return root
}

// strictGroups makes a command group (a command that only holds
// subcommands) refuse an unknown subcommand with exit 2 and a suggestion,
// instead of printing its help and exiting 0: `pbxguard firewall aply`
// in a script must fail.
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
	if c.Parent() == nil || !c.HasSubCommands() || c.Run != nil || c.RunE != nil {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return usageErr("%s; run '%s --help' for the list", msg, cmd.CommandPath())
	}
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "pbxguard:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "pbxguard:", err)
	// cobra's own argument errors (unknown command, wrong arg count) are usage errors.
	return exitUsage
}

// jsonFlag is --json on a command whose output is chosen by --format: it
// sets the format to json (the one spelling every command accepts).
type jsonFlag struct{ format *string }

func (j jsonFlag) String() string { return "false" }
func (j jsonFlag) Type() string   { return "bool" }
func (j jsonFlag) Set(s string) error {
	switch s {
	case "true", "1":
		*j.format = "json"
	case "false", "0":
	default:
		return fmt.Errorf("--json takes no value")
	}
	return nil
}

// addJSONFlag adds --json as an alias of --format json.
func addJSONFlag(cmd *cobra.Command, format *string) {
	cmd.Flags().Var(jsonFlag{format}, "json", "print JSON (same as --format json)")
	cmd.Flags().Lookup("json").NoOptDefVal = "true"
}
