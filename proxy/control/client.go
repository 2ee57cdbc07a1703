package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// Error is the daemon's answer to a call it refused or that failed.
type Error struct {
	Msg, Hint string
}

func (e *Error) Error() string { return e.Msg }

// maxLine bounds one line of an answer.
const maxLine = 1 << 20

// Call runs verb on the daemon whose admin socket is addr (unix:PATH; a
// host:port is tried too, and the daemon refuses it) and returns its
// result. progress receives each progress line (an approval code to
// compare, while set-key waits for a gate). Text from the daemon is
// escaped before it reaches progress or an error.
func Call(ctx context.Context, addr, verb string, req *Request, progress func(string)) (json.RawMessage, error) {
	network, address := "tcp", addr
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", p
	}
	var d net.Dialer
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, address)
		},
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	body, _ := json.Marshal(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://sealproxy/ctl/"+url.PathEscape(verb), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hr)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("calling %s: %w", addr, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("calling %s: not a control API answer (%s): %s", addr, resp.Status, Printable(string(sc.Bytes())))
		}
		switch {
		case r.Error != "":
			return nil, &Error{Msg: Printable(r.Error), Hint: Printable(r.Hint)}
		case r.Result != nil:
			return r.Result, nil
		case progress != nil:
			progress(Printable(r.Progress))
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("calling %s: reading the answer: %w", addr, err)
	}
	return nil, fmt.Errorf("calling %s: the answer ended without a result (%s)", addr, resp.Status)
}

// Printable returns s as it is if every rune prints, else quoted with
// escapes: a terminal shows it, it controls nothing.
func Printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
