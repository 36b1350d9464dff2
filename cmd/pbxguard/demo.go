package main

import "github.com/spf13/cobra"

// demoCommands returns this group's commands (not yet built).
func demoCommands() []*cobra.Command { return nil }
