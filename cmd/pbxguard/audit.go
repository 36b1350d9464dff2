package main

import "github.com/spf13/cobra"

// auditCommands returns this group's commands (not yet built).
func auditCommands() []*cobra.Command { return nil }
