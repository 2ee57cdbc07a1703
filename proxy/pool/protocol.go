// Package pool is the TLS pool's wire protocol and its Go client
// (docs/pool.md). An application connects or accepts a TCP socket, hands
// it to sealproxy's pool over a unix socket, and gets back a socket that
// carries the plaintext, with the authenticated identity of the peer. It
// never sees a key, a PIN or a certificate of its own.
//
// The package imports only the standard library, so applications can use
// it without pulling in the daemon.
package pool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Version is the protocol version requests carry in "v".
const Version = 1

// MaxRequest bounds a request line, its newline included.
const MaxRequest = 4096

// MaxAnswer bounds an answer line, its newline included (a peer
// certificate with many names makes a long one).
const MaxAnswer = 64 << 10

// Request asks the pool to run TLS on the socket passed with it.
type Request struct {
	V       int    `json:"v"`
	Service string `json:"service"`
	// ServerName is the name a client service verifies the server
	// against (and sends as SNI); it replaces the service's server_name.
	// A server service ignores it.
	ServerName string `json:"server_name,omitempty"`
	// ALPN narrows the protocols offered (client) or accepted (server)
	// to these; each must be allowed by the service's tls.alpn, if any.
	ALPN []string `json:"alpn,omitempty"`
}

// Reasons of a failure answer.
const (
	ReasonNotAllowed      = "not_allowed"      // the caller's uid and gid are not among the service's users and groups
	ReasonUnknownService  = "unknown_service"  // no service has this name
	ReasonHandshakeFailed = "handshake_failed" // TLS failed (protocol, timeout, the peer closed)
	ReasonPeerRefused     = "peer_refused"     // the peer's certificate failed verification or the allow rules
	ReasonBusy            = "busy"             // the pool is at max_connections
	ReasonBadRequest      = "bad_request"      // malformed line, not exactly one fd, not a stream socket
)

// Answer is the pool's reply: on success (OK) it comes with one fd, the
// application's end of the plaintext; on failure with none.
type Answer struct {
	OK         bool   `json:"ok"`
	Version    string `json:"version,omitempty"` // "TLS1.3"
	Cipher     string `json:"cipher,omitempty"`  // IANA name
	ALPN       string `json:"alpn,omitempty"`
	ServerName string `json:"server_name,omitempty"`
	// Peer is the authenticated peer: empty ({}) when it presented no
	// certificate; absent on failure.
	Peer     *Peer  `json:"peer,omitempty"`
	LocalKey string `json:"local_key,omitempty"` // the [[key]] presented, if any

	Reason string `json:"reason,omitempty"` // failure only
	Error  string `json:"error,omitempty"`  // failure only: for humans
}

// Peer is what the pool verified of the peer's certificate.
type Peer struct {
	CN         string   `json:"cn,omitempty"`
	DNS        []string `json:"dns,omitempty"`
	URI        []string `json:"uri,omitempty"`
	SPKISHA256 string   `json:"spki_sha256,omitempty"` // base64 of the SHA-256 of the SubjectPublicKeyInfo
}

// ErrBadRequest is every request ParseRequest refuses.
var ErrBadRequest = errors.New("bad request")

// ParseRequest reads one request line: at most MaxRequest bytes ending
// with its only newline, one JSON object with no unknown or repeated
// fields, v = 1, and a service name. Errors wrap ErrBadRequest and are
// safe to send back (they quote nothing of the input but field names).
func ParseRequest(line []byte) (*Request, error) {
	bad := func(format string, args ...any) (*Request, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
	}
	if len(line) > MaxRequest {
		return bad("longer than %d bytes", MaxRequest)
	}
	body, ok := bytes.CutSuffix(line, []byte("\n"))
	if !ok || bytes.IndexByte(body, '\n') >= 0 {
		return bad("want one JSON object on one line, ending with a newline")
	}
	if !utf8.Valid(body) {
		return bad("not UTF-8")
	}
	if err := checkKeys(body); err != nil {
		return bad("%v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var r Request
	if err := dec.Decode(&r); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return bad("field %q has the wrong type", ute.Field)
		}
		return bad("not a JSON object")
	}
	if dec.More() {
		return bad("more than one JSON value")
	}
	if _, err := dec.Token(); err == nil {
		return bad("more than one JSON value")
	}
	switch {
	case r.V != Version:
		return bad("v must be %d", Version)
	case r.Service == "":
		return bad("service is missing")
	case !printable(r.Service, 255):
		return bad("service must be 1 to 255 printable ASCII characters")
	case r.ServerName != "" && !printable(r.ServerName, 253):
		return bad("server_name must be a host name of at most 253 printable ASCII characters")
	case len(r.ALPN) > 16:
		return bad("at most 16 alpn protocols")
	}
	for _, p := range r.ALPN {
		if p == "" || len(p) > 255 {
			return bad("an alpn protocol must be 1 to 255 bytes")
		}
	}
	return &r, nil
}

// checkKeys refuses a field name that is not exactly one of
// Request's, and an object that names a field twice, which
// encoding/json would silently resolve to the last one: a relay that
// reads the first could be told a different service than the pool.
func checkKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	t, err := dec.Token()
	if err != nil || t != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return errors.New("not a JSON object")
		}
		k, _ := t.(string)
		switch {
		case k != "v" && k != "service" && k != "server_name" && k != "alpn":
			// encoding/json would match "Service" too: names are exact.
			return errors.New("unknown field (want v, service, server_name, alpn)")
		case seen[k]:
			return errors.New("a field is repeated")
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return errors.New("not a JSON object")
		}
	}
	return nil
}

func printable(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// Marshal encodes an answer as its line, newline included.
func (a *Answer) Marshal() []byte {
	b, _ := json.Marshal(a) // plain strings and slices: cannot fail
	return append(b, '\n')
}

// Refusal is a failure answer as an error.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string {
	if r.Message == "" {
		return "pool refused: " + r.Reason
	}
	return "pool refused (" + r.Reason + "): " + r.Message
}
