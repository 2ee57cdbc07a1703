package gate

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"time"

	"github.com/sealproxy/sealproxy/internal/atomicfile"
)

// OperatorsFile is the name of the operator list in a key directory.
// tangd reads only *.jwk files, so it ignores it.
const OperatorsFile = "operators.json"

// tokenPrefix marks sealgate operator tokens, so a leaked one is
// recognisable (and greppable) for what it is.
const tokenPrefix = "sgt_"

var (
	// ErrOperatorExists reports adding a name that is already listed.
	ErrOperatorExists = errors.New("operator already exists")
	// ErrNoOperator reports removing a name that is not listed.
	ErrNoOperator = errors.New("no such operator")
	// ErrBadOperatorName reports a name that is not 1-64 of A-Z a-z 0-9 . _ -
	ErrBadOperatorName = errors.New("operator names are 1 to 64 letters, digits, '.', '_' or '-'")
)

var operatorName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Operators is the operator list of a gate: names and the SHA-256 of each
// one's token. The token itself is shown once, when it is made, and
// stored nowhere.
type Operators struct {
	path string
}

type operatorFile struct {
	Operators []operatorEntry `json:"operators"`
}

type operatorEntry struct {
	Name        string    `json:"name"`
	TokenSHA256 string    `json:"token_sha256"`
	Role        Role      `json:"role,omitempty"` // empty: RoleOperator
	Added       time.Time `json:"added"`
}

// Role is what a listed credential may do.
type Role string

const (
	// RoleOperator lists, approves and denies requests, and reads metrics.
	RoleOperator Role = "operator"
	// RoleMetrics reads GET /gate/metrics only: a scraper's credential
	// that cannot decide anything.
	RoleMetrics Role = "metrics"
)

// ErrBadRole reports a role that is neither operator nor metrics.
var ErrBadRole = errors.New(`roles are "operator" and "metrics"`)

// role is e's role; an entry without one is an operator (files written
// before roles existed), and one this version does not know may do
// nothing.
func (e *operatorEntry) role() Role {
	switch e.Role {
	case "", RoleOperator:
		return RoleOperator
	case RoleMetrics:
		return RoleMetrics
	}
	return ""
}

// OpenOperators returns the operator list at path (OperatorsFile in a key
// directory). A missing file is an empty list. The file is read on every
// check, so adding or removing an operator takes effect at once.
func OpenOperators(path string) *Operators { return &Operators{path: path} }

// Path is the file the list lives in.
func (o *Operators) Path() string { return o.path }

func (o *Operators) read() (*operatorFile, error) {
	var f operatorFile
	data, err := os.ReadFile(o.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading operators: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("operators file %s: %w", o.path, err)
	}
	return &f, nil
}

func (o *Operators) write(f *operatorFile) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(o.path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing operators: %w", err)
	}
	return nil
}

// Add lists a new operator and returns its token, which is not stored.
func (o *Operators) Add(name string) (string, error) { return o.AddRole(name, RoleOperator) }

// AddRole lists a new credential with role and returns its token, which
// is not stored.
func (o *Operators) AddRole(name string, role Role) (string, error) {
	if !operatorName.MatchString(name) {
		return "", fmt.Errorf("%w: %q", ErrBadOperatorName, name)
	}
	if role != RoleOperator && role != RoleMetrics {
		return "", fmt.Errorf("%w, not %q", ErrBadRole, role)
	}
	f, err := o.read()
	if err != nil {
		return "", err
	}
	if slices.ContainsFunc(f.Operators, func(e operatorEntry) bool { return e.Name == name }) {
		return "", fmt.Errorf("%w: %s", ErrOperatorExists, name)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	e := operatorEntry{Name: name, TokenSHA256: tokenHash(token), Added: time.Now().UTC().Truncate(time.Second)}
	if role != RoleOperator {
		e.Role = role
	}
	f.Operators = append(f.Operators, e)
	if err := o.write(f); err != nil {
		return "", err
	}
	return token, nil
}

// Remove deletes an operator; its token stops working at once.
func (o *Operators) Remove(name string) error {
	f, err := o.read()
	if err != nil {
		return err
	}
	n := len(f.Operators)
	f.Operators = slices.DeleteFunc(f.Operators, func(e operatorEntry) bool { return e.Name == name })
	if len(f.Operators) == n {
		return fmt.Errorf("%w: %s", ErrNoOperator, name)
	}
	return o.write(f)
}

// Names lists the operators.
func (o *Operators) Names() ([]string, error) {
	f, err := o.read()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range f.Operators {
		names = append(names, e.Name)
	}
	return names, nil
}

// Roles maps each listed name to its role (empty for a role this version
// does not know).
func (o *Operators) Roles() (map[string]Role, error) {
	f, err := o.read()
	if err != nil {
		return nil, err
	}
	out := map[string]Role{}
	for _, e := range f.Operators {
		out[e.Name] = e.role()
	}
	return out, nil
}

// Has reports whether name is listed (with any role).
func (o *Operators) Has(name string) bool {
	if o == nil || name == "" {
		return false
	}
	names, err := o.Names()
	return err == nil && slices.Contains(names, name)
}

// RoleOf returns the role of the listed name; false if it is not listed.
func (o *Operators) RoleOf(name string) (Role, bool) {
	if o == nil || name == "" {
		return "", false
	}
	roles, err := o.Roles()
	if err != nil {
		return "", false
	}
	role, ok := roles[name]
	return role, ok
}

// Authenticate returns the name of the operator whose token this is. It
// compares hashes in constant time and checks every entry.
func (o *Operators) Authenticate(token string) (string, bool) {
	name, _, ok := o.Identify(token)
	return name, ok
}

// Identify is Authenticate that also returns the credential's role.
func (o *Operators) Identify(token string) (string, Role, bool) {
	if o == nil || token == "" {
		return "", "", false
	}
	f, err := o.read()
	if err != nil {
		return "", "", false
	}
	got := sha256.Sum256([]byte(token))
	name, role, found := "", Role(""), 0
	for _, e := range f.Operators {
		want, err := hex.DecodeString(e.TokenSHA256)
		if err != nil || len(want) != sha256.Size {
			continue
		}
		if subtle.ConstantTimeCompare(got[:], want) == 1 {
			name, role, found = e.Name, e.role(), found+1
		}
	}
	return name, role, found == 1
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}
