package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

var (
	// ErrReloadFailed reports a reload the daemon tried and refused: the
	// previous configuration is still served.
	ErrReloadFailed = errors.New("reload failed; the previous configuration is still served")
	// ErrReloadDisabled reports an admin listener without POST /reload
	// ([admin] reload = false).
	ErrReloadDisabled = errors.New("the admin listener does not serve POST /reload")
)

// maxReloadAnswer bounds the body of POST /reload's answer.
const maxReloadAnswer = 64 << 10

// RequestReload asks the daemon whose admin listener is at addr
// (host:port or unix:PATH) to reload, and waits for the outcome: nil once
// the new configuration is applied, ErrReloadFailed with the daemon's
// reason when the old one stays. It is what a service manager's reload
// command runs, so that a failed reload fails the command too.
func RequestReload(ctx context.Context, addr string) error {
	b, status, msg, err := postAdmin(ctx, addr, "reload")
	if err != nil {
		return err
	}
	switch status {
	case http.StatusOK:
		return nil
	case http.StatusInternalServerError:
		if msg == "" {
			return ErrReloadFailed
		}
		return &reloadError{msg: msg}
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return fmt.Errorf("%s: %w", b, ErrReloadDisabled)
	}
	return fmt.Errorf("asking %s to reload: unexpected answer %d %s: %s", b, status, http.StatusText(status), msg)
}

// reloadError is the daemon's own reason for a failed reload, which
// already says that the previous configuration stays.
type reloadError struct{ msg string }

func (e *reloadError) Error() string        { return e.msg }
func (e *reloadError) Is(target error) bool { return target == ErrReloadFailed }

// printable returns s as it is if every rune prints, and quoted with
// escapes otherwise: the answer comes from a socket and goes to a
// terminal or the journal.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// postAdmin is a POST of verb (reload, upgrade) to the admin listener at
// addr (host:port or unix:PATH): the answer's status and its body,
// bounded and made printable, or the failure to get one.
func postAdmin(ctx context.Context, addr, verb string) (b Backend, status int, msg string, err error) {
	b = ParseBackend(addr)
	var d net.Dialer
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, b.Network, b.Address)
		},
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sealproxy/"+verb, nil)
	if err != nil {
		return b, 0, "", err
	}
	if b.Network == "tcp" {
		req.Host = b.Address // a TCP admin listener refuses a Host that is not its own
	}
	resp, err := client.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // the dial or read error, without the made-up URL
		}
		return b, 0, "", fmt.Errorf("asking %s to %s: %w", b, verb, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReloadAnswer))
	if err != nil {
		return b, 0, "", fmt.Errorf("asking %s to %s: reading the answer: %w", b, verb, err)
	}
	return b, resp.StatusCode, printable(strings.TrimSpace(string(body))), nil
}
