//go:build !linux

package proxy

import "time"

// canPark reports that idle directions are parked without a goroutine:
// only on Linux (park_linux.go); elsewhere each waits in a goroutine.
const canPark = false

type parking struct{}

func startParker() {}

func (r *relay) park(*direction, func(*direction), time.Time) bool { return false }

// wake has nothing to resume here: d.park is never set.
func (d *direction) wake() { _ = d.park.Load() }
