//go:build race

package proxy

// raceEnabled: the race detector changes what memory figures mean.
const raceEnabled = true
