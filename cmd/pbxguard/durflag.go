package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pbxguard/pbxguard/internal/config"
)

// durationValue is a flag that reads a duration as the configuration file
// does (config.ParseDuration: 1h, 30m, 1d, 1w, a bare number of seconds),
// so that no flag wraps around (`--for 18446744074` was a 288 ms ban) or
// takes a negative or absurd value: from min to ten years.
type durationValue struct {
	d   *time.Duration
	min time.Duration
}

func (v *durationValue) Set(s string) error {
	d, err := config.ParseDuration(s)
	if err != nil || d < v.min {
		return fmt.Errorf("%q is not a duration from %s to %s (try 30s, 10m, 1h, 1d)", s, config.FormatDuration(v.min), config.FormatDuration(config.MaxDuration))
	}
	*v.d = d
	return nil
}

func (v *durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return config.FormatDuration(*v.d)
}

func (v *durationValue) Type() string { return "duration" }

// durationFlag defines --name on cmd's local flags, with default def and
// lower bound min.
func durationFlag(cmd *cobra.Command, p *time.Duration, name string, def, min time.Duration, usage string) {
	*p = def
	cmd.Flags().Var(&durationValue{d: p, min: min}, name, usage)
}
