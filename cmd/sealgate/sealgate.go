package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

const usage = `usage: sealgate COMMAND --dir DIR [FLAGS]

A Tang server whose key directories are compatible with tangd's.

  sealgate keygen --dir DIR                      create a signing and an exchange key
  sealgate rotate --dir DIR                      retire the active keys, create new ones
  sealgate thp --dir DIR                         print the signing-key thumbprints
  sealgate serve --dir DIR --listen ADDR         serve /adv and /rec

Rotated keys are kept as dot-files: they still recover old bindings but are
no longer advertised. A running server follows rotations without a restart.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage("no command given")
	}
	cmd, rest := args[0], args[1:]
	if cmd == "help" || cmd == "-h" || cmd == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	fs := flag.NewFlagSet("sealgate "+cmd, flag.ContinueOnError)
	dir := fs.String("dir", "", "the key `directory`")
	listen := fs.String("listen", "127.0.0.1:7500", "`address` to serve on (serve)")
	pos, err := cli.Parse(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usage("%s takes no arguments, got %q", cmd, pos)
	}
	if *dir == "" && cmd != "" {
		switch cmd {
		case "keygen", "rotate", "thp", "serve":
			return cli.WithHint(errors.New(cmd+" needs --dir"), cli.ExitUsage, "sealgate "+cmd+" --dir /var/db/tang")
		}
	}
	switch cmd {
	case "keygen":
		thp, err := tang.Keygen(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, thp)
		return nil
	case "rotate":
		thp, err := tang.Rotate(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, thp)
		return nil
	case "thp":
		keys, err := loadKeys(*dir)
		if err != nil {
			return err
		}
		for _, thp := range keys.Thumbprints() {
			fmt.Fprintln(stdout, thp)
		}
		return nil
	case "serve":
		return serve(ctx, *dir, *listen, stderr)
	default:
		return cli.WithHint(fmt.Errorf("unknown command %q", cmd), cli.ExitUsage, "commands are keygen, rotate, thp and serve; run 'sealgate help'")
	}
}

func loadKeys(dir string) (*tang.Keys, error) {
	keys, err := tang.LoadKeys(dir)
	var bad *tang.KeyFileError
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, tang.ErrNoKeys):
		return nil, cli.WithHint(err, cli.ExitUsage, "create keys first: sealgate keygen --dir "+dir)
	case errors.As(err, &bad):
		return nil, cli.WithHint(err, cli.ExitUsage, "move "+bad.Path+" out of the directory, or restore it from a backup")
	}
	return keys, err
}

func serve(ctx context.Context, dir, listen string, stderr io.Writer) error {
	if _, err := loadKeys(dir); err != nil {
		return err
	}
	keys, err := tang.OpenKeyDir(dir)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return cli.WithHint(err, cli.ExitUsage, "choose a free address with --listen")
	}
	srv := &http.Server{
		Handler:           tang.NewServer(keys, log),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("serving tang", "listen", ln.Addr().String(), "dir", dir)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.Info("stopping tang")
	return srv.Shutdown(shutdown)
}
