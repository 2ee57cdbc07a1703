// Package unlock seals secrets into Clevis-compatible JWEs and recovers
// them: the tang pin (McCallum-Relyea exchange with a Tang server) and the
// sss pin (t-of-n Shamir sharing over child pins, nested at will).
//
// A JWE made here opens with `clevis decrypt` and the reverse; recovered
// plaintext is handed over in locked memory (a memguard.LockedBuffer) and
// every intermediate secret is wiped.
package unlock
