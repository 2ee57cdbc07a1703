package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// ReadLeaf returns the first certificate of a [[key]]'s cert file (its
// leaf): what the key ring checks a key against and what the control
// API lists.
func ReadLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}
