package tang

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The approval protocol of a gate (see docs/approval.md): a gate is a Tang
// server that may hold POST /rec/{kid} until an operator decides. These are
// the parts the client and the gate share.

// Request headers that group the recoveries of one start-up into a session.
const (
	// HeaderSession is an opaque random id, the same for every recovery of
	// one start-up.
	HeaderSession = "Sealgate-Session"
	// HeaderHost is a label for the operator: which host asks.
	HeaderHost = "Sealgate-Host"
	// HeaderKeys is how many recoveries this start-up sends to this gate;
	// the session is complete (and can be approved) once they all arrived.
	HeaderKeys = "Sealgate-Keys"
	// HeaderCommit is the host's commitment to its nonce and its points
	// (Exchange.Commitment), the same on every recovery of the session.
	HeaderCommit = "Sealgate-Commit"
	// HeaderReveal is the host's nonce, sent once the gate has answered
	// with its own (Status.Nonce).
	HeaderReveal = "Sealgate-Reveal"
)

// Limits on the session headers, checked by the gate.
const (
	MaxSessionID  = 64
	MaxHostLabel  = 64
	MaxSessionKey = 64
)

var (
	// ErrDenied reports a recovery an operator denied; the error is a
	// *DeniedError.
	ErrDenied = errors.New("recovery denied")
	// ErrNotApproved reports a recovery still pending approval when the
	// caller stopped waiting.
	ErrNotApproved = errors.New("recovery not approved in time")
	// ErrCodeMismatch reports a gate whose code for the session is not the
	// host's, or that refused the host's nonce: the gate did not receive
	// what the host sent, so something in the middle changed it.
	ErrCodeMismatch = errors.New("the gate's approval code is not this host's")
	// ErrSessionLost reports a gate that started a session over after the
	// host revealed its nonce (it restarted, or the request expired): the
	// host cannot take a second nonce for the same commitment, so the
	// attempt ends, and a new one has a new code.
	ErrSessionLost = errors.New("the gate no longer has this session")
	// ErrGateFull reports a gate that refuses new requests because too
	// many are pending (a flood, or too many hosts at once).
	ErrGateFull = errors.New("the gate refuses new requests: too many are pending")
)

// DeniedError is a gate's refusal: who denied the recovery and when.
type DeniedError struct {
	Operator string
	At       time.Time
	Code     string
}

// Error names the operator and the code as the gate sent them, escaped
// (Printable): the text reaches terminals, logs and sd_notify lines.
func (e *DeniedError) Error() string {
	msg := "recovery denied"
	if e.Operator != "" {
		msg += " by operator " + Printable(e.Operator)
	}
	if !e.At.IsZero() {
		msg += " at " + e.At.UTC().Format("15:04 UTC")
	}
	if e.Code != "" {
		msg += " (code " + Printable(e.Code) + ")"
	}
	return msg
}

func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Status is the JSON body of a gate's answer that is not a point: 202
// (pending) or 403 (denied).
type Status struct {
	Status string `json:"status"` // "pending" or "denied"
	// Code is the request's approval code; in a committed session it is
	// empty until the host revealed its nonce (see Exchange).
	Code string `json:"code"`
	// Nonce is the gate's nonce (base64url, 32 bytes) of a committed
	// session, once all its keys arrived.
	Nonce    string    `json:"nonce,omitempty"`
	Host     string    `json:"host,omitempty"`
	Keys     int       `json:"keys,omitempty"`    // keys announced for the session
	Arrived  int       `json:"arrived,omitempty"` // keys the gate has seen
	Expires  time.Time `json:"expires,omitzero"`  // when a pending request lapses
	Operator string    `json:"operator,omitempty"`
	Time     time.Time `json:"time,omitzero"` // when it was decided
}

// ApprovalGroup is what one start-up sends one gate: its recoveries
// there, approved by one operator decision. On the wire it is the gate's
// "session" (HeaderSession and the fields that go with it).
type ApprovalGroup struct {
	ID   string // random, from NewSessionID
	Host string // a label for the operator, e.g. the host name
	Keys int    // how many recoveries go to this gate in this group
	// Exchange is the host's side of the session's code exchange at this
	// gate, over all Keys points; nil with one key makes one over it.
	Exchange *Exchange
}

// NewSessionID returns a fresh random session id.
func NewSessionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return b64.EncodeToString(b)
}

// Domains separate the protocol's hashes from any other use of SHA-256.
const (
	codeDomain   = "sealgate approval code v1\n"
	commitDomain = "sealgate commit v2\n"
	code2Domain  = "sealgate approval code v2\n"
)

// NonceSize is the size of the host's and the gate's nonces.
const NonceSize = 32

