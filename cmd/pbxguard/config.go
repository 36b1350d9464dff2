package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/daemon"
	"github.com/pbxguard/pbxguard/internal/fraud"
	"github.com/pbxguard/pbxguard/internal/policy"
)

// defaultConfigPath is where `pbxguard run` looks without --config.
const defaultConfigPath = "/etc/pbxguard/pbxguard.yaml"

// configCommands returns the `config` group.
func configCommands() []*cobra.Command {
	cfgCmd := &cobra.Command{
		Use:   "config",
		Short: "Check pbxguard's configuration file",
	}
	var asJSON bool
	check := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Check a configuration file: exit 0 when usable, 2 with line-numbered errors",
		Long: `Check a configuration file (default ` + defaultConfigPath + `) and show what
pbxguard would do with it: jails, their files, the allowlist, the backend.
Errors carry the line number and what to write instead. Exit 0 when the file
is usable, 2 when it is not.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := defaultConfigPath
			if len(args) == 1 {
				path = args[0]
			}
			return runConfigCheck(cmd.OutOrStdout(), path, asJSON)
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cfgCmd.AddCommand(check)
	return []*cobra.Command{cfgCmd}
}

type checkJSON struct {
	OK        bool         `json:"ok"`
	File      string       `json:"file"`
	Errors    []checkError `json:"errors"`
	Warnings  []string     `json:"warnings"`
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

func runConfigCheck(w io.Writer, path string, asJSON bool) error {
	c, err := config.Load(path, config.Options{})
	out := checkJSON{File: path, Errors: []checkError{}, Warnings: []string{}}
	var es config.Errors
	switch {
	case err == nil:
		out.OK = true
	case errors.As(err, &es):
		for _, e := range es {
			out.Errors = append(out.Errors, checkError{Line: e.Line, Key: e.Key, Message: e.Msg})
		}
	default:
		out.Errors = append(out.Errors, checkError{Message: err.Error()})
	}
	if c != nil && out.OK {
		// The sections other packages own: check them too.
		sectionErr := func(err error) {
			var se *fraud.SettingsError
			for _, e := range flatten(err) {
				if errors.As(e, &se) {
					out.Errors = append(out.Errors, checkError{Line: se.Line, Key: "fraud." + se.Key, Message: se.Msg})
				} else {
					msg := e.Error()
					if strings.HasPrefix(msg, "line ") {
						msg = "config: " + msg
					}
					out.Errors = append(out.Errors, checkError{Message: msg})
				}
			}
			out.OK = false
		}
		if c.Fraud != nil {
			if _, err := fraud.ParseSettings(c.Fraud); err != nil {
				sectionErr(err)
			}
		}
		if c.Firewall.Policy != nil {
			if _, err := policy.FromYAML(c.Firewall.Policy); err != nil {
				sectionErr(err)
			}
		}
	}
	if c != nil {
		out.Warnings = append(out.Warnings, c.Warnings...)
		if out.OK {
			out.Backend, out.StateDir, out.Socket, out.Metrics = c.Firewall.Backend, c.StateDir, c.Control.Socket, c.Metrics.Listen
			for _, p := range c.Allowlist {
				out.Allowlist = append(out.Allowlist, p.String())
			}
			if c.AllowlistAsteriskTrunks {
				trunks, skipped, err := daemon.AsteriskTrunks(c.Audit.AsteriskDir)
				if err != nil {
					out.Warnings = append(out.Warnings, fmt.Sprintf("allowlist_asterisk_trunks: %v (set audit.asterisk_dir, or allowlist_asterisk_trunks: false)", err))
				}
				out.Trunks, out.TrunksSkipped = trunks, skipped
			}
			for _, j := range c.Jails {
				out.Jails = append(out.Jails, checkedJail{Name: j.Name, Enabled: j.Enabled, Detector: j.Detector, Files: j.Files,
					Journal: j.Journal, MaxRetry: j.MaxRetry, FindTime: config.FormatDuration(j.FindTime),
					BanTime: config.FormatBanTime(j.BanTime), MaxBanTime: config.FormatBanTime(j.MaxBanTime)})
			}
		}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		for _, e := range out.Errors {
			if e.Line > 0 || e.Key != "" {
				fmt.Fprintln(w, config.Error{Line: e.Line, Key: e.Key, Msg: e.Message}.Error())
			} else {
				fmt.Fprintln(w, e.Message)
			}
		}
		for _, wn := range out.Warnings {
			fmt.Fprintln(w, "warning:", wn)
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
		}
	}
	if !out.OK {
		return &exitError{code: exitUsage}
	}
	return nil
}

// flatten splits a joined error into its parts.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func orOff(s string) string {
	if s == "" {
		return "off"
	}
	return s
}
