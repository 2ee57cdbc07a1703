package proxy

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"slices"
	"testing"
	"time"

	"github.com/sealproxy/sealproxy/testenv"
)

// FuzzParseCRLs feeds CRL files and cache files (PEM or DER, as the
// network or the disk may hand them over) to the parser: it must never
// panic, and whatever it accepts must be signed by the CA it names.
func FuzzParseCRLs(f *testing.F) {
	ca := testenv.NewCA(f, "fuzz CA")
	other := testenv.NewCA(f, "fuzz CA") // same name, other key
	leaf := ca.Client(f, "bob")
	good := ca.CRL(f, leaf.Cert)
	block, _ := pem.Decode(good)
	f.Add(good)
	f.Add(block.Bytes)
	f.Add(append(slices.Clone(good), other.CRL(f)...))
	f.Add(other.CRL(f))
	f.Add([]byte("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n"))
	issuers := []*x509.Certificate{ca.Cert}
	f.Fuzz(func(t *testing.T, data []byte) {
		lists, err := parseCRLs("fuzz", data, issuers)
		if err != nil {
			return
		}
		for _, l := range lists {
			crl, err := x509.ParseRevocationList(l.der)
			if err != nil {
				t.Fatalf("accepted a CRL that does not parse again: %v", err)
			}
			if !bytes.Equal(crl.RawIssuer, ca.Cert.RawSubject) || crl.CheckSignatureFrom(ca.Cert) != nil {
				t.Fatal("accepted a CRL not signed by the CA")
			}
			for _, e := range crl.RevokedCertificateEntries {
				if _, ok := l.revoked[string(e.SerialNumber.Bytes())]; !ok {
					t.Fatalf("revoked serial %v was dropped", e.SerialNumber)
				}
			}
		}
	})
}

// FuzzCheckOCSPResponse feeds responder answers to the client OCSP and
// stapler check: never a panic, and nothing accepted unless the CA or a
// responder it delegated to signed it.
func FuzzCheckOCSPResponse(f *testing.F) {
	ca := testenv.NewCA(f, "fuzz CA")
	leaf := ca.Client(f, "carol")
	f.Add(ca.OCSPResponse(f, leaf.Cert, false))
	f.Add(ca.OCSPResponse(f, leaf.Cert, true))
	f.Add(testenv.NewCA(f, "fuzz CA").OCSPResponse(f, leaf.Cert, false))
	f.Add([]byte{0x30, 0x03, 0x0a, 0x01, 0x01}) // malformedRequest
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := checkOCSPResponse(data, leaf.Cert, ca.Cert, now)
		if err != nil {
			return
		}
		signer := ca.Cert
		if r.Certificate != nil && !bytes.Equal(r.Certificate.Raw, ca.Cert.Raw) {
			if !slices.Contains(r.Certificate.ExtKeyUsage, x509.ExtKeyUsageOCSPSigning) {
				t.Fatal("accepted a response from a certificate without id-kp-OCSPSigning")
			}
			signer = r.Certificate
		}
		if err := r.CheckSignatureFrom(signer); err != nil {
			t.Fatalf("accepted a response whose signature does not verify: %v", err)
		}
		if r.SerialNumber.Cmp(leaf.Cert.SerialNumber) != 0 {
			t.Fatal("accepted a response about another certificate")
		}
	})
}
