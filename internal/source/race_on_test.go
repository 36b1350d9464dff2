//go:build race

package source

// raceEnabled: the race detector slows the follower ~10x; the stress test
// lowers its rate so that the follower stays within one rotation period.
const raceEnabled = true
