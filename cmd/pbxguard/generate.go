package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/pbxguard/pbxguard/internal/version"
)

// generateCommands are for packagers: man pages and shell completions made
// from the command tree itself, so they never drift from the CLI.
func generateCommands() []*cobra.Command {
	gen := &cobra.Command{
		Use:    "generate",
		Short:  "Write man pages or shell completions (for packagers)",
		Hidden: true,
	}
	man := &cobra.Command{
		Use:   "man DIR",
		Short: "Write pbxguard(8) and one man page per command into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return failErr(err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // reproducible unless the build says otherwise
			if t, err := time.Parse(time.RFC3339, version.Get().Date); err == nil {
				date = t
			}
			hdr := &doc.GenManHeader{Title: "PBXGUARD", Section: "8", Source: "pbxguard " + version.Short(), Manual: "System Administration", Date: &date}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return failErr(fmt.Errorf("man pages: %w", err))
			}
			return nil
		},
	}
	comp := &cobra.Command{
		Use:   "completions DIR",
		Short: "Write bash, zsh and fish completions into DIR/{bash,zsh,fish}",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			for _, c := range []struct {
				dir, name string
				gen       func(string) error
			}{
				{"bash", "pbxguard", func(p string) error { return root.GenBashCompletionFileV2(p, true) }},
				{"zsh", "_pbxguard", root.GenZshCompletionFile},
				{"fish", "pbxguard.fish", func(p string) error { return root.GenFishCompletionFile(p, true) }},
			} {
				d := filepath.Join(args[0], c.dir)
				if err := os.MkdirAll(d, 0o755); err != nil {
					return failErr(err)
				}
				if err := c.gen(filepath.Join(d, c.name)); err != nil {
					return failErr(fmt.Errorf("%s completion: %w", c.dir, err))
				}
			}
			return nil
		},
	}
	gen.AddCommand(man, comp)
	return []*cobra.Command{gen}
}
