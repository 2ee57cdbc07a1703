// Package cli is what the sealproxy commands share: one exit point that
// prints errors as "NAME: error: ..." with an optional "NAME: hint: ...",
// exit codes by error class, and flag parsing that allows flags after
// positional arguments (as clevis users type them).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes shared by the commands.
const (
	ExitOK      = 0
	ExitFailure = 1 // the operation failed (unreachable server, bad JWE, ...)
	ExitUsage   = 2 // bad command line or configuration
	ExitTrust   = 3 // refused to trust a Tang server (no or wrong thumbprint)
	ExitDenied  = 4 // an operator denied the request
)

// Error carries an exit code and a hint along with the error.
type Error struct {
	Err  error
	Hint string
	Code int
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Usage makes a usage error.
func Usage(format string, args ...any) error {
	return &Error{Err: fmt.Errorf(format, args...), Code: ExitUsage}
}

// WithHint attaches a hint and exit code to err.
func WithHint(err error, code int, hint string) error {
	return &Error{Err: err, Hint: hint, Code: code}
}

// RunFunc is a command's whole behaviour.
type RunFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error

// Main runs a command with the process's arguments and streams, cancels
// its context on SIGINT/SIGTERM, and returns its exit code.
func Main(name string, run RunFunc) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Report(name, run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr), os.Stderr)
}

// Report prints err (if any) the way every command does and returns the
// exit code for it.
func Report(name string, err error, stderr io.Writer) int {
	errLine, hints, code := Explain(name, err)
	if errLine != "" {
		fmt.Fprintln(stderr, errLine)
	}
	for _, h := range hints {
		fmt.Fprintln(stderr, h)
	}
	return code
}

// Explain returns what Report prints for err, line by line: "NAME: error:
// ..." (empty when there is nothing to report), the "NAME: hint: ..."
// lines, and the exit code.
func Explain(name string, err error) (errLine string, hints []string, code int) {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return "", nil, ExitOK
	}
	code = ExitFailure
	var ce *Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	if ce != nil && ce.Hint != "" {
		for _, line := range strings.Split(ce.Hint, "\n") {
			hints = append(hints, name+": hint: "+line)
		}
	}
	return name + ": error: " + err.Error(), hints, code
}

// Parse parses flags that may appear before, between or after positional
// arguments, and returns the positional arguments. "--" ends flags.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, Usage("%s: %v", fs.Name(), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// PrintDefaults writes a flag set's flags for a help text.
func PrintDefaults(w io.Writer, fs *flag.FlagSet) {
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}
