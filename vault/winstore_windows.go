//go:build windows

package vault

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unsafe"

	"github.com/google/certtostore"
	"golang.org/x/sys/windows"

	"github.com/sealproxy/sealproxy/vault/keyref"
)

func init() { register(keyref.SchemeWinstore, openWinstore) }

// openWinstore finds the certificate the reference selects in a system
// store and acquires its CNG private key, which stays in the key storage
// provider (a non-exportable key never enters this process). The store
// and certificate context stay open while the key is in use.
func openWinstore(ctx context.Context, r keyref.Ref, opts *Options) (Key, error) {
	q := r.Winstore()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening key %s: %w", q, err)
	}
	flags := uint32(windows.CERT_STORE_READONLY_FLAG | windows.CERT_STORE_OPEN_EXISTING_FLAG)
	if q.Location == "CurrentUser" {
		flags |= windows.CERT_SYSTEM_STORE_CURRENT_USER
	} else {
		flags |= windows.CERT_SYSTEM_STORE_LOCAL_MACHINE
	}
	name, err := windows.UTF16PtrFromString(q.Store)
	if err != nil {
		return nil, fmt.Errorf("%w: winstore store name: %v", ErrBadRef, err)
	}
	store, err := windows.CertOpenStore(windows.CERT_STORE_PROV_SYSTEM_W, 0, 0, flags, uintptr(unsafe.Pointer(name)))
	if err != nil {
		return nil, fmt.Errorf("opening key %s: opening the certificate store: %w", q, err)
	}
	k := &winKey{name: q.String(), store: store}
	fail := func(err error) (Key, error) {
		k.Close()
		return nil, fmt.Errorf("opening key %s: %w", q, err)
	}

	var (
		certs    []*x509.Certificate
		contexts []*windows.CertContext
	)
	defer func() {
		for _, c := range contexts {
			windows.CertFreeCertificateContext(c)
		}
	}()
	var prev *windows.CertContext
	for {
		c, err := windows.CertEnumCertificatesInStore(store, prev)
		if err != nil {
			break // CRYPT_E_NOT_FOUND ends the enumeration
		}
		prev = c
		der := unsafe.Slice(c.EncodedCert, c.Length)
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			continue // not ours to judge; skip what does not parse
		}
		certs = append(certs, cert)
		contexts = append(contexts, windows.CertDuplicateCertificateContext(c))
	}
	i, err := q.Select(certs, time.Now())
	if err != nil {
		return fail(err)
	}
	k.cert = certs[i]
	k.certCtx = contexts[i]
	contexts[i] = nil // kept, freed by Close
	contexts = append(contexts[:i], contexts[i+1:]...)

	wcs, err := certtostore.OpenWinCertStoreWithOptions(certtostore.WinCertStoreOptions{
		Provider:    certtostore.ProviderMSSoftware,
		CurrentUser: q.Location == "CurrentUser",
	})
	if err != nil {
		return fail(err)
	}
	k.wcs = wcs
	key, err := wcs.CertKey(k.certCtx)
	if err == nil && key == nil {
		err = errors.New("the certificate has no private key")
	}
	if err != nil {
		return fail(fmt.Errorf("acquiring the certificate's private key: %w", err))
	}
	k.key = key
	if err := CheckCertificate(k, k.cert); err != nil {
		return fail(err)
	}
	if _, ok := key.Public().(*rsa.PublicKey); ok {
		return winRSAKey{k}, nil
	}
	return k, nil
}

// winKey is a CNG key of a certificate in the Windows store.
type winKey struct {
	name    string
	store   windows.Handle
	certCtx *windows.CertContext
	cert    *x509.Certificate
	wcs     *certtostore.WinCertStore
	key     *certtostore.Key
	once    sync.Once
}

func (k *winKey) String() string { return k.name }

func (k *winKey) Public() crypto.PublicKey { return k.key.Public() }

// Certificate is the selected certificate.
func (k *winKey) Certificate() *x509.Certificate { return k.cert }

func (k *winKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := k.key.Sign(rand, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("signing with key %s: %w", k.name, err)
	}
	return sig, nil
}

func (k *winKey) Close() error {
	var err error
	k.once.Do(func() {
		if k.wcs != nil {
			err = k.wcs.Close()
		}
		if k.certCtx != nil {
			err = errors.Join(err, windows.CertFreeCertificateContext(k.certCtx))
		}
		err = errors.Join(err, windows.CertCloseStore(k.store, 0))
	})
	return err
}

// winRSAKey adds crypto.Decrypter for RSA keys (TLS 1.2 RSA key exchange).
type winRSAKey struct{ *winKey }

func (k winRSAKey) Decrypt(rand io.Reader, ciphertext []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	pt, err := k.key.Decrypt(rand, ciphertext, opts)
	if err != nil {
		return nil, fmt.Errorf("decrypting with key %s: %w", k.name, err)
	}
	return pt, nil
}
