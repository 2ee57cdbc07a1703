//go:build !linux

package sandbox

import "fmt"

// ABI returns 0: Landlock is Linux's.
func ABI() int { return 0 }

// Apply does nothing off Linux; mode required fails.
func Apply(p Policy, mode Mode) (Result, error) {
	switch mode {
	case Off:
		return Result{}, nil
	case BestEffort:
		return Result{Unavailable: "landlock needs Linux"}, nil
	case Required:
		return Result{}, fmt.Errorf("%w: landlock needs Linux; choose landlock mode best-effort or off on this platform", ErrUnsupported)
	}
	return Result{}, fmt.Errorf("unknown landlock mode %q (want best-effort, off or required)", mode)
}
