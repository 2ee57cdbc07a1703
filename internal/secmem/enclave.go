package secmem

import (
	"errors"
	"fmt"

	"github.com/awnumar/memguard"
)

// An Enclave keeps a secret in a memguard Enclave and opens it into a
// fresh locked buffer for every use: the simplest way to hold a secret,
// and the slowest (each open maps, locks and protects pages, and each
// close unmaps them). The vault keeps it to measure the Box against.
type Enclave struct {
	e *memguard.Enclave
}

// NewEnclave moves secret into an Enclave and wipes secret.
func NewEnclave(secret []byte) (*Enclave, error) {
	e := memguard.NewEnclave(secret)
	if e == nil {
		return nil, errors.New("creating an enclave: empty secret")
	}
	return &Enclave{e: e}, nil
}

// Open runs f, inside Do, with the secret in a locked buffer that is
// destroyed when f returns, and reports the use (Used). f must not keep
// the secret.
func (c *Enclave) Open(f func(secret []byte) error) error {
	var err error
	Do(func() {
		var buf *memguard.LockedBuffer
		if buf, err = c.e.Open(); err != nil {
			err = fmt.Errorf("opening an enclave: %w", err)
			return
		}
		defer buf.Destroy()
		err = f(buf.Bytes())
	})
	Used()
	return err
}

// Destroy does nothing: memguard's enclave holds only ciphertext, and
// Purge wipes memguard's key.
func (c *Enclave) Destroy() {}
