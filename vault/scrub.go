package vault

import "github.com/sealproxy/sealproxy/internal/secmem"

// Parsing and using a key leaves copies in freed heap memory (crypto/ecdsa
// and crypto/rsa derive their own forms of the key; math/big allocates).
// With GOEXPERIMENT=runtimesecret, secmem.Do marks those allocations to be
// erased when the garbage collector frees them, but a quiet proxy may not
// collect for minutes. Sealed keys report each use to secmem's scrubber,
// which collects shortly after signing goes idle, so that erasure actually
// happens.

// Scrub forces the collections now (see secmem.Scrub); a daemon calls it
// after start-up.
func Scrub() { secmem.Scrub() }

// Scrubs returns the number of idle scrubs so far and a channel closed at
// the next one.
func Scrubs() (uint64, <-chan struct{}) { return secmem.Scrubs() }
