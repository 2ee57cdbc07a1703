package unlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/awnumar/memguard"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/sealproxy/sealproxy/internal/secmem"
	"github.com/sealproxy/sealproxy/unlock/tang"
)

// ErrBadConfig reports a pin configuration that cannot be used.
var ErrBadConfig = errors.New("bad pin configuration")

// A pin is one kind of clevis binding. Like age's Recipient and Identity it
// has a seal-time half (bind) and an unlock-time half (keyAgreement); plan
// and inspect read a JWE of the pin without opening it. A pin is a type in
// its own file, listed by name in pins.
type pin interface {
	// bind makes a binding from the pin's clevis configuration: the
	// protected header, with the pin's clevis node, and the content key.
	// The caller wipes the key.
	bind(ctx context.Context, config []byte, opts *Options) (*header, []byte, error)
	// keyAgreement is the step that gets j's content key back, in
	// go-jose's terms: DecryptKey is given the header go-jose parsed and
	// returns the content key, which the caller wipes. Its errors are
	// the pin's own (ErrMalformed, ErrNotEnoughShares, *tang.Error, ...).
	keyAgreement(ctx context.Context, j *jwe, r recovery) jose.OpaqueKeyDecrypter
	// plan adds j's recoveries to an approval plan before any is sent.
	// A JWE it cannot use is skipped: the recovery reports it.
	plan(p *recoveryPlan, j *jwe)
	// inspect describes j without contacting any server; describe writes
	// such a Node as lines of text, escaped.
	inspect(j *jwe) (*Node, error)
	describe(n *Node) []string
}

// pins are the clevis pins this build implements, by name, in the order
// messages list them.
var pins = []struct {
	name string
	pin  pin
}{
	{"tang", tangPin{}},
	{"sss", sssPin{}},
}

// lookup returns the pin registered as name.
func lookup(name string) (pin, bool) {
	for _, p := range pins {
		if p.name == name {
			return p.pin, true
		}
	}
	return nil, false
}

// pinNames lists the registered pins as "a, b or c" (conj "or") or
// "a, b and c".
func pinNames(conj string) string {
	names := make([]string, len(pins))
	for i, p := range pins {
		names[i] = p.name
	}
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " " + conj + " " + names[len(names)-1]
}

// recovery is what a key agreement needs besides the JWE: the caller's
// options and, under an approval, the plan of the whole start-up.
type recovery struct {
	opts *Options
	plan *recoveryPlan // nil without an approval
}

// Options are the choices shared by Encrypt and Decrypt.
type Options struct {
	// Tang is the client for Tang servers; nil means a zero tang.Client.
	Tang *tang.Client
	// TrustOnFirstUse lets Encrypt trust an advertisement fetched without a
	// pinned thumbprint (seal -y). Without it, a tang config needs "thp"
	// or an "adv" the user supplied.
	TrustOnFirstUse bool
	// Startup, when set, makes the recoveries of one Decrypt one approval
	// group at each gate they go to: one operator decision per gate
	// approves all of them. Nil makes each recovery a group of its own
	// (one decision each); either way the code is the committed exchange's.
	Startup *Startup
	// OnPending is told when a gate holds a recovery for approval, with
	// the code to show, once the gate confirmed it (once per gate in a
	// group); nil ignores it.
	OnPending func(tang.Pending)
}

func (o *Options) tang() *tang.Client {
	if o == nil || o.Tang == nil {
		return &tang.Client{}
	}
	return o.Tang
}

// Encrypt seals plaintext with the named pin ("tang" or "sss") and its JSON
// configuration, the same configuration clevis takes. The result is a
// compact JWE without a trailing newline.
func Encrypt(ctx context.Context, pin string, config []byte, plaintext []byte, opts *Options) ([]byte, error) {
	p, ok := lookup(pin)
	if !ok {
		return nil, fmt.Errorf("%w %q: choose %s", ErrUnknownPin, pin, pinNames("or"))
	}
	hdr, cek, err := p.bind(ctx, config, opts)
	if err != nil {
		return nil, err
	}
	defer secmem.Bytes(cek)
	return sealContent(hdr, cek, plaintext)
}

// Decrypt recovers the plaintext of a Clevis JWE into locked memory. The
// caller destroys the buffer (or seals it into an enclave). On failure
// nothing is returned.
func Decrypt(ctx context.Context, data []byte, opts *Options) (*memguard.LockedBuffer, error) {
	var plan *recoveryPlan
	if opts != nil && opts.Startup != nil {
		if plan = opts.Startup.current(); plan == nil {
			plan = newRecoveryPlan(opts.Startup.ID, opts.Startup.Host, data)
			defer plan.wipe()
		}
	}
	return decrypt(ctx, data, recovery{opts, plan})
}

func decrypt(ctx context.Context, data []byte, r recovery) (*memguard.LockedBuffer, error) {
	j, err := parseJWE(data)
	if err != nil {
		return nil, err
	}
	cek, err := recoverCEK(ctx, j, r)
	if err != nil {
		return nil, err
	}
	defer secmem.Bytes(cek)
	return openContent(j, cek)
}

// recoverCEK runs j's pin's key agreement. We call it ourselves rather
// than through go-jose's JSONWebEncryption.Decrypt, which would return the
// plaintext on the heap and replace the pin's error with a generic one.
func recoverCEK(ctx context.Context, j *jwe, r recovery) ([]byte, error) {
	p, ok := lookup(j.header.Clevis.Pin)
	if !ok {
		return nil, fmt.Errorf("%w %q: sealproxy opens %s", ErrUnknownPin, j.header.Clevis.Pin, pinNames("and"))
	}
	return p.keyAgreement(ctx, j, r).DecryptKey(nil, j.jose)
}

func decodeStrict(config []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(config))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// keyAgreementFunc adapts a function to jose.OpaqueKeyDecrypter.
type keyAgreementFunc func(encryptedKey []byte, h jose.Header) ([]byte, error)

func (f keyAgreementFunc) DecryptKey(encryptedKey []byte, h jose.Header) ([]byte, error) {
	return f(encryptedKey, h)
}
