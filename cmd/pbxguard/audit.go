package main

import (
	"errors"
	"strings"

	"github.com/pbxguard/pbxguard/internal/audit"
	"github.com/spf13/cobra"
)

// auditCommands returns the audit command group.
func auditCommands() []*cobra.Command {
	var (
		dir     string
		format  string
		failOn  string
		trusted []string
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Audit an Asterisk configuration directory for what invites attack",
		Long: `audit reads an Asterisk configuration directory the way Asterisk does
(templates, #include, comments) and reports, with file and line, what is
dangerous and how to fix it: guest calls, weak secrets, open ACLs, AMI and
HTTP exposed, international dialling open to untrusted endpoints, missing
security logging.

Exit status: 0 when no finding is at or above --fail-on, 1 otherwise,
2 when the directory cannot be read or the arguments are wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			min, err := audit.ParseSeverity(failOn)
			if err != nil {
				return usageErr("--fail-on: %v", err)
			}
			write := map[string]func(*audit.Report) error{
				"text":  func(r *audit.Report) error { return r.WriteText(cmd.OutOrStdout()) },
				"json":  func(r *audit.Report) error { return r.WriteJSON(cmd.OutOrStdout()) },
				"sarif": func(r *audit.Report) error { return r.WriteSARIF(cmd.OutOrStdout()) },
			}[strings.ToLower(format)]
			if write == nil {
				return usageErr("--format %q: use text, json or sarif", format)
			}
			rep, err := audit.Run(dir, audit.Options{TrustedEndpoints: trusted})
			if err != nil {
				if errors.Is(err, audit.ErrUnreadable) {
					return usageErr("audit: %v", err)
				}
				return failErr(err)
			}
			if err := write(rep); err != nil {
				return failErr(err)
			}
			if rep.AtOrAbove(min) > 0 {
				return &exitError{code: exitFindings}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "asterisk-dir", "/etc/asterisk", "Asterisk configuration directory")
	f.StringVar(&format, "format", "text", "output format: text, json or sarif")
	addJSONFlag(cmd, &format)
	f.StringVar(&failOn, "fail-on", "high", "exit 1 when a finding is at or above this severity: critical, high, medium, low, info")
	f.StringSliceVar(&trusted, "trusted-endpoint", nil, "endpoint allowed to dial international numbers (repeatable; 1001, PJSIP/1001, SIP/2001, IAX2/5001)")
	return []*cobra.Command{cmd}
}
