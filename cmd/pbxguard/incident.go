package main

import "github.com/spf13/cobra"

// incidentCommands returns this group's commands (not yet built).
func incidentCommands() []*cobra.Command { return nil }
