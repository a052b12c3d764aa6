//go:build !race

package restore_test

const raceOn = false
