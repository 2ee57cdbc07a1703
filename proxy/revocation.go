package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// errClientRevoked reports a client certificate listed in a CRL.
var errClientRevoked = errors.New("client certificate revoked")

// Revocations is the set of certificates revoked by CRLs whose signatures
// were checked against their issuing CAs. Reloading the configuration
// re-reads the CRL files.
type Revocations struct {
	revoked map[string]struct{} // issuer subject DER + serial bytes
}

func revocationKey(issuerSubject []byte, serial []byte) string {
	return string(issuerSubject) + "\x00" + string(serial)
}

// LoadCRLs reads CRL files (PEM "X509 CRL" blocks or DER) issued by any
// of issuers.
func LoadCRLs(paths []string, issuers []*x509.Certificate) (*Revocations, error) {
	r := &Revocations{revoked: map[string]struct{}{}}
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading CRL: %w", err)
		}
		ders := [][]byte{data}
		if bytes.Contains(data, []byte("-----BEGIN")) {
			ders = nil
			for {
				var block *pem.Block
				block, data = pem.Decode(data)
				if block == nil {
					break
				}
				if block.Type == "X509 CRL" {
					ders = append(ders, block.Bytes)
				}
			}
			if len(ders) == 0 {
				return nil, fmt.Errorf("%s: no PEM X509 CRL block", path)
			}
		}
		for _, der := range ders {
			if err := r.add(path, der, issuers); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

func (r *Revocations) add(path string, der []byte, issuers []*x509.Certificate) error {
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, ca := range issuers {
		if !bytes.Equal(ca.RawSubject, crl.RawIssuer) || crl.CheckSignatureFrom(ca) != nil {
			continue
		}
		for _, e := range crl.RevokedCertificateEntries {
			r.revoked[revocationKey(crl.RawIssuer, e.SerialNumber.Bytes())] = struct{}{}
		}
		return nil
	}
	return fmt.Errorf("%s: the CRL is not signed by any CA of the client CA bundle", path)
}

// Revoked reports whether any certificate of a verified chain (leaf
// first) is revoked.
func (r *Revocations) Revoked(chain []*x509.Certificate) bool {
	if r == nil {
		return false
	}
	for _, c := range chain {
		if _, ok := r.revoked[revocationKey(c.RawIssuer, c.SerialNumber.Bytes())]; ok {
			return true
		}
	}
	return false
}

// verifyClient combines revocation and allow rules into a
// tls.Config.VerifyConnection (nil when there is nothing to check).
func verifyClient(rules *AllowRules, rev *Revocations) func(tls.ConnectionState) error {
	if rules.empty() && rev == nil {
		return nil
	}
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			// Under VerifyClientCertIfGiven a client may show none; rules
			// that name who may pass then refuse it (the configuration
			// already refuses "request" with rules).
			if !rules.empty() {
				return errClientDenied
			}
			return nil
		}
		for _, chain := range cs.VerifiedChains {
			if rev.Revoked(chain) {
				return errClientRevoked
			}
		}
		if !rules.Allowed(cs.PeerCertificates[0]) {
			return errClientDenied
		}
		return nil
	}
}
