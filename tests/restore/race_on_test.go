//go:build race

package restore_test

// The race detector slows the fill and checks; smaller volumes keep the
// SIGKILL test short under it.
const raceOn = true
