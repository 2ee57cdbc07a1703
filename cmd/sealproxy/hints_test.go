package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/cmd/internal/cli"
	"github.com/sealproxy/sealproxy/vault"
	"github.com/sealproxy/sealproxy/vault/keyring"
)

// The hint after a failed start-up names the cause of the key that ended
// it, and only that cause: a PIN failure never gets a Tang hint, a Tang
// failure never a PIN hint, a token failure neither. The errors are
// wrapped as the vault and the key ring wrap them.
func TestStartErrorHintByCause(t *testing.T) {
	const (
		pin    = "check the PIN of the pkcs11: key"
		module = "check the module-path of the pkcs11: key"
		token  = "no token matches the pkcs11: key"
		object = "the token has no such key"
		tang   = "reaches the Tang servers"
		gate   = "approve the code"
		cert   = "cert must be the certificate of its source's key"
		denied = "an operator denied this start-up"
		ticket = "[tickets] source must be a secret made by 'seal ticket-secret"
	)
	all := []string{pin, module, token, object, tang, gate, cert, denied, ticket}
	ref := "pkcs11:token=t;object=web?module-path=/m.so&pin-source=sealed:pin.jwe"
	opening := func(err error) error { return fmt.Errorf("opening key %s: %w", ref, err) }
	abandoned := fmt.Errorf("not waited for: another key failed (last: %w)", keyring.ErrUnreachable)
	locked := func(errs ...error) error {
		ue := &keyring.UnlockError{}
		for i, err := range errs {
			ue.Locked = append(ue.Locked, keyring.KeyFailure{Key: fmt.Sprintf("k%d", i), Attempts: 1, Err: err})
		}
		return ue
	}
	cases := []struct {
		name string
		err  error
		want string // "" for no hint
	}{
		{"wrong PIN", locked(opening(fmt.Errorf("logging in: %w (CKR_PIN_INCORRECT)", vault.ErrPINRefused))), pin},
		{"wrong PIN, another key abandoned while Tang was down", locked(opening(vault.ErrPINRefused), abandoned), pin},
		{"wrong sealed PIN", locked(opening(fmt.Errorf("sealed PIN pin.jwe: %w: not one non-empty line", vault.ErrPINRefused))), pin},
		{"module", locked(opening(fmt.Errorf("%w: dlopen failed", vault.ErrModule))), module},
		{"token", locked(opening(fmt.Errorf("%w: no slot", vault.ErrTokenNotFound))), token},
		{"object", locked(opening(fmt.Errorf("%w: no private key", vault.ErrObjectNotFound))), object},
		{"file certificate of another key", locked(opening(fmt.Errorf("%w: key and certificate", vault.ErrKeyMismatch))), cert},
		{"Tang unreachable", locked(fmt.Errorf("recovering sealed key sealed:web.jwe: %w", keyring.ErrUnreachable)), tang},
		{"sealed PIN's Tang unreachable", locked(opening(fmt.Errorf("recovering sealed PIN pin.jwe: %w", keyring.ErrUnreachable))), tang},
		{"timeout waiting at a gate", &keyring.UnlockError{After: time.Second, Locked: []keyring.KeyFailure{{Key: "web", Err: context.DeadlineExceeded}}}, gate},
		{"sealed PIN denied", locked(opening(fmt.Errorf("recovering sealed PIN pin.jwe: %w", keyring.ErrDenied))), denied},
		{"a sealed key as the ticket secret", locked(fmt.Errorf("ticket secret sealed:t.jwe: %w: 227 bytes, want 32", vault.ErrNotTicketSecret)), ticket},
		{"damaged JWE", locked(errors.New("recovering sealed key sealed:web.jwe: not a JWE")), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, hints, code := cli.Explain("sealproxy", startError(c.err))
			text := strings.Join(hints, "\n")
			if c.want == "" {
				if text != "" {
					t.Errorf("a hint for an unknown cause: %s", text)
				}
				return
			}
			if code != exitUnlock && code != cli.ExitDenied {
				t.Errorf("exit code %d", code)
			}
			if !strings.Contains(text, c.want) {
				t.Errorf("hint %q does not contain %q", text, c.want)
			}
			for _, other := range all {
				if other != c.want && strings.Contains(text, other) {
					t.Errorf("hint %q also names another cause (%q)", text, other)
				}
			}
		})
	}
}
