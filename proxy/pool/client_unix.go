//go:build unix

package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Server hands conn, a connection the application accepted, to the pool
// service (role server) and returns the plaintext and the peer's
// identity. It takes conn over: conn is closed whatever the result (the
// pool holds its own copy of the socket on success).
func Server(ctx context.Context, poolPath string, conn net.Conn, service string) (net.Conn, *Answer, error) {
	return Do(ctx, poolPath, conn, &Request{V: Version, Service: service})
}

// Client hands conn, a connection the application made, to the pool
// service (role client), which verifies the server as serverName (empty:
// the service's server_name).
func Client(ctx context.Context, poolPath string, conn net.Conn, service, serverName string) (net.Conn, *Answer, error) {
	return Do(ctx, poolPath, conn, &Request{V: Version, Service: service, ServerName: serverName})
}

// Do sends req with conn's socket to the pool at poolPath and waits for
// the answer. A refusal is a *Refusal; conn is closed in every case.
func Do(ctx context.Context, poolPath string, conn net.Conn, req *Request) (net.Conn, *Answer, error) {
	defer conn.Close()
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, nil, fmt.Errorf("pool: %T has no file descriptor to pass", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("pool: %w", err)
	}
	line, err := json.Marshal(req)
	if err != nil {
		return nil, nil, fmt.Errorf("pool: %w", err)
	}
	line = append(line, '\n')
	if len(line) > MaxRequest {
		return nil, nil, fmt.Errorf("pool: request longer than %d bytes", MaxRequest)
	}

	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", poolPath)
	if err != nil {
		return nil, nil, fmt.Errorf("pool: %w", err)
	}
	uc := c.(*net.UnixConn)
	defer uc.Close()
	stop := context.AfterFunc(ctx, func() { _ = uc.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = uc.SetDeadline(dl)
	}

	var werr error
	if err := raw.Control(func(fd uintptr) {
		_, _, werr = uc.WriteMsgUnix(line, syscall.UnixRights(int(fd)), nil)
	}); err != nil {
		return nil, nil, fmt.Errorf("pool: %w", err)
	}
	ans, fds, err := readAnswer(uc)
	if werr != nil && (err != nil || ans.OK) {
		// A refusal may come before the request is taken; else the send's
		// error is the story.
		closeFDs(fds)
		return nil, nil, ctxErr(ctx, fmt.Errorf("pool: sending the request: %w", werr))
	}
	if err != nil {
		closeFDs(fds)
		return nil, nil, ctxErr(ctx, err)
	}
	if !ans.OK {
		closeFDs(fds)
		return nil, ans, &Refusal{Reason: ans.Reason, Message: ans.Error}
	}
	if len(fds) != 1 {
		closeFDs(fds)
		return nil, nil, fmt.Errorf("pool: a success answer came with %d file descriptors, want 1", len(fds))
	}
	f := os.NewFile(uintptr(fds[0]), "pool-plaintext")
	plain, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("pool: %w", err)
	}
	return plain, ans, nil
}

// readAnswer reads one answer line and every fd that came with it.
func readAnswer(uc *net.UnixConn) (*Answer, []int, error) {
	var (
		line []byte
		fds  []int
	)
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := uc.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
			if perr == nil {
				for _, m := range msgs {
					if got, err := syscall.ParseUnixRights(&m); err == nil {
						fds = append(fds, got...)
					}
				}
			}
		}
		if flags&syscall.MSG_CTRUNC != 0 {
			return nil, fds, errors.New("pool: the answer came with too many file descriptors")
		}
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			var a Answer
			if err := json.Unmarshal(line[:i], &a); err != nil {
				return nil, fds, fmt.Errorf("pool: malformed answer: %w", err)
			}
			return &a, fds, nil
		}
		if len(line) > MaxAnswer {
			return nil, fds, errors.New("pool: answer too long")
		}
		if err != nil {
			return nil, fds, fmt.Errorf("pool: reading the answer: %w", err)
		}
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("pool: %w", ctx.Err())
	}
	return err
}
