//go:build race

package store

// raceEnabled scales the crash tests down under the race detector; the full
// counts run without it (see the Makefile's crash target).
const raceEnabled = true