// ApprovalCode is the identifier of a request no code exchange covers (a
// stock clevis client, a session without a commitment): the first 40 bits
// of SHA-256 over the blinded points, sorted and each prefixed with its
// 2-byte length, in base32 as XXXX-XXXX. Points are the uncompressed
// encodings (Blind.Point). No host shows it: a man in the middle who knows
// its blinding can grind a point to any such code offline, so an operator
// has nothing to compare for these requests (docs/approval.md, "Codes").
func ApprovalCode(points ...[]byte) string {
	h := sha256.New()
	h.Write([]byte(codeDomain))
	writePoints(h, points)
	return formatCode(h.Sum(nil))
}

func writePoints(h hash.Hash, points [][]byte) {
	sorted := slices.Clone(points)
	slices.SortFunc(sorted, bytes.Compare)
	for _, p := range sorted {
		h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(p))))
		h.Write(p)
	}
}

func formatCode(sum []byte) string {
	s := base32.StdEncoding.EncodeToString(sum[:5])
	return s[:4] + "-" + s[4:]
}

// Commitment is the host's commitment to its nonce nh and the session's
// points at one gate: SHA-256("sealgate commit v2\n" ‖ nh ‖ for each
// point, sorted bytewise: len16 ‖ point).
func Commitment(nh []byte, points ...[]byte) []byte {
	h := sha256.New()
	h.Write([]byte(commitDomain))
	h.Write(nh)
	writePoints(h, points)
	return h.Sum(nil)
}

// SessionCode is the approval code of a committed session, which host
// and gate compute alike once each has both nonces: the first 40 bits of
// SHA-256("sealgate approval code v2\n" ‖ nh ‖ ng ‖ commitment) in
// base32 as XXXX-XXXX. The gate fixes its side (the commitment it
// received) before it draws ng, and the host reveals nh only after it
// got ng, so nobody can steer both codes to one value: a man in the
// middle matches them with probability 2^-40 per attempt.
func SessionCode(nh, ng, commitment []byte) string {
	h := sha256.New()
	h.Write([]byte(code2Domain))
	h.Write(nh)
	h.Write(ng)
	h.Write(commitment)
	return formatCode(h.Sum(nil))
}

// Exchange is the host's side of a committed session at one gate: a
// random nonce and its commitment over the session's points there. The
// same Exchange serves every recovery and every retry of the session, so
// its code stays stable.
type Exchange struct {
	nonce  []byte
	commit []byte
}

// NewExchange draws the host's nonce and commits to it and the points.
func NewExchange(points ...[]byte) *Exchange {
	nh := make([]byte, NonceSize)
	rand.Read(nh)
	return &Exchange{nonce: nh, commit: Commitment(nh, points...)}
}

// Commitment is the value of the Sealgate-Commit header.
func (x *Exchange) Commitment() string { return b64.EncodeToString(x.commit) }

// Reveal is the value of the Sealgate-Reveal header: the nonce. Send it
// only after the gate's nonce arrived.
func (x *Exchange) Reveal() string { return b64.EncodeToString(x.nonce) }

// Code is the session's code once the gate's nonce ng is known.
func (x *Exchange) Code(ng []byte) string { return SessionCode(x.nonce, ng, x.commit) }

// DecodeNonce decodes a nonce or a commitment as sent in a header or a
// Status: base64url without padding, exactly NonceSize bytes.
func DecodeNonce(s string) ([]byte, error) {
	b, err := b64.DecodeString(s)
	if err != nil || len(b) != NonceSize {
		return nil, fmt.Errorf("want %d bytes in base64url", NonceSize)
	}
	return b, nil
}

// IsCode reports whether s is an approval code exactly as the protocol
// writes it: XXXX-XXXX in A-Z and 2-7. Anything else from a gate is a
// protocol error and never shown.
func IsCode(s string) bool {
	if len(s) != 9 || s[4] != '-' {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if i != 4 && !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Printable returns s as it is if every rune prints on a terminal, and
// quoted with escapes otherwise. Text from a gate or a JWE (a host's
// name, an operator, a URL, an error) goes through it before it reaches
// a terminal, a log line or an sd_notify message, so it cannot carry
// control sequences, line breaks or bidirectional overrides there. Bytes
// that are not UTF-8 are escaped too (a lone 0x9b is CSI to a terminal
// in 8-bit mode).
func Printable(s string) string {
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// NormalizeCode accepts a code as people type it (any case, with or
// without the dash or spaces) and returns it as XXXX-XXXX.
func NormalizeCode(code string) (string, error) {
	c := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(code))
	if len(c) != 8 {
		return "", fmt.Errorf("code %q: want 8 characters, as XXXX-XXXX", code)
	}
	if _, err := base32.StdEncoding.DecodeString(c); err != nil {
		return "", fmt.Errorf("code %q: only letters A-Z and digits 2-7", code)
	}
	return c[:4] + "-" + c[4:], nil
}

// Pending is what a client reports while a gate holds its recovery: the
// session's code, which the gate confirmed (a gate that shows another
// code stops the recovery with ErrCodeMismatch).
type Pending struct {
	URL     string
	Kid     string
	Code    string
	Keys    int
	Arrived int
}
