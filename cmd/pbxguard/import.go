package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
	"github.com/pbxguard/pbxguard/internal/migrate"
)

func importCommands() []*cobra.Command {
	imp := &cobra.Command{
		Use:   "import",
		Short: "Write a pbxguard configuration from another tool's (fail2ban)",
	}
	var dir, out string
	var force bool
	f2b := &cobra.Command{
		Use:   "fail2ban",
		Short: "Write a pbxguard configuration from fail2ban's jail.conf, jail.local and jail.d",
		Long: `import fail2ban reads fail2ban's jail configuration as fail2ban does
(jail.conf, jail.d/*.conf, jail.local, jail.d/*.local) and writes the
pbxguard configuration that behaves the same: ignoreip becomes the
allowlist, each jail's maxretry, findtime and bantime (fail2ban's time
syntax, -1 = permanent) and bantime.increment/factor/maxtime carry over,
recidive becomes pbxguard's increments, logpath becomes files. Every
fail2ban setting without a counterpart is written as a comment.

The result is checked as 'pbxguard config check' would before it is
written. Migration, step by step: docs/migrate-fail2ban.md.`,
		Example: `  pbxguard import fail2ban -o /etc/pbxguard/pbxguard.yaml
  pbxguard import fail2ban --dir ./fail2ban-backup`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, ini, err := migrate.LoadFail2ban(dir)
			if err != nil {
				return usageErr("import fail2ban: %v", err)
			}
			im, err := migrate.Convert(files, ini)
			if err != nil {
				return usageErr("import fail2ban: %v", err)
			}
			var b bytes.Buffer
			if err := im.WriteYAML(&b); err != nil {
				return failErr(err)
			}
			if _, err := config.Parse(b.Bytes(), config.Options{}); err != nil {
				var es config.Errors
				if errors.As(err, &es) {
					for _, e := range es {
						fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
					}
				}
				fmt.Fprint(cmd.ErrOrStderr(), b.String())
				return failErr(fmt.Errorf("import fail2ban: the written configuration does not pass config check (a bug: please report it with your jail.local): %w", err))
			}
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(b.Bytes())
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			fh, err := os.OpenFile(out, flags, 0o600)
			if err != nil {
				if errors.Is(err, os.ErrExist) {
					return usageErr("import fail2ban: %s exists (use --force to replace it)", out)
				}
				return failErr(err)
			}
			if _, err := fh.Write(b.Bytes()); err != nil {
				fh.Close()
				return failErr(err)
			}
			if err := fh.Close(); err != nil {
				return failErr(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (%d jails, %d allowlist entries); check it with: pbxguard config check %s\n", out, len(im.Jails), len(im.Allowlist), out)
			return nil
		},
	}
	f2b.Flags().StringVar(&dir, "dir", "/etc/fail2ban", "fail2ban's configuration directory")
	f2b.Flags().StringVarP(&out, "output", "o", "", "write the configuration to this file (0600) instead of standard output")
	f2b.Flags().BoolVar(&force, "force", false, "replace --output if it exists")
	imp.AddCommand(f2b)
	return []*cobra.Command{imp}
}
