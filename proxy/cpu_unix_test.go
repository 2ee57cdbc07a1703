//go:build unix

package proxy

import (
	"syscall"
	"testing"
)

// reportCPU adds cpu-ns/op (user and system time of the whole process,
// per op) to a benchmark: on a shared machine wall time measures the
// neighbours too. Call it first and defer what it returns.
func reportCPU(b *testing.B) func() {
	var start syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &start)
	return func() {
		var end syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &end)
		ns := func(r syscall.Rusage) int64 { return r.Utime.Nano() + r.Stime.Nano() }
		if b.N > 0 {
			b.ReportMetric(float64(ns(end)-ns(start))/float64(b.N), "cpu-ns/op")
		}
	}
}
