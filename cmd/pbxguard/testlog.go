package main

import "github.com/spf13/cobra"

// testLogCommands returns this group's commands (not yet built).
func testLogCommands() []*cobra.Command { return nil }
