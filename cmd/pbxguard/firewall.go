package main

import "github.com/spf13/cobra"

// firewallCommands returns this group's commands (not yet built).
func firewallCommands() []*cobra.Command { return nil }
