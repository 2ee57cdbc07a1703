//go:build !linux

// Command storm is Linux only: it binds each host to its own address of
// 127/8, which only Linux routes to the loopback interface.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "storm: Linux only (it needs all of 127/8 on lo)")
	os.Exit(2)
}
