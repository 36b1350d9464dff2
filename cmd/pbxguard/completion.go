package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/daemon"
)

// addCompletions teaches the shell completions (cobra's `completion`
// command: bash, zsh, fish) the values only the running daemon knows:
// jail names for --jail, and banned addresses for unban and why. The
// daemon is asked with a short timeout; when it is unreachable the
// completion simply offers nothing.
func addCompletions(root *cobra.Command) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "ban", "unban", "bans":
			if c.Flags().Lookup("jail") != nil {
				_ = c.RegisterFlagCompletionFunc("jail", completeJails)
			}
		}
		if c.Name() == "unban" || c.Name() == "why" {
			c.ValidArgsFunction = completeBanned
		}
	}
}

// completionClient builds the daemon client from the command's own
// --socket/--config flags, as the command itself would.
func completionClient(cmd *cobra.Command) *daemon.Client {
	var s socketFlags
	if f := cmd.Flags().Lookup("socket"); f != nil {
		s.socket = f.Value.String()
	}
	if f := cmd.Flags().Lookup("config"); f != nil {
		s.config = f.Value.String()
	}
	c, err := s.client(cmd)
	if err != nil || c == nil {
		return nil
	}
	c.Timeout = 2 * time.Second
	return c
}

func completeJails(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	out := []string{"manual"}
	if c := completionClient(cmd); c != nil {
		if st, err := c.Status(context.Background()); err == nil {
			for _, j := range st.Jails {
				out = append(out, j.Name)
			}
		}
	}
	return filterPrefix(out, toComplete), cobra.ShellCompDirectiveNoFileComp
}

func completeBanned(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	if c := completionClient(cmd); c != nil {
		if bans, err := c.Bans(context.Background()); err == nil {
			for _, b := range bans {
				v := b.Prefix
				if strings.HasSuffix(v, "/32") || strings.HasSuffix(v, "/128") {
					v = b.Addr
				}
				out = append(out, v+"\t"+b.Jail+": "+b.Reason)
			}
		}
	}
	return filterPrefix(out, toComplete), cobra.ShellCompDirectiveNoFileComp
}

func filterPrefix(vals []string, prefix string) []string {
	var out []string
	for _, v := range vals {
		if strings.HasPrefix(v, prefix) {
			out = append(out, v)
		}
	}
	return out
}
