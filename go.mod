module github.com/sealproxy/sealproxy

go 1.26.0

require (
	filippo.io/nistec v0.0.4
	github.com/BurntSushi/toml v1.6.0
	github.com/awnumar/memguard v0.23.0
	github.com/rogpeppe/go-internal v1.16.0
	golang.org/x/crypto v0.41.0
	golang.org/x/sys v0.48.0
)

require (
	github.com/awnumar/memcall v0.4.0 // indirect
	golang.org/x/tools v0.26.0 // indirect
)
