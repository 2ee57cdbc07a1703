//go:build !linux

package main

import (
	"context"
	"errors"
	"flag"
	"io"
)

// compare needs /proc (CPU time, resident memory) and taskset.
func compare(ctx context.Context, fs *flag.FlagSet, args []string, out io.Writer) error {
	return errors.New("compare runs on Linux only: it reads /proc and pins processes with taskset")
}
