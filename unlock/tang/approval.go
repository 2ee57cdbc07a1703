package tang

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
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
)

// DeniedError is a gate's refusal: who denied the recovery and when.
type DeniedError struct {
	Operator string
	At       time.Time
	Code     string
}

func (e *DeniedError) Error() string {
	msg := "recovery denied"
	if e.Operator != "" {
		msg += " by operator " + e.Operator
	}
	if !e.At.IsZero() {
		msg += " at " + e.At.UTC().Format("15:04 UTC")
	}
	if e.Code != "" {
		msg += " (code " + e.Code + ")"
	}
	return msg
}

func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Status is the JSON body of a gate's answer that is not a point: 202
// (pending) or 403 (denied).
type Status struct {
	Status   string    `json:"status"` // "pending" or "denied"
	Code     string    `json:"code"`
	Host     string    `json:"host,omitempty"`
	Keys     int       `json:"keys,omitempty"`    // keys announced for the session
	Arrived  int       `json:"arrived,omitempty"` // keys the gate has seen
	Expires  time.Time `json:"expires,omitzero"`  // when a pending request lapses
	Operator string    `json:"operator,omitempty"`
	Time     time.Time `json:"time,omitzero"` // when it was decided
}

// Session groups recoveries of one start-up for a gate: one decision
// approves them all.
type Session struct {
	ID   string // random, from NewSessionID
	Host string // a label for the operator, e.g. the host name
	Keys int    // how many recoveries go to this gate in this session
}

// NewSessionID returns a fresh random session id.
func NewSessionID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return b64.EncodeToString(b)
}

// codeDomain separates approval codes from any other use of SHA-256.
const codeDomain = "sealgate approval code v1\n"

// ApprovalCode is the code an operator compares between host and gate:
// the first 40 bits of SHA-256 over the blinded points, sorted and each
// prefixed with its 2-byte length, in base32 as XXXX-XXXX. Points are the
// uncompressed encodings (Blind.Point). A request without a session has
// one point; a session's code covers all of its points.
func ApprovalCode(points ...[]byte) string {
	sorted := slices.Clone(points)
	slices.SortFunc(sorted, bytes.Compare)
	h := sha256.New()
	h.Write([]byte(codeDomain))
	for _, p := range sorted {
		h.Write(binary.BigEndian.AppendUint16(nil, uint16(len(p))))
		h.Write(p)
	}
	s := base32.StdEncoding.EncodeToString(h.Sum(nil)[:5])
	return s[:4] + "-" + s[4:]
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

// Pending is what a client reports while a gate holds its recovery.
type Pending struct {
	URL     string
	Kid     string
	Code    string // computed here from our own points
	Gate    string // the code the gate reports; differs from Code only if someone else's point is in the session
	Keys    int
	Arrived int
}
