package main

import "github.com/spf13/cobra"

// configCommands returns this group's commands (not yet built).
func configCommands() []*cobra.Command { return nil }
