//go:build !windows

package main

import (
	"context"
	"errors"
	"io"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
)

// runProcess runs the command line in the foreground.
func runProcess() int { return runInteractive() }

// cmdService is the Windows service command; elsewhere it says where to go.
func cmdService(context.Context, []string, io.Writer, io.Writer) error {
	return cli.WithHint(errors.New("the service command is for Windows; on Linux use systemd (docs/packaging/systemd)"),
		cli.ExitUsage, "see docs/systemd.md")
}
