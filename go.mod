module github.com/sealproxy/sealproxy

go 1.26

require (
	filippo.io/nistec v0.0.4
	github.com/awnumar/memguard v0.23.0
)

require (
	github.com/awnumar/memcall v0.4.0 // indirect
	golang.org/x/crypto v0.41.0 // indirect
	golang.org/x/sys v0.36.0 // indirect
)
