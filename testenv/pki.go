package testenv

import (
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
)

// PKIOptions name the files and certificates WritePKI makes.
type PKIOptions struct {
	CAName     string // the CA's common name
	ServerName string // the server certificate's common name and DNS name
	File       string // the server certificate is written to DIR/FILE.crt
	// LeafOnly writes the server certificate alone to DIR/FILE.crt
	// instead of the chain (the bench, whose figures were taken so).
	LeafOnly bool
}

// PKI is a throw-away CA and one server certificate, valid for
// ServerName and 127.0.0.1, as the demo, the soak and the bench use them.
type PKI struct {
	CA       *CA
	Server   *Leaf
	CAFile   string // DIR/ca.crt
	CertFile string // DIR/FILE.crt: the chain, leaf first (or the leaf alone)
}

// WritePKI makes the CA and the server certificate and writes DIR/ca.crt
// and DIR/FILE.crt. It does not write the private key: the caller takes
// it from Server.MarshalKey and seals it (only the bench, which feeds
// other TLS terminators, writes it in the clear). It needs no
// *testing.T, so tools call it too.
func WritePKI(dir string, o PKIOptions) (*PKI, error) {
	if o.CAName == "" || o.ServerName == "" || o.File == "" {
		return nil, errors.New("testenv: WritePKI needs CAName, ServerName and File")
	}
	ca, err := GenerateCA(o.CAName)
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Sign(LeafOptions{CN: o.ServerName, DNS: []string{o.ServerName}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return nil, err
	}
	p := &PKI{CA: ca, Server: leaf, CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, o.File+".crt")}
	if err := os.WriteFile(p.CAFile, ca.PEM, 0o644); err != nil {
		return nil, err
	}
	cert := leaf.ChainPEM()
	if o.LeafOnly {
		cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Cert.Raw})
	}
	if err := os.WriteFile(p.CertFile, cert, 0o644); err != nil {
		return nil, err
	}
	return p, nil
}
