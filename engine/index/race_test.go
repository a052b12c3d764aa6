//go:build race

package index

// raceEnabled scales down the slowest randomized tests under -race; the
// plain run does the full amount and TestConcurrent covers the races.
const raceEnabled = true
