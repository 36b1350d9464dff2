package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/confyaml"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/preflight"
)

// defaultConfigPath is where `pbxguard run` looks without --config.
const defaultConfigPath = "/etc/pbxguard/pbxguard.yaml"

// configCommands returns the `config` group.
func configCommands() []*cobra.Command {
	cfgCmd := &cobra.Command{
		Use:   "config",
		Short: "Check pbxguard's configuration file",
	}
	var asJSON, strict bool
	check := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Check a configuration file: exit 0 when usable, 2 with line-numbered errors",
		Long: `Check a configuration file (default ` + defaultConfigPath + `) the way
'pbxguard run' checks it at start (the same preflight), and show what pbxguard
would do with it: jails, their files, the allowlist, the backend.

Every error of every section (the core keys, firewall.policy, fraud) is shown
in one pass, each with its line number and what to write instead, then what
the daemon would trip over on this host: an AMI secret file that is missing,
empty or a directory, an AMI address without a port, a state_dir that cannot
be created, a followed path that is a directory or a FIFO. What can appear
later (a log or CDR file not written yet) is a warning.

Exit codes: 0 the file is usable (warnings may be printed); 1 with --strict
when there are warnings; 2 when it is not usable ('pbxguard run' refuses it).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := defaultConfigPath
			if len(args) == 1 {
				path = args[0]
			}
			return runConfigCheck(cmd.OutOrStdout(), path, asJSON, strict)
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	check.Flags().BoolVar(&strict, "strict", false, "exit 1 when there are warnings")
	cfgCmd.AddCommand(check)
	return []*cobra.Command{cfgCmd}
}

type checkJSON struct {
	OK        bool         `json:"ok"`
	Exit      int          `json:"exit"`
	File      string       `json:"file"`
	Errors    []checkError `json:"errors"`
	Warnings  []checkError `json:"warnings"`
	Backend   string       `json:"backend,omitempty"`
	StateDir  string       `json:"state_dir,omitempty"`
	Socket    string       `json:"socket,omitempty"`
	Metrics   string       `json:"metrics,omitempty"`
	Allowlist []string     `json:"allowlist,omitempty"`
	// Trunks are the addresses allowlist_asterisk_trunks adds at start.
	Trunks        []daemon.Trunk        `json:"asterisk_trunks,omitempty"`
	TrunksSkipped []daemon.SkippedTrunk `json:"asterisk_trunks_skipped,omitempty"`
	Jails         []checkedJail         `json:"jails,omitempty"`
}

type checkError struct {
	Line    int    `json:"line,omitempty"`
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
	Suggest string `json:"did_you_mean,omitempty"`
}

type checkedJail struct {
	Name       string   `json:"name"`
	Enabled    bool     `json:"enabled"`
	Detector   string   `json:"detector"`
	Files      []string `json:"files,omitempty"`
	Journal    []string `json:"journal,omitempty"`
	MaxRetry   int      `json:"maxretry"`
	FindTime   string   `json:"findtime"`
	BanTime    string   `json:"bantime"`
	MaxBanTime string   `json:"maxbantime"`
}

func toCheckErrors(es confyaml.Errors) []checkError {
	out := []checkError{}
	for _, e := range es {
		out = append(out, checkError{Line: e.Line, Key: e.Key, Message: e.Message(), Suggest: e.Suggest})
	}
	return out
}

// warningText writes a warning for people: "warning: line 4: key: msg".
func warningText(e confyaml.Error) string {
	return "warning: " + strings.TrimPrefix(e.Error(), "config: ")
}

func runConfigCheck(w io.Writer, path string, asJSON, strict bool) error {
	r := preflight.Check(path, preflight.Options{})
	c := r.Config
	out := checkJSON{File: path, OK: r.OK(), Errors: toCheckErrors(r.Errors), Warnings: toCheckErrors(r.Warnings)}
	if c != nil && out.OK {
		out.Backend, out.StateDir, out.Socket, out.Metrics = c.Firewall.Backend, c.StateDir, c.Control.Socket, c.Metrics.Listen
		for _, p := range c.Allowlist {
			out.Allowlist = append(out.Allowlist, p.String())
		}
		if c.AllowlistAsteriskTrunks {
			trunks, skipped, err := daemon.AsteriskTrunks(c.Audit.AsteriskDir)
			if err != nil {
				wn := confyaml.Error{Key: "allowlist_asterisk_trunks", Line: c.Lines["allowlist_asterisk_trunks"],
					Msg: fmt.Sprintf("%v (set audit.asterisk_dir, or allowlist_asterisk_trunks: false)", err)}
				r.Warnings = append(r.Warnings, wn)
				out.Warnings = append(out.Warnings, toCheckErrors(confyaml.Errors{wn})...)
			}
			out.Trunks, out.TrunksSkipped = trunks, skipped
		}
		for _, j := range c.Jails {
			out.Jails = append(out.Jails, checkedJail{Name: j.Name, Enabled: j.Enabled, Detector: j.Detector, Files: j.Files,
				Journal: j.Journal, MaxRetry: j.MaxRetry, FindTime: config.FormatDuration(j.FindTime),
				BanTime: config.FormatBanTime(j.BanTime), MaxBanTime: config.FormatBanTime(j.MaxBanTime)})
		}
	}
	out.Exit = r.Code(strict)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		for _, e := range r.Errors {
			fmt.Fprintln(w, e.Error())
		}
		for _, wn := range r.Warnings {
			fmt.Fprintln(w, warningText(wn))
		}
		if out.OK {
			fmt.Fprintf(w, "%s: ok\n", path)
			fmt.Fprintf(w, "  backend %s, state %s, control %s, metrics %s\n", out.Backend, out.StateDir, out.Socket, orOff(out.Metrics))
			fmt.Fprintf(w, "  allowlist %s\n", strings.Join(out.Allowlist, ", "))
			for _, t := range out.Trunks {
				fmt.Fprintf(w, "  allowlist (asterisk trunk) %s: %s [%s] at %s\n", t.Prefix, t.Kind, t.Section, t.At)
			}
			for _, t := range out.TrunksSkipped {
				fmt.Fprintf(w, "  not allowlisted (asterisk trunk) %s: %s [%s] at %s: %s\n", t.Value, t.Kind, t.Section, t.At, t.Why)
			}
			for _, j := range out.Jails {
				state := "on"
				if !j.Enabled {
					state = "off"
				}
				from := strings.Join(j.Files, ", ")
				if len(j.Journal) > 0 {
					from = strings.TrimPrefix(from+", journal "+strings.Join(j.Journal, " "), ", ")
				}
				fmt.Fprintf(w, "  jail %s (%s): detector %s, %d in %s bans for %s (up to %s), from %s\n",
					j.Name, state, j.Detector, j.MaxRetry, j.FindTime, j.BanTime, j.MaxBanTime, from)
			}
		} else {
			fmt.Fprintf(w, "%s: %d error(s); pbxguard run refuses it\n", path, len(r.Errors))
		}
	}
	if out.Exit != 0 {
		return &exitError{code: out.Exit}
	}
	return nil
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}
