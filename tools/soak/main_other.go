//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "soak: error: the soak suite needs Linux (it reads the proxy's memory and file descriptors from /proc)")
	os.Exit(1)
}
