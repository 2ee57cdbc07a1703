// Command soak is sealproxy's load, slow-client and hostile-input
// reliability suite. It runs the real `sealproxy run`, built from this
// checkout, with a key sealed to an in-process Tang server, in front of
// in-process backends on 127.0.0.1, and drives five scenarios against it:
// hold (many established connections), flood (a handshake flood beyond
// max_connections), silent (clients that never finish a handshake), slowread
// (clients that do not read a fast stream) and hostile (malformed input).
// Each checks correctness (zero errors, refusals counted, recovery to
// baseline, the process alive) and records the numbers. It needs Linux:
// it reads /proc. See README.md.
package main
