package secmem

// Wiping: byte slices we own, big integers, and (with
// GOEXPERIMENT=runtimesecret, see Do) the registers, stack and heap
// allocations of a function that handled a secret.

import (
	"math/big"
	"runtime"
)

// Bytes overwrites b with zeros. The KeepAlive stops the compiler from
// treating the stores as dead because b is not read afterwards.
func Bytes(b []byte) {
	clear(b)
	runtime.KeepAlive(b)
}

// All wipes every slice it is given.
func All(bs ...[]byte) {
	for _, b := range bs {
		Bytes(b)
	}
}

// BigInt overwrites the words of x and sets it to zero. Intermediate values
// math/big allocated while computing x are out of reach; run such code inside
// Do to have them erased too.
func BigInt(x *big.Int) {
	if x == nil {
		return
	}
	words := x.Bits()
	clear(words)
	runtime.KeepAlive(words)
	x.SetInt64(0)
}
