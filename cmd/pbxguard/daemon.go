package main

import "github.com/spf13/cobra"

// daemonCommands returns this group's commands (not yet built).
func daemonCommands() []*cobra.Command { return nil }
