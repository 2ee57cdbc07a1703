package vault

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"testing"
	"time"
)

// benchSigners returns, for a test key, the plain in-heap key and the same
// key in each custody.
func benchSigners(b *testing.B, tk testKey) []struct {
	name string
	s    crypto.Signer
} {
	out := []struct {
		name string
		s    crypto.Signer
	}{{"plain", tk.signer}}
	for _, m := range modes {
		k, err := newSealedKey("sealed:bench", bytes.Clone(tk.pems["PKCS8"]), m.mode)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { k.Close() })
		out = append(out, struct {
			name string
			s    crypto.Signer
		}{m.name, k.asKey()})
	}
	return out
}

// BenchmarkSign: one signature, plain key vs the two custodies.
//
//	go test ./vault -run '^$' -bench '^BenchmarkSign$' -benchmem
func BenchmarkSign(b *testing.B) {
	for _, tk := range testKeys(b) {
		if tk.name == "P-521" {
			continue
		}
		for _, s := range benchSigners(b, tk) {
			b.Run(tk.name+"/"+s.name, func(b *testing.B) {
				msg := []byte("the handshake transcript")
				cpu0 := cpuTime()
				for b.Loop() {
					if _, err := signMsg(s.s, msg); err != nil {
						b.Fatal(err)
					}
				}
				if d := cpuTime() - cpu0; d > 0 {
					b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}

// BenchmarkHandshake: a full TLS 1.3 handshake (no resumption), client and
// server in this process over net.Pipe, with an ECDSA P-256 key that is
// plain or in custody. ns/op is both sides' CPU, since net.Pipe is
// synchronous.
//
//	go test ./vault -run '^$' -bench '^BenchmarkHandshake$' -cpu 1
func BenchmarkHandshake(b *testing.B) {
	tk := testKeys(b)[0]
	for _, s := range benchSigners(b, tk) {
		b.Run(s.name, func(b *testing.B) {
			cert, pool := selfSigned(b, tk.signer)
			cert.PrivateKey = s.s
			srv := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
			cli := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
			cpu0 := cpuTime()
			for b.Loop() {
				if err := handshake(srv, cli); err != nil {
					b.Fatal(err)
				}
			}
			if d := cpuTime() - cpu0; d > 0 {
				b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// BenchmarkHandshakeRatio alternates batches of handshakes with the plain
// and the custody key (so that load from other processes hits both alike)
// and reports the process CPU time per handshake of each and their ratio.
//
//	go test ./vault -run '^$' -bench '^BenchmarkHandshakeRatio$' -cpu 1 -benchtime 20x
func BenchmarkHandshakeRatio(b *testing.B) {
	const batch = 100
	tk := testKeys(b)[0]
	signers := benchSigners(b, tk)
	confs := make([]*tls.Config, len(signers))
	var cli *tls.Config
	for i, s := range signers {
		cert, pool := selfSigned(b, tk.signer)
		cert.PrivateKey = s.s
		confs[i] = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, SessionTicketsDisabled: true}
		if cli == nil {
			cli = &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
		}
		cli.RootCAs.AddCert(cert.Leaf)
	}
	cpu := make([]time.Duration, len(signers))
	for b.Loop() {
		for i := range signers {
			t0 := cpuTime()
			for range batch {
				if err := handshake(confs[i], cli); err != nil {
					b.Fatal(err)
				}
			}
			cpu[i] += cpuTime() - t0
		}
	}
	if cpu[0] == 0 {
		return
	}
	n := float64(b.N * batch)
	for i, s := range signers {
		b.ReportMetric(float64(cpu[i].Nanoseconds())/n, s.name+"-cpu-ns/hs")
		if i > 0 {
			b.ReportMetric(float64(cpu[i])/float64(cpu[0]), s.name+"/plain")
		}
	}
}

// BenchmarkSignParallel: P-256 signatures from many goroutines, bounded by
// the scratch pool.
//
//	go test ./vault -run '^$' -bench '^BenchmarkSignParallel$'
func BenchmarkSignParallel(b *testing.B) {
	tk := testKeys(b)[0]
	for _, s := range benchSigners(b, tk) {
		b.Run(s.name, func(b *testing.B) {
			msg := []byte("the handshake transcript")
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := signMsg(s.s, msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
